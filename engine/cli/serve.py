"""`serve`: the model server (TF Serving's REST API) over this workspace's runs; `monitor`: what it has answered."""

from __future__ import annotations

import argparse
import json

from engine.cli.common import UsageError, add_run_command
from engine.serve.batching import DEFAULT_MAX_BATCH, DEFAULT_WINDOW_MS
from engine.serve.models import RUN_CHOICES
from engine.serve.server import DEFAULT_HOST, DEFAULT_PORT, TOKEN_ENV, ServeSetupError
from engine.store import Workspace


def register(subparsers) -> None:
    """Adds `serve` and `monitor` to the top-level parser's `subparsers`."""
    p = subparsers.add_parser("serve", help="serve runs over HTTP with TensorFlow Serving's REST API",
                              description=f"Serves finished runs at http://HOST:PORT/v1/models/RUN (TF Serving's "
                                          f"REST API). Loopback by default; on any other address {TOKEN_ENV} must be "
                                          f"set and only published runs are served unless --runs all.")
    p.add_argument("--host", default=DEFAULT_HOST)
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument("--runs", choices=RUN_CHOICES, default=None,
                   help="which runs to serve (default: all on loopback, published elsewhere)")
    p.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH,
                   help=f"most images per server-side batch (default {DEFAULT_MAX_BATCH})")
    p.add_argument("--batch-window-ms", type=float, default=DEFAULT_WINDOW_MS,
                   help=f"how long a request waits for others to join its batch (default {DEFAULT_WINDOW_MS:g})")
    p.add_argument("--no-batching", action="store_true", help="run requests one at a time")
    p.add_argument("--body-timeout", type=float, default=None, metavar="SECONDS",
                   help="answer 400 when a request body stops arriving for this long (default 30)")
    p.add_argument("--exit-with-parent", action="store_true", help=argparse.SUPPRESS)  # the dashboard's child
    p.set_defaults(handler=cmd_serve)

    p = add_run_command(subparsers, "monitor", cmd_monitor,
                        "what the model server answered for a run: traffic, latency, drift, live accuracy")
    p.add_argument("--window", type=int, default=None, help="predictions per drift window (default: automatic)")
    p.add_argument("--json", action="store_true")


def cmd_serve(args, workspace: Workspace) -> int:
    from engine.serve.server import serve

    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port {args.port}: expected 0..65535")
    if args.body_timeout is not None and args.body_timeout <= 0:
        raise UsageError(f"--body-timeout {args.body_timeout:g}: must be more than 0 seconds")
    if args.max_batch < 1 or args.batch_window_ms < 0:
        raise UsageError("--max-batch must be at least 1 and --batch-window-ms at least 0")
    try:
        serve(workspace, host=args.host, port=args.port, runs=args.runs,
              max_batch=1 if args.no_batching else args.max_batch, window_ms=args.batch_window_ms,
              exit_with_parent=args.exit_with_parent, body_timeout_s=args.body_timeout)
    except ServeSetupError as error:
        raise UsageError(str(error)) from None
    except KeyboardInterrupt:
        pass
    return 0


def cmd_monitor(args, workspace: Workspace) -> int:
    from engine.serve.monitor import monitor_report, render_text

    run_id = workspace.resolve_run_id(args.run)
    if args.window is not None and args.window < 1:
        raise UsageError(f"--window {args.window}: at least 1")
    report = monitor_report(workspace, run_id, window=args.window)
    print(json.dumps(report, indent=2) if args.json else render_text(report))
    return 0
