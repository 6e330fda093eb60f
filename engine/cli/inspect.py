"""`inspect`: a trained run's duplicates, train/test leakage, dataset health and label issues (computed as a job)."""

from __future__ import annotations

import json
import sys

from engine import store
from engine.cli.common import UsageError, add_run_command, follow
from engine.runfolder import RunFolder
from engine.store import Workspace

_REPORT_KEYS = ("duplicates", "leakage", "health", "label_issues")


def register(subparsers) -> None:
    """Adds `inspect` to the top-level parser's `subparsers`."""
    p = add_run_command(subparsers, "inspect", cmd_inspect,
                        help="duplicates, train/test leakage, data health and label issues of a trained run "
                             "(computes what is missing as a job)")
    p.add_argument("--threshold", type=float, default=None,
                   help="similarity from which two images are near duplicates, in (0, 1] (default: the signal's "
                        "measured one: 0.84375 = 10 of 64 hash bits, 0.99 cosine for embedding)")
    p.add_argument("--signal", choices=("hash", "embedding"), default="hash",
                   help="near duplicates by perceptual hash (default) or by cosine of the model's features")
    p.add_argument("--method", default=None, help="2-D map: auto (default: PCA, or UMAP where PCA folds the neighbourhoods), umap, pca or tsne")
    p.add_argument("--recompute", action="store_true", help="compute again even when a report is stored")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def cmd_inspect(args, workspace: Workspace) -> int:
    from engine import inspect
    from engine.evaluation import NoPredictions

    run_id = workspace.resolve_run_id(args.run)
    folder = RunFolder(workspace, run_id)
    threshold = inspect.default_threshold(args.signal) if args.threshold is None else args.threshold
    if not 0 < threshold <= 1:
        raise UsageError(f"--threshold {threshold}: must be a similarity in (0, 1]")
    method = args.method or inspect.DEFAULT_MAP_METHOD
    if method not in inspect.MAP_METHODS:
        raise UsageError(f"--method {method!r}: expected one of {', '.join(inspect.MAP_METHODS)}")
    report = inspect.inspect_report(folder)
    stale = report is None or args.recompute or (args.method is not None and report["map"].get("asked") != method)
    if stale:
        try:
            job = inspect.request_inspection(workspace, run_id, threshold=threshold, method=method,
                                             signal=args.signal)
        except NoPredictions as error:
            raise UsageError(str(error)) from None
        except inspect.InspectError as error:
            raise UsageError(str(error)) from None
        print(f"inspecting run {run_id}", file=sys.stderr)
        job = follow(job, workspace)
        if job.status != store.COMPLETED:
            print(f"inspect {job.status}: {job.error or ''}", file=sys.stderr)
            return 1
        report = inspect.inspect_report(folder)
    elif threshold != report["threshold"] or args.signal != report.get("signal", "hash"):
        embeddings = inspect.run_embeddings(folder)  # the stored neighbours answer another threshold at once
        pairs = inspect.duplicate_pairs(embeddings, inspect.run_neighbours(folder, args.signal), threshold)
        report = {**report, "threshold": threshold, "signal": args.signal, "duplicates": [p.to_dict() for p in pairs],
                  "leakage": inspect.leakage(embeddings, pairs).to_dict()}
    result = {"run_id": run_id, "threshold": report["threshold"], "signal": report.get("signal", "hash"), **{key: report[key] for key in _REPORT_KEYS}}
    if args.json:
        print(json.dumps(result))
        return 0
    leak = result["leakage"]
    pairs = result["duplicates"]
    across = sum(1 for p in pairs if p["split_a"] != p["split_b"])
    print(f"run {run_id}: {len(pairs)} duplicate pairs at similarity >= {threshold:g} ({args.signal}) ({across} across splits, "
          f"{sum(p['kind'] == 'exact' for p in pairs)} exact)")
    print(f"test accuracy {leak['test_accuracy']:.2%} -> {leak['test_accuracy_without_leaks']:.2%} without "
          f"{leak['test_with_train_duplicate']} near-copies of training images")
    found = {issue: n for issue, n in result["health"].items() if n}
    print("health: " + (", ".join(f"{n} {issue.replace('_', ' ')}" for issue, n in found.items()) or "no issues"))
    print(f"label issues: {len(result['label_issues'])} suspected" + "".join(
        f"\n  {i['rank']:>3}. {i['id']}: {i['given']} -> {i['suggested']} (p={i['self_confidence']:.3f})"
        for i in result["label_issues"][:10]))
    return 0
