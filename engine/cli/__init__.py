"""`python -m engine ...`: the command line, mirroring the dashboard.

Runs started here appear in the dashboard and the other way round: both go through
the same workspace. Exit codes: 0 success, 1 the run failed or was cancelled,
2 bad input (with a one-line reason on stderr), 130 interrupted.

Each command group lives in its own module with a `register(subparsers)` that adds
its commands and sets `handler` on each; `main` only parses and maps errors to exit codes.
"""

from __future__ import annotations

import argparse
import logging
import sqlite3
import sys

from engine.cli import (compress, data, doctor, evaluate, explain, export, inspect, internal, relabel, runs, serve,
                        sweep, weights)
from engine.cli.common import UsageError
from engine.config import ConfigError
from engine.store import RunNotFound, Workspace

# The order of `--help`'s command list.
COMMAND_MODULES = (data, doctor, runs, weights, evaluate, inspect, relabel, export, compress, explain, sweep, serve,
                   internal)


def main(argv: list[str] | None = None) -> int:
    """Runs one command.

    Args:
        argv: the arguments after `python -m engine`; `None` reads `sys.argv`.

    Returns:
        The exit code: 0 success, 1 the run failed or was cancelled, 2 bad input
        (after `error: REASON` on stderr), 130 interrupted by Ctrl-C.
    """
    args = build_parser().parse_args(argv)
    if hasattr(args, "internal"):
        # Job processes log their progress to the job's log file, and record their own failures
        # (engine.jobs), so they get INFO logging and no mapping of errors to exit codes.
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        return args.internal(args)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        return args.handler(args, Workspace())
    except (UsageError, ConfigError, RunNotFound, ValueError, OSError, sqlite3.Error) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted (any submitted run keeps going; `cancel` stops it)", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser, with every command module's commands registered."""
    parser = argparse.ArgumentParser(prog="python -m engine", description="Aperture: train and inspect CNNs.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(subparsers)
    return parser
