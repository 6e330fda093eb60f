"""Dataset versions: numbered overlays (relabel, exclude, mark as checked) on top of a source, never touching it.

A version lives in the workspace, `versions/<id>/`: `changes.csv` (every change over the root source,
cumulative through its parents) and `version.json` (the root source, the parent it was made from,
its number among that source's versions, when, a note, the class names and the data settings the
split was made with). `load_images("version:ID", ...)` loads the root source, pins the split the
parent made (same seed, same fractions: the test images stay the same, less the excluded ones), then
applies the changes. A relabel must name an existing class: a new class would change the model's
outputs and make the child incomparable with its parent; add the class to the source instead.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from engine.data.imageset import SPLIT_CODES, DatasetError, ImageSet, cap_per_class, fingerprint_arrays

VERSION_PREFIX = "version:"
VERSIONS_DIR = "versions"
CHANGES_FILE = "changes.csv"
META_FILE = "version.json"
RELABEL, EXCLUDE, CHECKED = "relabel", "exclude", "checked"
ACTIONS = (RELABEL, EXCLUDE, CHECKED)
CHANGE_COLUMNS = ("file", "action", "old_label", "new_label")
# The data settings a version pins for its root source (a run's `DataConfig` fields).
SPLIT_SETTINGS = ("val_fraction", "test_fraction", "seed", "max_per_class", "path_column", "label_column",
                  "split_column")
_ID = re.compile(r"^[1-9][0-9]{0,8}$")


@dataclass(frozen=True)
class Change:
    """One image's state in a version.

    Args:
        file: the image's id in the source (`cats/img_001.jpg`, `digits/17`).
        action: `relabel`, `exclude` or `checked`.
        old_label: its label in the root source.
        new_label: the class it is relabelled to (`relabel` only; else blank).
    """

    file: str
    action: str
    old_label: str
    new_label: str = ""


@dataclass(frozen=True)
class DatasetVersion:
    """A stored dataset version (see the module docstring).

    Args:
        id: the workspace-wide version number; `version:ID` names it as a data source.
        source: the root source (a built-in name, a folder, a zip or a manifest).
        parent: what it was made from: the root source or `version:N`.
        number: its number among the versions of `source` (1, 2, ...).
        created_at: when it was written (seconds since the epoch).
        note: what the user said about it.
        class_names: the classes (those of the root source, unchanged).
        settings: the data settings the split is pinned with (`SPLIT_SETTINGS`).
        changes: every change over the root source, cumulative through the parents.
        run_id: the run whose data it was made from, if any.
    """

    id: int
    source: str
    parent: str
    number: int
    created_at: float
    note: str
    class_names: list[str]
    settings: dict
    changes: tuple[Change, ...] = field(default=())
    run_id: str | None = None

    @property
    def name(self) -> str:
        """The data source string naming this version, `version:ID`."""
        return f"{VERSION_PREFIX}{self.id}"

    def counts(self) -> dict[str, int]:
        """How many images each action covers, e.g. `{"relabel": 2, "exclude": 1, "checked": 0}`."""
        return {action: sum(c.action == action for c in self.changes) for action in ACTIONS}

    def to_dict(self) -> dict:
        """The version as JSON-ready data (`versions --json`, `relabel --json`)."""
        meta = asdict(self)
        meta["changes"] = [asdict(c) for c in self.changes]
        return {"name": self.name, **meta, "counts": self.counts()}


def describe_version(version: DatasetVersion) -> str:
    """One line about a version: `dataset version 3 (v2 of digits): 2 relabelled, 1 excluded, 0 checked`."""
    counts = version.counts()
    return (f"dataset version {version.id} (v{version.number} of {version.source}): {counts[RELABEL]} relabelled, "
            f"{counts[EXCLUDE]} excluded, {counts[CHECKED]} checked; split pinned to its parent's")


def settings_of(data) -> dict:
    """The split settings a version pins, from a run's `DataConfig`."""
    return {name: getattr(data, name) for name in SPLIT_SETTINGS if hasattr(data, name)}


