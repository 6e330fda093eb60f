"""`explain`: one image's prediction right away, or a run's most confident mistakes as a job."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from engine import store
from engine.cli.common import UsageError, add_run_command, follow
from engine.runfolder import RunFolder
from engine.store import Workspace


def register(subparsers) -> None:
    """Adds `explain` to the top-level parser's `subparsers`."""
    p = add_run_command(subparsers, "explain", cmd_explain,
                        help="explain one image's prediction, or a run's N most confident mistakes "
                        "(a job): Grad-CAM, SHAP, LIME maps and faithfulness")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--image", type=Path, help="an image file (resized as training resized)")
    what.add_argument("--mistakes", type=int, metavar="N",
                      help="explain the run's N most confident test-set mistakes as a job and store them with the run")
    p.add_argument("--method", choices=["gradcam", "shap", "lime", "all"],
                   help="default: all for --image, gradcam for --mistakes")
    p.add_argument("--class", dest="class_name", help="the class to explain (default: the predicted one; --image only)")
    p.add_argument("--out", type=Path, help="folder for the .npy maps and overlay PNGs (default: ./explain-RUN; "
                   "--image only: a batch is stored in the run folder)")
    p.add_argument("--wait", action="store_true", help="with --mistakes: follow the job and print its results")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def cmd_explain(args, workspace: Workspace) -> int:
    from engine.data import DatasetError, read_image
    from engine.explain import single

    run_id = workspace.resolve_run_id(args.run)
    if args.mistakes is not None:
        return _explain_mistakes(args, workspace, run_id)
    if args.wait:
        raise UsageError("--wait applies to --mistakes only (one image is explained right away)")
    run = workspace.get_run(run_id)
    folder = RunFolder(workspace, run_id)
    if not folder.has_model:
        raise UsageError(f"run {run_id} has no trained model yet")
    try:
        image = read_image(args.image, run.config.data.image_size).astype("float32")
    except (DatasetError, OSError) as error:
        raise UsageError(f"--image {args.image}: {error}") from None
    names = folder.class_names()
    target = single.resolve_class(args.class_name, names) if args.class_name else None
    from engine.models import last_conv_layer_name, load_run_model  # imports TensorFlow

    model = load_run_model(workspace, run_id)
    methods = ("gradcam", "shap", "lime") if args.method in (None, "all") else (args.method,)
    results = single.explain_image(model, image, methods, target=target, names=names,
                                   layer_name=last_conv_layer_name(run.config.model))
    out = args.out or Path(f"explain-{run_id}")
    rows = single.write_outputs(out, args.image.stem, image, results)
    from engine.explain.methods import verdict

    if args.json:
        print(json.dumps({"run_id": run_id, "image": str(args.image), "out": str(out), "verdict": verdict(results),
                          "methods": {row["method"]: row for row in rows}}))
    else:
        for row in rows:
            print(f"{row['label']:<9} class {row['target_name']} ({100 * row['probability']:.1f}%) "
                  f"{row['seconds']:.2f} s  deletion AUC {row['deletion_auc']:.3f} (random "
                  f"{row['random_deletion_auc']:.3f})  insertion AUC {row['insertion_auc']:.3f} (random "
                  f"{row['random_insertion_auc']:.3f})  {row['overlay_path']}")
        print(verdict(results))
    return 0


