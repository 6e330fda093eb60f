"""`python -m engine ...`: the command line, mirroring the dashboard.

Runs started here appear in the dashboard and the other way round: both go through
the same workspace. Exit codes: 0 success, 1 the run failed or was cancelled,
2 bad input (with a one-line reason on stderr).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from engine import jobs
from engine import store as st
from engine.config import AugmentConfig, ConfigError, RunConfig
from engine.store import Run, RunNotFound, Workspace


class UsageError(Exception):
    """Bad command-line input; the message is shown as is."""


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command in ("job", "standby"):
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        return jobs.run_job(args.job_id) if args.command == "job" else jobs.run_standby()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        return args.handler(args, Workspace())
    except (UsageError, ConfigError, RunNotFound, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted (any submitted run keeps going; `cancel` stops it)", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engine", description="Aperture: train and inspect CNNs.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("datasets", help="list dataset sources and whether each is available now")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_datasets)

    p = commands.add_parser("doctor", help="what TensorFlow sees here: CPU features, oneDNN setting, GPUs, versions")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_doctor)

    p = commands.add_parser("train", help="start a training run (prints its id)")
    p.add_argument("--config", type=Path, help="a run.json; flags below override it")
    p.add_argument("--data", help="built-in name (digits, mnist, ...) or an image folder / .zip path")
    p.add_argument("--model", choices=["lenet5", "resnet", "resnet_cbam", "transfer"])
    p.add_argument("--base", choices=["mobilenet_v2", "efficientnet_v2b0"], help="transfer base")
    p.add_argument("--epochs", type=int)
    p.add_argument("--image-size", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="learning rate")
    p.add_argument("--optimizer", choices=["adam", "adamw", "sgd"])
    p.add_argument("--augment", help="comma list, e.g. flip,rotation=15,shift=0.1,zoom=0.1 (or none)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="any config setting, e.g. --set train.schedule=constant (repeatable)")
    p.add_argument("--name", help="a label for the runs table")
    p.add_argument("--seed", type=int)
    p.add_argument("--wait", action="store_true", help="follow the run to its end with a progress bar")
    p.add_argument("--json", action="store_true", help="print one JSON object (with --wait: the final result)")
    p.set_defaults(handler=cmd_train)

    p = commands.add_parser("runs", help="list runs, newest first")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_runs)

    p = commands.add_parser("show", help="show one run (id or unique prefix/suffix)")
    p.add_argument("run")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_show)

    p = commands.add_parser("cancel", help="stop a queued or running run (keeps its best checkpoint)")
    p.add_argument("run")
    p.add_argument("--wait", action="store_true", help="wait until it has stopped")
    p.set_defaults(handler=cmd_cancel)

    p = commands.add_parser("resume", help="continue a failed or cancelled run from its last checkpoint")
    p.add_argument("run")
    p.add_argument("--wait", action="store_true", help="follow the run to its end with a progress bar")
    p.set_defaults(handler=cmd_resume)

    p = commands.add_parser("publish", help="let anyone with the link open a run's demo page (read-only)")
    p.add_argument("run")
    p.add_argument("--off", action="store_true", help="withdraw it (the demo then needs the password again)")
    p.set_defaults(handler=cmd_publish)

    p = commands.add_parser("delete", help="delete a run and its files (cancels it first)")
    p.add_argument("run")
    p.set_defaults(handler=cmd_delete)

    p = commands.add_parser("cache", help="show the data cache (decoded images, extracted uploads); --prune to shrink it")
    p.add_argument("--prune", action="store_true", help="drop least-recently-used entries down to the cap")
    p.add_argument("--max-gb", type=float, help="the cap for --prune (default $APERTURE_CACHE_LIMIT_GB or 20; "
                   "0 empties the cache)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_cache)

    p = commands.add_parser("evaluate", help="metrics of a completed run's test predictions (or of a new folder)")
    p.add_argument("run")
    p.add_argument("--data", help="an image folder or .zip (one sub-folder per class) to evaluate the model on, "
                   "or split:train / split:val / split:test to re-predict one of the run's own splits")
    p.add_argument("--batch-size", type=int, default=256, help="images per forward pass with --data")
    p.add_argument("--json", action="store_true", help="print the evaluation as one JSON object")
    p.set_defaults(handler=cmd_evaluate)

    p = commands.add_parser("describe-model", help="build a model from a config and print its size as JSON")
    p.add_argument("--config", type=Path, help="a run.json (default: the defaults)")
    p.add_argument("--classes", type=int, required=True, help="number of classes")
    p.set_defaults(handler=cmd_describe_model)

    p = commands.add_parser("preview-augment", help="write N augmented copies of one image to a .npy file")
    p.add_argument("--image", type=Path, required=True, help="a .npy (H, W, 3) uint8 image")
    p.add_argument("--augment", required=True, help="augment settings as JSON, e.g. '{\"flip\": true}'")
    p.add_argument("--count", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(handler=cmd_preview_augment)

    p = commands.add_parser("export", help="export a completed run and check parity (runs as a job)")
    p.add_argument("run")
    p.add_argument("--format", default="int8",
                   help="int8|uint8|float16|dynamic|float32|saved_model|onnx|keras, or a comma list (default int8)")
    p.add_argument("--max-drop", type=float, default=1.0, help="accuracy points an export may lose (default 1.0)")
    p.add_argument("--calibration-size", type=int, default=200, help="training images for INT8 calibration")
    p.add_argument("--json", action="store_true", help="print JSON (one object per format)")
    p.set_defaults(handler=cmd_export)

    p = commands.add_parser("explain", help="explain one image's prediction, or a run's N most confident mistakes "
                            "(a job): Grad-CAM, SHAP, LIME maps and faithfulness")
    p.add_argument("run")
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
    p.set_defaults(handler=cmd_explain)

    p = commands.add_parser("job", help=argparse.SUPPRESS)
    p.add_argument("job_id")
    commands.add_parser("standby", help=argparse.SUPPRESS)
    return parser


# -- commands ---------------------------------------------------------------------


def cmd_datasets(args, workspace: Workspace) -> int:
    from engine.data import list_sources

    sources = list_sources()
    if args.json:
        print(json.dumps([s.__dict__ for s in sources], indent=2))
        return 0
    for s in sources:
        print(f"{s.name:<14} {'available' if s.available else 'missing':<10} {s.description}")
        if s.detail:
            print(f"{'':<25} {s.detail}")
    print("\nAny image folder (one sub-folder per class) or .zip of one also works: --data PATH")
    return 0


def cmd_doctor(args, workspace: Workspace) -> int:
    from engine.doctor import diagnose

    report = diagnose()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    cpu = report["cpu"]
    print(f"CPU       {cpu['model']} ({cpu['cores']} cores, {cpu['machine']})")
    print(f"features  {' '.join(cpu['features']) or '(no AVX: TensorFlow runs its slowest kernels)'}")
    print(f"oneDNN    {report['onednn']['description']}")
    print(f"GPUs      {', '.join(report['gpus']) or 'none seen by TensorFlow (training runs on the CPU)'}")
    tf_build = report["tensorflow"]
    if tf_build["cuda_build"]:
        print(f"CUDA      built for CUDA {tf_build['cuda']}, cuDNN {tf_build['cudnn']}")
    print("versions  " + ", ".join(f"{k} {v}" for k, v in report["versions"].items() if v))
    return 0


def cmd_train(args, workspace: Workspace) -> int:
    config = config_from_args(args)
    run = jobs.submit(config, workspace)
    if not args.wait:
        print(json.dumps({"run_id": run.id, "status": run.status}) if args.json else run.id)
        return 0
    print(f"run {run.id}: {config.model.name} on {config.data.source}", file=sys.stderr)
    run = jobs.wait(run.id, workspace, on_poll=_progress_printer(workspace))
    print(file=sys.stderr)
    result = run_summary(run)
    if args.json:
        print(json.dumps(result))
    else:
        _print_run(run, workspace)
    if run.status != st.COMPLETED:
        print(f"run {run.status}: {run.job.error if run.job else ''}", file=sys.stderr)
        return 1
    return 0


def cmd_runs(args, workspace: Workspace) -> int:
    jobs.refresh(workspace)
    runs = workspace.list_runs()
    if args.json:
        print(json.dumps([run_summary(r) for r in runs], indent=2))
        return 0
    if not runs:
        print("no runs yet: python -m engine train --data digits --model lenet5 --wait")
        return 0
    print(f"{'RUN':<21} {'STATUS':<10} {'DATASET':<14} {'MODEL':<12} {'EPOCHS':>7} {'VAL ACC':>8} {'TEST ACC':>8}")
    for r in runs:
        print(f"{r.id:<21} {r.status:<10} {r.dataset[:14]:<14} {r.model:<12} {r.epochs_done:>3}/{r.epochs_total:<3}"
              f" {_pct(r.best_val_accuracy):>8} {_pct(r.test_accuracy):>8}")
    return 0


def cmd_show(args, workspace: Workspace) -> int:
    jobs.refresh(workspace)
    run = workspace.get_run(workspace.resolve_run_id(args.run))
    if args.json:
        summary = run_summary(run)
        summary["config"] = run.config.to_dict()
        summary["epochs_history"] = [e.__dict__ for e in workspace.epochs(run.id)]
        print(json.dumps(summary, indent=2))
    else:
        _print_run(run, workspace)
    return 0


def cmd_cancel(args, workspace: Workspace) -> int:
    run_id = workspace.resolve_run_id(args.run)
    job = jobs.cancel(run_id, workspace)
    if job is None:
        raise UsageError(f"run {run_id} is not queued or running (status: {workspace.get_run(run_id).status})")
    if args.wait:
        jobs.wait(run_id, workspace, poll_seconds=0.5)
    print(f"{run_id}: {workspace.get_run(run_id).status if args.wait else 'cancel requested'}")
    return 0


def cmd_resume(args, workspace: Workspace) -> int:
    run_id = workspace.resolve_run_id(args.run)
    jobs.resume(run_id, workspace)
    print(f"{run_id}: resumed from epoch {workspace.get_run(run_id).epochs_done}")
    if not args.wait:
        return 0
    run = jobs.wait(run_id, workspace, on_poll=_progress_printer(workspace))
    print(file=sys.stderr)
    _print_run(run, workspace)
    return 0 if run.status == st.COMPLETED else 1


def cmd_publish(args, workspace: Workspace) -> int:
    run_id = workspace.resolve_run_id(args.run)
    workspace.set_published(run_id, not args.off)
    print(f"{run_id}: {'not ' if args.off else ''}published" + ("" if args.off else f" (/demo?run={run_id})"))
    return 0


def cmd_delete(args, workspace: Workspace) -> int:
    run_id = workspace.resolve_run_id(args.run)
    jobs.delete(run_id, workspace)
    print(f"{run_id}: deleted")
    return 0


def cmd_cache(args, workspace: Workspace) -> int:
    from engine.data import cache

    if args.max_gb is not None and not args.max_gb >= 0:  # also refuses nan
        raise UsageError(f"--max-gb={args.max_gb}: must be 0 or more")
    removed = []
    if args.prune:
        cap = cache.limit_bytes() if args.max_gb is None else int(args.max_gb * 1e9)
        removed = cache.prune(workspace.cache_dir, cap)
    left = cache.entries(workspace.cache_dir)
    summary = {"cache_dir": str(workspace.cache_dir), "entries": len(left),
               "size_bytes": sum(e.size_bytes for e in left), "removed": len(removed),
               "freed_bytes": sum(e.size_bytes for e in removed)}
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{summary['cache_dir']}: {len(left)} entries, {summary['size_bytes'] / 1e6:.1f} MB"
              + (f" (removed {len(removed)}, freed {summary['freed_bytes'] / 1e6:.1f} MB)" if args.prune else ""))
    return 0


def cmd_evaluate(args, workspace: Workspace) -> int:
    from engine import evaluation

    run_id = workspace.resolve_run_id(args.run)
    try:
        if args.data is None:
            predictions = evaluation.load_predictions(workspace, run_id)
        else:
            if args.batch_size < 1:
                raise UsageError(f"--batch-size {args.batch_size}: must be at least 1")
            predictions = evaluation.predict_source(workspace, run_id, args.data, batch_size=args.batch_size)
    except evaluation.NoPredictions as error:
        raise UsageError(str(error)) from None
    except evaluation.EvaluationError as error:
        raise UsageError(f"--data {error}") from None
    result = evaluation.evaluate(predictions)
    if args.json:
        print(json.dumps({"run_id": run_id, "data": args.data or "test split", **result.to_dict()}))
    else:
        print(f"run {run_id} on {args.data or 'its test split'}")
        print(evaluation.format_table(result))
    return 0


def cmd_explain(args, workspace: Workspace) -> int:
    from engine.data import DatasetError, read_image
    from engine.explain import runs as explain_runs

    run_id = workspace.resolve_run_id(args.run)
    if args.mistakes is not None:
        return _explain_mistakes(args, workspace, run_id)
    if args.wait:
        raise UsageError("--wait applies to --mistakes only (one image is explained right away)")
    run = workspace.get_run(run_id)
    if not workspace.run_file(run_id, st.MODEL_FILE).exists():
        raise UsageError(f"run {run_id} has no trained model yet")
    try:
        image = read_image(args.image, run.config.data.image_size).astype("float32")
    except (DatasetError, OSError) as error:
        raise UsageError(f"--image {args.image}: {error}") from None
    names = explain_runs.class_names(workspace, run_id)
    target = explain_runs.resolve_class(args.class_name, names) if args.class_name else None
    from engine.models import last_conv_layer_name, load_run_model  # imports TensorFlow

    model = load_run_model(workspace, run_id)
    methods = ("gradcam", "shap", "lime") if args.method in (None, "all") else (args.method,)
    results = explain_runs.explain_image(model, image, methods, target=target, names=names,
                                         layer_name=last_conv_layer_name(run.config.model))
    out = args.out or Path(f"explain-{run_id}")
    rows = explain_runs.write_outputs(out, args.image.stem, image, results)
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
    results_path = workspace.run_file(run_id, st.EXPLANATION_RESULTS_FILE)
    if not args.wait:
        if args.json:
            print(json.dumps({"run_id": run_id, "job_id": job.id, "status": job.status, "results": str(results_path)}))
        else:
            print(f"{job.id}: explaining the {args.mistakes} most confident mistakes of run {run_id} "
                  f"({job.status}); results go to {results_path}")
        return 0
    print(f"explaining up to {args.mistakes} mistakes of run {run_id} with {', '.join(methods)}", file=sys.stderr)
    job = _follow(job, workspace)
    stored = batch.load_mistakes(workspace, run_id)
    mine = stored if stored is not None and stored.job_id == job.id else None
    if args.json:
        print(json.dumps({"run_id": run_id, "job_id": job.id, "status": job.status, "error": job.error,
                          **(_batch_json(mine, workspace) if mine else {})}))
    elif mine:
        _print_batch(mine, workspace)
    if job.status != st.COMPLETED:
        kept = f" ({len(mine.rows)} explained image(s) kept)" if mine else ""
        print(f"explain {job.status}: {job.error or ''}{kept}", file=sys.stderr)
        return 1
    return 0


def _batch_json(stored, workspace: Workspace) -> dict:
    """A stored batch as JSON: rows with absolute file paths and each method's summary."""
    folder = workspace.run_dir(stored.run_id)
    images = []
    for row in stored.rows:
        methods = {m: {**{k: v for k, v in r.__dict__.items() if k not in ("map", "overlay")}, "label": r.label,
                       "faithfulness_score": r.faithfulness_score, "beats_random": r.beats_random,
                       "map": str(folder / r.map), "overlay": str(folder / r.overlay)}
                   for m, r in row.methods.items()}
        images.append({**{k: v for k, v in row.__dict__.items() if k not in ("methods", "image")},
                       "image": str(folder / row.image), "methods": methods})
    return {"complete": stored.complete, "requested": stored.requested, "explained": len(stored.rows),
            "mistakes": stored.mistakes, "test_images": stored.test_images, "methods": stored.methods,
            "seconds": stored.seconds, "warm_up_seconds": stored.warm_up_seconds,
            "folder": str(folder / stored.folder), "images": images,
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
    print(f"files: {workspace.run_dir(stored.run_id) / stored.folder}")


def cmd_describe_model(args, workspace: Workspace) -> int:
    config = RunConfig.from_json(args.config.read_text()) if args.config else RunConfig()
    if args.classes < 2:
        raise UsageError(f"--classes {args.classes}: a classifier needs at least 2 classes")
    from engine.models import describe_model, make_model  # imports TensorFlow

    size = config.data.image_size
    model = make_model(config.model, (size, size, 3), args.classes, weight_decay=config.train.weight_decay)
    print(json.dumps(describe_model(model)))
    return 0


def cmd_preview_augment(args, workspace: Workspace) -> int:
    import numpy as np

    from engine.data import make_augmenter  # imports TensorFlow

    augment = AugmentConfig(**parse_augment_json(args.augment))
    augment.validate()
    image = np.load(args.image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise UsageError(f"--image {args.image}: expected an (H, W, 3) array, got shape {image.shape}")
    augmenter = make_augmenter(augment, args.seed)
    batch = np.repeat(image[None].astype("float32"), args.count, axis=0)
    out = batch if augmenter is None else np.asarray(augmenter(batch, training=True))
    np.save(args.out, np.clip(out, 0, 255).astype("uint8"))
    return 0


def _follow(job, workspace: Workspace):
    """Waits for a job to end, drawing its progress on one stderr line; returns it as it ended."""
    while job.active:
        time.sleep(0.5)
        jobs.refresh(workspace)
        job = workspace.get_job(job.id)
        print(f"\r{job.progress:4.0%} {job.message[:60]:<60}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return job


def cmd_export(args, workspace: Workspace) -> int:
    from engine import export

    run_id = workspace.resolve_run_id(args.run)
    formats = tuple(f.strip() for f in args.format.split(",") if f.strip())
    request = export.ExportRequest(formats=formats, max_drop=args.max_drop, calibration_size=args.calibration_size)
    job = export.request_export(workspace, run_id, request)
    print(f"exporting run {run_id}: {', '.join(formats)}", file=sys.stderr)
    job = _follow(job, workspace)
    if job.status != st.COMPLETED:
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


def parse_augment_json(text: str) -> dict:
    try:
        values = json.loads(text)
    except json.JSONDecodeError as error:
        raise UsageError(f"--augment is not valid JSON: {error}") from None
    if not isinstance(values, dict):
        raise UsageError("--augment must be a JSON object")
    unknown = set(values) - set(AugmentConfig.__dataclass_fields__)
    if unknown:
        raise UsageError(f"--augment: unknown settings {sorted(unknown)}")
    return values


# -- helpers ----------------------------------------------------------------------


def config_from_args(args) -> RunConfig:
    """Builds the RunConfig from `--config` and the flags that override it."""
    values: dict = {}
    if args.config:
        try:
            values = json.loads(args.config.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise UsageError(f"cannot read --config {args.config}: {error}") from None
        if not isinstance(values, dict):
            raise UsageError(f"--config {args.config} must hold a JSON object")
    def put(section, key, value):
        if value is not None:
            values.setdefault(section, {})[key] = value

    if args.data is not None:
        put("data", "source", resolve_source(args.data))
    put("model", "name", args.model)
    put("model", "base", args.base)
    put("train", "epochs", args.epochs)
    put("data", "image_size", args.image_size)
    put("train", "batch_size", args.batch_size)
    put("train", "learning_rate", args.lr)
    put("train", "optimizer", args.optimizer)
    if args.seed is not None:
        put("train", "seed", args.seed)
        put("data", "seed", args.seed)
    if args.name is not None:
        values["name"] = args.name
    if args.augment is not None:
        values["augment"] = parse_augment(args.augment)
    for item in args.set:
        key, sep, raw = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot:
            raise UsageError(f"--set {item!r}: expected SECTION.KEY=VALUE, e.g. train.schedule=constant")
        put(section, name, _parse_value(raw))
    return RunConfig.from_dict(values)


def resolve_source(text: str) -> str:
    """A built-in dataset name as is, or an existing folder/zip as an absolute path."""
    from engine.data import BUILTIN_SOURCES, DatasetError, check_source_allowed

    if text in BUILTIN_SOURCES:
        return text
    try:
        check_source_allowed(text)
    except DatasetError as error:
        raise UsageError(f"--data {error}") from None
    path = Path(text).expanduser()
    if not path.exists():
        raise UsageError(f"--data {text}: not a built-in dataset ({', '.join(BUILTIN_SOURCES)}) "
                         "and no such folder or .zip")
    return str(path.resolve())


def parse_augment(text: str) -> dict:
    """`flip,rotation=15,shift=0.1` -> AugmentConfig fields; `none` -> all off."""
    fields = {f: getattr(AugmentConfig(), f) for f in AugmentConfig.__dataclass_fields__}
    if text.strip().lower() in ("", "none", "off"):
        return {}
    result = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, raw = part.partition("=")
        if name not in fields:
            raise UsageError(f"--augment {part!r}: unknown option; use {', '.join(fields)}")
        if name == "flip":
            result[name] = True if not sep else _parse_value(raw)
        elif not sep:
            raise UsageError(f"--augment {part!r}: give a value, e.g. {name}=0.1")
        else:
            result[name] = _parse_value(raw)
    return result


def _parse_value(raw: str):
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def run_summary(run: Run) -> dict:
    job = run.job
    return {"run_id": run.id, "name": run.name, "status": run.status, "dataset": run.dataset, "model": run.model,
            "test_accuracy": run.test_accuracy, "best_val_accuracy": run.best_val_accuracy,
            "epochs": run.epochs_done, "epochs_total": run.epochs_total, "train_seconds": run.train_seconds,
            "params": run.params, "device": run.device, "created_at": run.created_at,
            "error": job.error if job else None}


def _print_run(run: Run, workspace: Workspace) -> None:
    print(f"run       {run.id}  ({run.label})")
    print(f"status    {run.status}" + (f": {run.job.message}" if run.job and run.job.active else ""))
    print(f"data      {run.config.data.source}   model {run.model}   params {run.params or '-'}")
    print(f"device    {run.device or '-'}")
    print(f"epochs    {run.epochs_done}/{run.epochs_total}   train {_secs(run.train_seconds)}")
    print(f"accuracy  val {_pct(run.best_val_accuracy)}   test {_pct(run.test_accuracy)}")
    if run.job and run.job.error:
        print(f"reason    {run.job.error}")
    print(f"folder    {workspace.run_dir(run.id)}")


def _progress_printer(workspace: Workspace):
    state = {"started": time.monotonic()}

    def show(run: Run) -> None:
        job = run.job
        if job is None:
            return
        width = 30
        filled = int(width * job.progress)
        elapsed = time.monotonic() - state["started"]
        line = (f"\r[{'#' * filled}{'.' * (width - filled)}] {job.progress:4.0%} {run.status:<9} "
                f"{job.message[:40]:<40} {elapsed:5.0f}s")
        print(line, end="", file=sys.stderr, flush=True)

    return show


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


if __name__ == "__main__":
    sys.exit(main())