def version_id(source: str) -> int | None:
    """The id in a `version:ID` source string, or None for any other source.

    Raises:
        DatasetError: it starts with `version:` but the id is not a positive whole number.
    """
    if not str(source).startswith(VERSION_PREFIX):
        return None
    raw = str(source)[len(VERSION_PREFIX):].strip()
    if not _ID.match(raw):
        raise DatasetError(f"{source!r}: a dataset version is named version:ID with ID a positive whole number, "
                           "e.g. version:3 (`python -m engine versions` lists them).")
    return int(raw)


def versions_dir(workspace_root: str | os.PathLike) -> Path:
    """Where a workspace keeps its dataset versions."""
    return Path(workspace_root) / VERSIONS_DIR


def load_version(workspace_root: str | os.PathLike, version: int | str) -> DatasetVersion:
    """Reads a stored version by id (an int, `"3"` or `"version:3"`).

    Raises:
        DatasetError: no such version, or its files are damaged.
    """
    number = version if isinstance(version, int) else version_id(version)
    if number is None:
        number = version_id(f"{VERSION_PREFIX}{version}")
    folder = versions_dir(workspace_root) / str(number)
    try:
        meta = json.loads((folder / META_FILE).read_text())
        changes = tuple(_read_changes((folder / CHANGES_FILE).read_text()))
    except FileNotFoundError:
        raise DatasetError(f"there is no dataset version {number} in this workspace (`python -m engine versions` "
                           "lists them).") from None
    except (OSError, ValueError, KeyError) as error:
        raise DatasetError(f"dataset version {number} is damaged ({error})") from None
    return DatasetVersion(int(meta["id"]), meta["source"], meta["parent"], int(meta["number"]),
                          float(meta["created_at"]), meta.get("note", ""), list(meta["class_names"]),
                          dict(meta["settings"]), changes, meta.get("run_id"))


def list_versions(workspace_root: str | os.PathLike, source: str | None = None) -> list[DatasetVersion]:
    """The workspace's versions, oldest first; with `source`, only those of that root source (or that version's)."""
    folder = versions_dir(workspace_root)
    ids = sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and _ID.match(p.name)) if folder.is_dir() else []
    found = []
    for number in ids:
        try:
            found.append(load_version(workspace_root, number))
        except DatasetError:
            continue  # a version still being written, or damaged: `load_version` says which
    if source is None:
        return found
    if version_id(source) is not None:
        source = load_version(workspace_root, source).source
    wanted = _same_source(source)
    return [v for v in found if _same_source(v.source) == wanted]