def _explain_mistakes(args, workspace: Workspace, run_id: str) -> int:
    """`explain RUN --mistakes N`: queues an explain job; with --wait follows it and prints the stored batch."""
    from engine.explain import batch

    for flag, value in (("--class", args.class_name), ("--out", args.out)):
        if value is not None:
            raise UsageError(f"{flag} applies to --image only (a batch explains each mistake's predicted class "
                             "and is stored in the run folder)")
    if args.mistakes < 1:
        raise UsageError(f"--mistakes {args.mistakes}: explain at least 1 mistake")
    methods = ("gradcam", "shap", "lime") if args.method == "all" else (args.method or "gradcam",)
    job = batch.request_mistakes(workspace, run_id, batch.MistakesRequest(count=args.mistakes, methods=methods))
    results_path = RunFolder(workspace, run_id).explanations_record
    if not args.wait:
        if args.json:
            print(json.dumps({"run_id": run_id, "job_id": job.id, "status": job.status, "results": str(results_path)}))
        else:
            print(f"{job.id}: explaining the {args.mistakes} most confident mistakes of run {run_id} "
                  f"({job.status}); results go to {results_path}")
        return 0
    print(f"explaining up to {args.mistakes} mistakes of run {run_id} with {', '.join(methods)}", file=sys.stderr)
    job = follow(job, workspace)
    stored = batch.load_mistakes(workspace, run_id)
    mine = stored if stored is not None and stored.job_id == job.id else None
    if args.json:
        print(json.dumps({"run_id": run_id, "job_id": job.id, "status": job.status, "error": job.error,
                          **(_batch_json(mine, workspace) if mine else {})}))
    elif mine:
        _print_batch(mine, workspace)
    if job.status != store.COMPLETED:
        kept = f" ({len(mine.rows)} explained image(s) kept)" if mine else ""
        print(f"explain {job.status}: {job.error or ''}{kept}", file=sys.stderr)
        return 1
    return 0


def _batch_json(stored, workspace: Workspace) -> dict:
    """A stored batch as JSON: rows with absolute file paths and each method's summary."""
    folder = RunFolder(workspace, stored.run_id)
    images = []
    for row in stored.rows:
        methods = {m: {**{k: v for k, v in r.__dict__.items() if k not in ("map", "overlay")}, "label": r.label,
                       "faithfulness_score": r.faithfulness_score, "beats_random": r.beats_random,
                       "map": str(folder.resolve(r.map)), "overlay": str(folder.resolve(r.overlay))}
                   for m, r in row.methods.items()}
        images.append({**{k: v for k, v in row.__dict__.items() if k not in ("methods", "image")},
                       "image": str(folder.resolve(row.image)), "methods": methods})
    return {"complete": stored.complete, "requested": stored.requested, "explained": len(stored.rows),
            "mistakes": stored.mistakes, "test_images": stored.test_images, "methods": stored.methods,
            "seconds": stored.seconds, "warm_up_seconds": stored.warm_up_seconds,
            "folder": str(folder.resolve(stored.folder)), "images": images,
            "summary": {m: {**s.__dict__, "label": s.label} for m, s in stored.summary.items()}}


def _print_batch(stored, workspace: Workspace) -> None:
    print(f"run {stored.run_id}: {len(stored.rows)} of its {stored.mistakes} test-set mistakes explained "
          f"in {stored.seconds:.1f} s" + ("" if stored.complete else " (stopped early)")
          + (f"; {stored.warm_up_seconds:.1f} s of it to warm the methods up" if stored.warm_up_seconds else ""))
    for row in stored.rows:
        print(f"{row.rank:>3}. {row.id:<24} true {row.true_name} -> {row.predicted_name} "
              f"({100 * row.confidence:.1f}%)  " + "  ".join(
                  f"{r.label} {'beats' if r.beats_random else 'below'} random" for r in row.methods.values()))
    print(f"\n{'method':<9} {'images':>6} {'mean s':>7} {'deletion':>9} {'random':>7} {'insertion':>9} {'random':>7}"
          f" {'beats random':>12}")
    for s in stored.summary.values():
        print(f"{s.label:<9} {s.images:>6} {s.mean_seconds:>7.2f} {s.mean_deletion_auc:>9.3f} "
              f"{s.mean_random_deletion_auc:>7.3f} {s.mean_insertion_auc:>9.3f} {s.mean_random_insertion_auc:>7.3f}"
              f" {s.beats_random_share:>12.0%}")
    print(f"files: {RunFolder(workspace, stored.run_id).resolve(stored.folder)}")
