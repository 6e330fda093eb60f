"""`relabel` (a run's data with fixes from a CSV becomes a new dataset version) and `versions` (list them)."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

from engine.cli.common import UsageError, add_run_command
from engine.store import Workspace

MAX_CSV_BYTES = 64 * 1024**2
CSV_COLUMNS = ("file", "new_label")
SPECIAL_LABELS = ("exclude", "checked")  # new_label values that are actions, unless a class has that name


def register(subparsers) -> None:
    """Adds `relabel` and `versions` to the top-level parser's `subparsers`."""
    p = add_run_command(subparsers, "relabel", cmd_relabel,
                        help="fix a run's data from a CSV (file, new_label | exclude | checked) into a new dataset "
                             "version; prints its id (train on it with --data version:ID)")
    p.add_argument("--csv", type=Path, required=True, help="columns file (the image id as the run's data names it: "
                   "class/name.png, digits/17) and new_label (a class, or `exclude`, or `checked`)")
    p.add_argument("--note", default="", help="a note kept with the version")
    p.add_argument("--json", action="store_true", help="print the new version as JSON")

    p = subparsers.add_parser("versions", help="list dataset versions (of one source, or all)")
    p.add_argument("source", nargs="?", help="a source (built-in name, folder, zip) or version:ID; default all")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_versions)


def read_relabel_csv(path: Path) -> list[tuple[str, str, str]]:
    """The `(file, action, new_label)` rows of a relabel CSV; raises UsageError naming the bad row or column."""
    try:
        if path.stat().st_size > MAX_CSV_BYTES:
            raise UsageError(f"--csv {path.name}: larger than {MAX_CSV_BYTES // 1024**2} MB")
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise UsageError(f"--csv {path.name}: not UTF-8 text; save it as UTF-8 CSV") from None
    except OSError as error:
        raise UsageError(f"--csv {path}: cannot read it ({error.strerror or error})") from None
    if "\x00" in text:
        raise UsageError(f"--csv {path.name}: holds binary data, not a CSV table")
    try:
        reader = csv.DictReader(io.StringIO(text))
        header = [h.strip().lower() for h in (reader.fieldnames or [])]
        reader.fieldnames = header
        rows = list(reader)
    except csv.Error as error:
        raise UsageError(f"--csv {path.name}: not a readable CSV table ({error})") from None
    unknown = [h for h in header if h not in CSV_COLUMNS]
    missing = [c for c in CSV_COLUMNS if c not in header]
    if unknown or missing:
        raise UsageError(f"--csv {path.name}: the columns must be {', '.join(CSV_COLUMNS)}; "
                         + "; ".join(([f"unknown column(s) {', '.join(map(repr, unknown))}"] if unknown else [])
                                     + ([f"missing {', '.join(missing)}"] if missing else [])))
    found, seen = [], {}
    for number, row in enumerate(rows, start=2):
        if None in row:
            raise UsageError(f"--csv {path.name} row {number}: more values than the {len(header)} columns")
        file, label = (row.get("file") or "").strip(), (row.get("new_label") or "").strip()
        if not file and not label:
            continue
        if not file or not label:
            raise UsageError(f"--csv {path.name} row {number}: needs both a file and a new_label "
                             f"(got {file!r}, {label!r})")
        if file in seen:
            raise UsageError(f"--csv {path.name} row {number}: {file!r} is already on row {seen[file]}")
        seen[file] = number
        found.append((file, label))
    if not found:
        raise UsageError(f"--csv {path.name}: no rows to apply")
    return found


def cmd_relabel(args, workspace: Workspace) -> int:
    from engine.data import DatasetError
    from engine.data import versions as dv
    from engine.runfolder import RunFolder

    run_id = workspace.resolve_run_id(args.run)
    rows = read_relabel_csv(args.csv)
    folder = RunFolder(workspace, run_id)
    data = folder.config().data
    try:
        images = folder.dataset()
        classes = set(images.class_names)
        changes = [(file, label.lower(), "") if label.lower() in SPECIAL_LABELS and label not in classes
                   else (file, dv.RELABEL, label) for file, label in rows]
        version = dv.create_version(workspace.root, data.source, images, changes, settings=dv.settings_of(data),
                                    note=args.note, run_id=run_id, item_name=f"--csv {args.csv.name} row",
                                    first_number=2)
    except DatasetError as error:
        raise UsageError(str(error)) from None
    if args.json:
        print(json.dumps(version.to_dict(), indent=2))
    else:
        print(version.name)
        print(f"{dv.describe_version(version)}; train on it with --data {version.name}", file=sys.stderr)
    return 0


def cmd_versions(args, workspace: Workspace) -> int:
    from engine.data import DatasetError
    from engine.data import versions as dv

    try:
        found = dv.list_versions(workspace.root, args.source)
    except DatasetError as error:
        raise UsageError(str(error)) from None
    if args.json:
        print(json.dumps([v.to_dict() for v in found], indent=2))
        return 0
    if not found:
        print("no dataset versions" + (f" of {args.source}" if args.source else "")
              + " (make one with `relabel RUN --csv FILE`)")
        return 0
    print(f"{'name':<12} {'v':>3} {'relabel':>7} {'exclude':>7} {'checked':>7}  {'parent':<14} {'source':<30} note")
    for v in found:
        c = v.counts()
        print(f"{v.name:<12} {v.number:>3} {c[dv.RELABEL]:>7} {c[dv.EXCLUDE]:>7} {c[dv.CHECKED]:>7}  "
              f"{v.parent if v.parent.startswith(dv.VERSION_PREFIX) else '(source)':<14} {v.source[-30:]:<30} "
              f"{v.note}")
    return 0