def create_version(workspace_root: str | os.PathLike, parent: str, images: ImageSet, changes: list[Change] | list,
                   *, settings: dict, note: str = "", run_id: str | None = None, item_name: str = "change",
                   first_number: int = 1) -> DatasetVersion:
    """Writes a new version: `parent`'s changes, then `changes` on top (a later change of a file replaces it).

    Args:
        workspace_root: the workspace folder.
        parent: the source the changes were made on: a source string or `version:N`.
        images: `parent` as loaded (its ids and labels check the changes; a version's ids are its root's).
        changes: `Change`s or `(file, action[, new_label])` tuples; `old_label` is filled in from `images`.
        settings: the data settings of the split to pin (`SPLIT_SETTINGS`, e.g. from a run's `DataConfig`);
            ignored for a version parent, whose own settings are kept.
        note: a note to keep with it.
        run_id: the run the changes were made from, if any.
        item_name: what an error calls a change (`change`; the CLI says `row`).
        first_number: the number of the first change in errors (1; the CLI's first CSV row is 2).

    Returns:
        The new `DatasetVersion`.

    Raises:
        DatasetError: no changes, an unknown file or action, or a label that is not one of the classes;
            the message names the first bad change, and nothing is written.
    """
    root_version = load_version(workspace_root, parent) if version_id(parent) is not None else None
    by_id = {sample_id: int(label) for sample_id, label in zip(images.ids, np.asarray(images.labels))}
    if root_version is not None:  # old labels are the root source's; excluded images may be changed again
        by_id.update({c.file: root_version.class_names.index(c.old_label) for c in root_version.changes
                      if c.old_label in root_version.class_names})
    checked = [_checked_change(item, f"{item_name} {number}", by_id, images.class_names)
               for number, item in enumerate(changes, first_number)]
    if not checked:
        raise DatasetError("no changes: give at least one image to relabel, exclude or mark as checked.")
    merged = {c.file: c for c in (root_version.changes if root_version else ())}
    merged.update({c.file: c for c in checked})
    source = root_version.source if root_version else str(parent)
    pinned = root_version.settings if root_version else {k: settings[k] for k in SPLIT_SETTINGS if k in settings}
    folder = versions_dir(workspace_root)
    folder.mkdir(parents=True, exist_ok=True)
    number = 1 + len(list_versions(workspace_root, source))
    target = _claim_folder(folder)
    version = DatasetVersion(int(target.name), source, str(parent), number, time.time(), note.strip(),
                             list(images.class_names), pinned, tuple(merged.values()), run_id)
    meta = version.to_dict()
    for key in ("changes", "counts", "name"):
        meta.pop(key)
    (target / CHANGES_FILE).write_text(changes_csv(version.changes))
    partial = target / (META_FILE + ".tmp")
    partial.write_text(json.dumps(meta, indent=2))
    partial.replace(target / META_FILE)  # the version exists once its meta does
    return version


def apply_version(version: DatasetVersion, root: ImageSet) -> ImageSet:
    """The version's images: `root` (its source, loaded with the version's settings) split, then changed.

    The split is made on the root set before anything is excluded, so a test image of the parent is a
    test image of every version, unless a version excludes it.
    """
    from engine.data.split import split_dataset

    if list(root.class_names) != list(version.class_names):
        raise DatasetError(f"{version.source} now has classes {', '.join(root.class_names)}; version {version.id} "
                           f"was made on {', '.join(version.class_names)}")
    s = version.settings
    split = split_dataset(root, float(s.get("val_fraction", 0.15)), float(s.get("test_fraction", 0.15)),
                          int(s.get("seed", 0)))
    splits = np.zeros(len(root), dtype=np.int8)
    splits[split.val], splits[split.test] = SPLIT_CODES["val"], SPLIT_CODES["test"]
    labels = np.asarray(root.labels, dtype=np.int32).copy()
    position = {sample_id: i for i, sample_id in enumerate(root.ids)}
    keep = np.ones(len(root), dtype=bool)
    missing = [c.file for c in version.changes if c.file not in position]
    if missing:
        raise DatasetError(f"version {version.id} names {len(missing)} image(s) {version.source} no longer has, "
                           f"e.g. {missing[0]!r}")
    for change in version.changes:
        if change.action == EXCLUDE:
            keep[position[change.file]] = False
        elif change.action == RELABEL:
            labels[position[change.file]] = version.class_names.index(change.new_label)
    kept = np.flatnonzero(keep)
    images = np.ascontiguousarray(root.images[kept])
    labels = labels[kept]
    line = describe_version(version)
    note = line[0].upper() + line[1:] + "."
    return ImageSet(images, labels, list(root.class_names), [root.ids[i] for i in kept], version.name,
                    fingerprint_arrays(images, labels, root.class_names), root.skipped,
                    None if root.masks is None else np.ascontiguousarray(root.masks[kept]), splits[kept],
                    root.layout, (*root.notes, note))


