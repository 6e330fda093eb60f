"""What several command modules share: the usage error, commands that take a run, the job progress line."""

from __future__ import annotations

import argparse
import sys
import time

from engine import jobs
from engine.store import Job, Workspace


class UsageError(Exception):
    """Bad command-line input; the message is shown as is."""


def follow(job: Job, workspace: Workspace) -> Job:
    """Waits for a job to end, drawing its progress on one stderr line.

    Args:
        job: the job as submitted.
        workspace: the workspace that holds it.

    Returns:
        The job as it ended.
    """
    while job.active:
        time.sleep(0.5)
        jobs.refresh(workspace)
        job = workspace.get_job(job.id)
        print(f"\r{job.progress:4.0%} {job.message[:60]:<60}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return job


def add_run_command(subparsers, name: str, handler, help: str) -> argparse.ArgumentParser:
    """Adds a command whose first argument is a run: its id, or a unique prefix or suffix of it.

    Args:
        subparsers: the top-level parser's subparsers.
        name: the command's name.
        handler: `handler(args, workspace) -> exit code`.
        help: the command's line in `--help`.

    Returns:
        The command's parser, for its further flags.
    """
    p = subparsers.add_parser(name, help=help)
    p.add_argument("run")
    p.set_defaults(handler=handler)
    return p
