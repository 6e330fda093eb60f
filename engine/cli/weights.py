"""Pretrained weights of the transfer zoo: `weights list`, `weights get BASE`, `weights import FILE --base BASE`.

BASE is a keras.applications base or `hub:<preset>` (a KerasHub preset; FILE is then a preset folder).
"""

from __future__ import annotations

import argparse
import json
import sys

from engine.cli.common import UsageError, follow
from engine.config import TRANSFER_BASES, ConfigError, ModelConfig
from engine.store import Workspace


def register(subparsers) -> None:
    """Adds the `weights` command group to the top-level parser's `subparsers`."""
    p = subparsers.add_parser("weights", help="pretrained weights of the transfer bases: list, get, import")
    commands = p.add_subparsers(dest="weights_command", required=True, metavar="ACTION")
    listing = commands.add_parser("list", help="each base: whether its weights are here, size, sha256, source")
    listing.add_argument("--json", action="store_true")
    listing.add_argument("--no-hash", action="store_true", help="skip hashing the files (faster)")
    listing.set_defaults(handler=cmd_list)
    get = commands.add_parser("get", help="download a base's ImageNet weights in a job (resumes a broken download, checks "
                                          "the published hash) into the Keras cache")
    get.add_argument("base", type=_base, metavar="BASE", help=f"{', '.join(TRANSFER_BASES)} or hub:<preset>")
    get.set_defaults(handler=cmd_get)
    imp = commands.add_parser("import", help="use a .h5/.weights.h5 file, or a KerasHub preset folder for a hub: "
                                             "base (checked against the base's shapes): the offline route")
    imp.add_argument("path")
    imp.add_argument("--base", required=True, type=_base, metavar="BASE",
                     help=f"{', '.join(TRANSFER_BASES)} or hub:<preset>")
    imp.set_defaults(handler=cmd_import)


def _base(value: str) -> str:
    """A `model.base` value, checked as the config checks it."""
    try:
        ModelConfig(name="transfer", base=value).validate()
    except ConfigError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return value


def cmd_list(args, workspace: Workspace) -> int:
    from engine import zoo
    from engine.config import HUB_BASES

    rows = []
    for name, base in zoo.BASES.items():
        found = zoo.status(name)
        record = zoo.weights_source(found.path) if found.present and not args.no_hash else {}
        rows.append({"base": name, "present": found.present, "path": str(found.path) if found.path else None,
                     "size_bytes": found.size_bytes, "source": found.source, "sha256": record.get("sha256"),
                     "url": base.url, "published_hash": base.published_hash})
    for name in sorted(set(HUB_BASES) | set(zoo.local_hub_bases())):
        found = zoo.status(name)
        record = zoo.preset_source(found.path, found.source) if found.present and not args.no_hash else {}
        rows.append({"base": name, "present": found.present, "path": str(found.path) if found.path else None,
                     "size_bytes": found.size_bytes, "source": found.source, "sha256": record.get("sha256"),
                     "url": None, "published_hash": None})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'BASE':<36} {'HERE':<5} {'MB':>7}  {'SOURCE':<9} SHA256")
    for row in rows:
        size = f"{row['size_bytes'] / 1e6:7.1f}" if row["present"] else f"{'-':>7}"
        print(f"{row['base']:<36} {'yes' if row['present'] else 'no':<5} {size}  {row['source'] or '-':<9} "
              f"{(row['sha256'] or '-')[:16]}")
    print(f"\nFolders: {zoo.keras_cache_dir()}; KerasHub presets {zoo.hub_import_root()} (imported) "
          f"and {zoo.kagglehub_cache_dir()} (downloaded). Missing ones: python -m engine weights get BASE, or "
          "weights import FILE --base BASE.")
    return 0


def cmd_get(args, workspace: Workspace) -> int:
    """Downloads in a `weights` job, the one the Train page's Get button follows: a second `get` of the same base,
    here or on the page, attaches to it. Ctrl-C cancels the job (its partial file is kept for a resume)."""
    from engine import jobs, store, zoo
    from engine.weights_job import submit_weights

    job = submit_weights(workspace, args.base)
    try:
        job = follow(job, workspace)
    except KeyboardInterrupt:
        jobs.cancel_job(job.id, workspace)
        print(f"\nstopped; `python -m engine weights get {args.base}` resumes the download", file=sys.stderr)
        return 130
    if job.status == store.FAILED:
        raise UsageError((job.error or f"the download of {args.base} failed (job {job.id})").removeprefix("WeightsError: "))
    if job.status == store.CANCELLED:
        print(f"cancelled; `python -m engine weights get {args.base}` resumes the download", file=sys.stderr)
        return 1
    print(zoo.status(args.base).path)
    return 0


def cmd_import(args, workspace: Workspace) -> int:
    from engine import weights

    try:
        path = weights.import_weights(args.path, args.base)
    except weights.WeightsError as error:
        raise UsageError(str(error)) from None
    print(path)
    return 0