def load_version_images(source: str, image_size: int, load: Callable[..., ImageSet], *, workspace_root: Path,
                        max_per_class: int = 0, seed: int = 0, **options) -> ImageSet:
    """Loads `version:ID` (see `apply_version`); `load` is `load_images`, called for the root source.

    The root is loaded with the version's own cap, seed and manifest columns; a different `max_per_class`
    given here caps the version's images further (picked by `seed`).
    """
    version = load_version(workspace_root, source)
    s = version.settings
    columns = options.pop("columns", None)
    named = {k: str(s.get(k) or "") for k in ("path_column", "label_column", "split_column")}
    if any(named.values()):
        from engine.data.manifest import ManifestColumns

        columns = ManifestColumns(named["path_column"], named["label_column"], named["split_column"])
    root = load(version.source, image_size, max_per_class=int(s.get("max_per_class", 0)),
                seed=int(s.get("seed", 0)), columns=columns, **options)
    images = apply_version(version, root)
    if max_per_class <= 0 or max_per_class == int(s.get("max_per_class", 0)):
        return images  # the version's own cap (a clone's config repeats it): a relabel may leave a class above it
    keep = cap_per_class(images.labels, max_per_class, seed)
    picked, labels = np.ascontiguousarray(images.images[keep]), images.labels[keep]
    return ImageSet(picked, labels, images.class_names, [images.ids[i] for i in keep], images.source,
                    fingerprint_arrays(picked, labels, images.class_names), images.skipped, None,
                    images.splits[keep], images.layout, images.notes)


def diff(workspace_root: str | os.PathLike, version: DatasetVersion) -> list[Change]:
    """What `version` changes over its parent (all its changes when the parent is a plain source)."""
    if version_id(version.parent) is None:
        return list(version.changes)
    before = {c.file: c for c in load_version(workspace_root, version.parent).changes}
    return [c for c in version.changes if before.get(c.file) != c]


def changes_csv(changes) -> str:
    """Changes as CSV text (columns `file, action, old_label, new_label`), for download or the version folder."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CHANGE_COLUMNS)
    writer.writerows((c.file, c.action, c.old_label, c.new_label) for c in changes)
    return out.getvalue()


def _read_changes(text: str) -> list[Change]:
    reader = csv.DictReader(io.StringIO(text))
    if tuple(reader.fieldnames or ()) != CHANGE_COLUMNS:
        raise ValueError(f"{CHANGES_FILE} has columns {reader.fieldnames}, not {list(CHANGE_COLUMNS)}")
    return [Change(row["file"], row["action"], row["old_label"], row["new_label"]) for row in reader]


def _checked_change(item, name: str, by_id: dict[str, int], class_names: list[str]) -> Change:
    """A `Change` with its old label, or a DatasetError naming it (`name`, e.g. `change 2`)."""
    if isinstance(item, Change):
        file, action, new_label = item.file, item.action, item.new_label
    else:
        file, action, new_label = (*item, "", "")[:3]
    file, action, new_label = str(file).strip(), str(action).strip().lower(), str(new_label or "").strip()
    where = f"{name} ({file or 'no file'})"
    if action not in ACTIONS:
        raise DatasetError(f"{where}: unknown action {action!r}; use one of {', '.join(ACTIONS)}.")
    if file not in by_id:
        raise DatasetError(f"{where}: no image with that id in the data (ids look like {next(iter(by_id), '-')!r}).")
    if action == RELABEL and new_label not in class_names:
        raise DatasetError(f"{where}: {new_label!r} is not one of the classes ({', '.join(class_names)}); a relabel "
                           "must name an existing class (add a new class to the source itself).")
    return Change(file, action, class_names[by_id[file]], new_label if action == RELABEL else "")


def _claim_folder(folder: Path) -> Path:
    """Creates the next numbered version folder; two writers at once get different numbers."""
    taken = [int(p.name) for p in folder.iterdir() if _ID.match(p.name)]
    number = max(taken, default=0) + 1
    while True:
        try:
            (folder / str(number)).mkdir()
            return folder / str(number)
        except FileExistsError:
            number += 1


def _same_source(source: str) -> str:
    """A source string compared by the file it names (or as is, for a built-in name)."""
    path = Path(os.path.expanduser(str(source)))
    return os.path.realpath(path) if ("/" in str(source) or path.exists()) else str(source)
