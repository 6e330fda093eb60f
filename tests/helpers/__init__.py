"""Helpers shared by the test suites (files they write, tiny runs, job kinds for the queue's tests)."""
