"""`job` and `standby`: the hidden commands engine.jobs starts its worker processes with."""

from __future__ import annotations

import argparse

from engine import jobs


def register(subparsers) -> None:
    """Adds the hidden worker commands to the top-level parser's `subparsers`.

    They set `internal` rather than `handler`: `engine.cli.main` runs them without a
    Workspace of its own and without mapping their errors to exit codes.
    """
    p = subparsers.add_parser("job", help=argparse.SUPPRESS)
    p.add_argument("job_id")
    p.set_defaults(internal=cmd_job)
    p = subparsers.add_parser("standby", help=argparse.SUPPRESS)
    p.set_defaults(internal=cmd_standby)


def cmd_job(args) -> int:
    return jobs.run_job(args.job_id)


def cmd_standby(args) -> int:
    return jobs.run_standby()
