"""`compress`: distill or prune a completed run into a new child run (runs as a job)."""

from __future__ import annotations

import json
import sys

from engine import jobs, store
from engine.cli.common import UsageError, add_run_command
from engine.compress.request import (DEFAULT_ALPHA, DEFAULT_EPOCHS, DEFAULT_TEMPERATURE, METHODS, SCHEDULES,
                                     CompressRequest, read_compress_report, request_compress)
from engine.store import Workspace


def register(subparsers) -> None:
    """Adds `compress` to the top-level parser's `subparsers`."""
    p = add_run_command(subparsers, "compress", cmd_compress,
                        help="distill or prune a completed run into a new child run (runs as a job)")
    p.add_argument("--method", required=True, choices=METHODS, help="distill into a student, or prune")
    p.add_argument("--student", help="distill: the student model, NAME[:key=value,...], e.g. resnet:width=8")
    p.add_argument("--teacher", default="", help="distill: the teaching run (default: RUN itself)")
    p.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE,
                   help=f"distill: softening temperature (default {DEFAULT_TEMPERATURE:g})")
    p.add_argument("--alpha", type=float, default=DEFAULT_ALPHA,
                   help=f"distill: weight of the hard-label loss, 0..1 (default {DEFAULT_ALPHA:g})")
    p.add_argument("--sparsity", type=float, help="prune: share of weights set to zero, between 0 and 1")
    p.add_argument("--schedule", default="polynomial", choices=SCHEDULES, help="prune: how sparsity rises")
    p.add_argument("--learning-rate", type=float, default=0.0,
                   help="prune: fine-tuning learning rate (default a tenth of the run's)")
    p.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS, help=f"training epochs (default {DEFAULT_EPOCHS})")
    p.add_argument("--wait", action="store_true", help="follow the child run to its end with a progress bar")
    p.add_argument("--json", action="store_true", help="print one JSON object (with --wait: the final result)")


def cmd_compress(args, workspace: Workspace) -> int:
    run_id = workspace.resolve_run_id(args.run)
    teacher = workspace.resolve_run_id(args.teacher) if args.teacher else ""
    if args.method == "distill" and not args.student:
        raise UsageError("--method distill needs --student SPEC, e.g. --student lenet5 or resnet:width=8")
    if args.method == "prune" and args.sparsity is None:
        raise UsageError("--method prune needs --sparsity S, a share between 0 and 1 (e.g. 0.75)")
    request = CompressRequest(method=args.method, student=args.student or "lenet5", teacher=teacher,
                              temperature=args.temperature, alpha=args.alpha,
                              sparsity=0.75 if args.sparsity is None else args.sparsity, schedule=args.schedule,
                              epochs=args.epochs, learning_rate=args.learning_rate)
    child = request_compress(workspace, run_id, request)
    if not args.wait:
        print(json.dumps({"run_id": child.id, "status": child.status}) if args.json else child.id)
        return 0
    print(f"run {child.id}: {request.describe()} from {run_id}", file=sys.stderr)
    child = jobs.wait(child.id, workspace, on_poll=_progress_line)
    print(file=sys.stderr)
    result = compress_summary(workspace, child)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{child.id}  {child.status}  test accuracy {_pct(result['test_accuracy'])} "
              f"(parent {_pct(result.get('parent_test_accuracy'))})"
              + (f"  sparsity {result['sparsity']:.1%}" if result.get("sparsity") is not None else ""))
    if child.status != store.COMPLETED:
        print(f"compress {child.status}: {child.job.error if child.job else ''}", file=sys.stderr)
        return 1
    return 0


def compress_summary(workspace: Workspace, child) -> dict:
    """The JSON `compress --wait --json` prints: the child run's id, status, test accuracy (and pruning's sparsity)."""
    report = read_compress_report(workspace, child.id) or {}
    result = {"run_id": child.id, "parent_id": child.parent_id, "status": child.status,
              "test_accuracy": child.test_accuracy, "parent_test_accuracy": report.get("parent_test_accuracy"),
              "method": report.get("method"), "params": child.params,
              "error": child.job.error if child.job else None}
    if report.get("method") == "prune":
        result["sparsity"] = report.get("sparsity")
        result["gzip_ratio"] = report.get("gzip_sizes", {}).get("keras", {}).get("ratio")
    if report.get("method") == "distill":
        result["alone_test_accuracy"] = report["models"]["alone"]["accuracy"]
        result["teacher_test_accuracy"] = report["models"]["teacher"]["accuracy"]
    return result


def _progress_line(run) -> None:
    job = run.job
    if job is not None:
        print(f"\r{job.progress:4.0%} {run.status:<9} {job.message[:50]:<50}", end="", file=sys.stderr, flush=True)


def _pct(value) -> str:
    return "-" if value is None else f"{value:.2%}"
