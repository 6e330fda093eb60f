"""`export`: convert a completed run's model (as a job) and check each format's parity with Keras."""

from __future__ import annotations

import json
import sys

from engine import store
from engine.cli.common import add_run_command, follow
from engine.export.formats import FORMATS
from engine.export.report import DEFAULT_CALIBRATION_SIZE, DEFAULT_MAX_DROP
from engine.store import Workspace


def register(subparsers) -> None:
    """Adds `export` to the top-level parser's `subparsers`."""
    p = add_run_command(subparsers, "export", cmd_export,
                        help="export a completed run and check parity (runs as a job)")
    p.add_argument("--format", default="int8",
                   help=f"{'|'.join(FORMATS)}, or a comma list (default int8)")
    p.add_argument("--max-drop", type=float, default=DEFAULT_MAX_DROP,
                   help=f"accuracy points an export may lose (default {DEFAULT_MAX_DROP})")
    p.add_argument("--calibration-size", type=int, default=DEFAULT_CALIBRATION_SIZE,
                   help="training images for INT8 calibration")
    p.add_argument("--json", action="store_true", help="print JSON (one object per format)")


def cmd_export(args, workspace: Workspace) -> int:
    from engine import export

    run_id = workspace.resolve_run_id(args.run)
    formats = tuple(f.strip() for f in args.format.split(",") if f.strip())
    request = export.ExportRequest(formats=formats, max_drop=args.max_drop, calibration_size=args.calibration_size)
    job = export.request_export(workspace, run_id, request)
    print(f"exporting run {run_id}: {', '.join(formats)}", file=sys.stderr)
    job = follow(job, workspace)
    if job.status != store.COMPLETED:
        print(f"export {job.status}: {job.error or ''}", file=sys.stderr)
        return 1
    report = export.read_report(workspace, run_id)
    results = [export.summary(report, report.artifact(f), workspace) for f in formats]
    if args.json:
        print(json.dumps(results[0] if len(results) == 1 else results, indent=2))
    else:
        for r in results:
            status = "passed" if r["passed"] else f"FAILED ({r['error'] or r['suggestion']})"
            accuracy = "-" if r["accuracy"] is None else f"{r['accuracy']:.2%}"
            latency = "-" if r["latency_ms_median"] is None else f"{r['latency_ms_median']:.2f} ms"
            print(f"{r['format']:<12} {r['size_bytes']:>10,} B  acc {accuracy} (keras {r['reference_accuracy']:.2%})"
                  f"  flipped {r['flipped']}  {latency}  {status}\n  {r['path']}")
    return 0 if all(r["passed"] for r in results) else 1
