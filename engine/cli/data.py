"""Data and model helpers: `datasets`, `data decode`, `cache`, `describe-model`, `preview-augment`.

`describe-model` and `preview-augment` run TensorFlow in a process of their own, so
that the dashboard's process never has to import it.
"""

from __future__ import annotations

import json
from pathlib import Path

from engine.cli.common import UsageError, follow
from engine.config import AugmentConfig, RunConfig
from engine.store import Workspace


def register(subparsers) -> None:
    """Adds the data commands to the top-level parser's `subparsers`."""
    p = subparsers.add_parser("datasets", help="list dataset sources and whether each is available now")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_datasets)

    p = subparsers.add_parser("data", help="decode a folder, zip or manifest into the cache (a job with progress)")
    commands = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    decode = commands.add_parser("decode", help="queue a decode job (or attach to the same one already running); "
                                 "training from the source later loads it from the cache at once")
    decode.add_argument("source", help="a folder, .zip, .csv/.tsv manifest or version:ID")
    decode.add_argument("--image-size", type=int, required=True, metavar="N", help="side of the square images")
    decode.add_argument("--max-per-class", type=int, default=0, metavar="K", help="at most K per class (0 = all)")
    for column in ("path", "label", "split"):
        decode.add_argument(f"--{column}-column", default="", metavar="NAME", help=f"a manifest's {column} column "
                            "(default: detected)" + ("; none = no split column" if column == "split" else ""))
    decode.add_argument("--wait", action="store_true", help="follow the job to its end with a progress line")
    decode.add_argument("--json", action="store_true", help="print one JSON object (with --wait: the outcome)")
    decode.set_defaults(handler=cmd_decode)

    p = subparsers.add_parser("cache", help="show the data cache (decoded images, extracted uploads); --prune to "
                              "shrink it")
    p.add_argument("--prune", action="store_true", help="drop least-recently-used entries down to the cap")
    p.add_argument("--max-gb", type=float, help="the cap for --prune (default $APERTURE_CACHE_LIMIT_GB or 20; "
                   "0 empties the cache)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_cache)

    p = subparsers.add_parser("describe-model", help="build a model from a config and print its size as JSON")
    p.add_argument("--config", type=Path, help="a run.json (default: the defaults)")
    p.add_argument("--classes", type=int, required=True, help="number of classes")
    p.set_defaults(handler=cmd_describe_model)

    p = subparsers.add_parser("preview-augment", help="write N augmented copies of one image to a .npy file")
    p.add_argument("--image", type=Path, required=True, help="a .npy (H, W, 3) uint8 image")
    p.add_argument("--augment", required=True, help="augment settings as JSON, e.g. '{\"flip\": true}'")
    p.add_argument("--count", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(handler=cmd_preview_augment)


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


def cmd_decode(args, workspace: Workspace) -> int:
    from engine import store
    from engine.data import BUILTIN_SOURCES, ManifestColumns, scan_source
    from engine.data.decode_job import DecodeRequest, cached_images, submit_decode
    from engine.data.versions import version_id

    if args.source in BUILTIN_SOURCES:
        raise UsageError(f"{args.source} is a built-in dataset: it loads without a decode")
    if args.image_size < 1:
        raise UsageError(f"--image-size {args.image_size}: must be a positive number of pixels, e.g. 224")
    if args.max_per_class < 0:
        raise UsageError(f"--max-per-class {args.max_per_class}: must be 0 (all images) or more")
    source = args.source if version_id(args.source) is not None else str(Path(args.source).expanduser().resolve())
    columns = ManifestColumns(args.path_column, args.label_column, args.split_column)
    scan_source(source, cache_dir=workspace.cache_dir, columns=columns)  # a bad source is said now, not in the job
    request = DecodeRequest.of(source, args.image_size, args.max_per_class, columns)
    job = submit_decode(workspace, request)
    if args.wait:
        job = follow(job, workspace)
    outcome = {"job_id": job.id, "task_id": request.task_id, "status": job.status, "message": job.message}
    if job.status == store.COMPLETED:
        images = cached_images(workspace, request)
        outcome["images"] = len(images) if images is not None else None
    if job.error:
        outcome["error"] = job.error
    if args.json:
        print(json.dumps(outcome))
    elif args.wait:
        print(f"{job.id}: {job.status}: {job.error or job.message}")
    else:
        print(job.id)
    return 1 if job.status in (store.FAILED, store.CANCELLED) else 0


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


def parse_augment_json(text: str) -> dict:
    """`preview-augment --augment`: a JSON object of AugmentConfig fields, checked for unknown names."""
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


def describe_source(config: RunConfig, workspace: Workspace) -> str | None:
    """One line about a folder/zip/manifest source's layout, classes and splits (None for a built-in dataset).

    Raises:
        DatasetError: the source cannot be used (a `ValueError`: the CLI exits 2 with it).
    """
    from engine.data import BUILTIN_SOURCES, ManifestColumns, scan_source
    from engine.data.layouts import IMBALANCE_RATIO, LAYOUTS, SPLIT_TITLES
    from engine.data.versions import describe_version, load_version, version_id

    if config.data.source in BUILTIN_SOURCES:
        return None
    if version_id(config.data.source) is not None:
        return describe_version(load_version(workspace.root, config.data.source))
    scan = scan_source(config.data.source, cache_dir=workspace.cache_dir,
                       columns=ManifestColumns.from_config(config.data))
    counts = scan.counts()
    parts = ", ".join(f"{SPLIT_TITLES.get(p, p)} {sum(c.values()):,}" for p, c in counts.items())
    given = "given" if scan.given_splits else "to be split"
    line = f"{LAYOUTS[scan.layout]}, {len(scan.class_names)} classes ({parts}; {given})"
    ratio = scan.imbalance()
    if ratio is not None and ratio > IMBALANCE_RATIO and config.train.class_weight == "none":
        line += f"; classes imbalanced {ratio:.1f}x (try --set train.class_weight=balanced)"
    return "; ".join([line, *scan.notes])
