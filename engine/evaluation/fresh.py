"""Moved to `engine.evaluation.job`; this name stays only until `engine.jobs.kinds` points there."""

from engine.evaluation.job import KIND  # noqa: F401
