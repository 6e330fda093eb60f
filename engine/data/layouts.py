"""Dataset layouts, detected and scanned before anything is decoded: class folders, split folders, manifests.

- class folders: `cats/*.jpg`, `dogs/*.jpg` (the split is made later, stratified and seeded);
- split folders: `train|training`, `val|valid|validation|dev` and `test|testing|eval` at the top, each
  holding the class folders; the given splits are used as they are, a missing one is carved from train;
- a manifest: a CSV/TSV with a path column and a label column (and optionally a split column), the
  paths relative to the manifest, as Kaggle-style datasets ship them.

A folder whose top-level folders are named like splits is never taken as a folder of classes.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from engine.data.folders import check_class_count, find_class_root, scan_class_dirs, scan_folder, visible_children
from engine.data.imageset import DatasetError, SkippedFile
from engine.data.manifest import ManifestColumns, is_manifest_file, read_manifest
from engine.data.split import SPLITS, split_of

LAYOUTS = {"class_folders": "class folders", "split_folders": "split folders", "manifest": "manifest (CSV/TSV)"}
SPLIT_TITLES = {"train": "train", "val": "validation", "test": "test"}
IMBALANCE_RATIO = 3.0  # largest / smallest training class above this is called imbalanced


@dataclass(frozen=True)
class DataScan:
    """What a dataset holds, before decoding.

    Args:
        layout: `class_folders`, `split_folders` or `manifest`.
        root: the folder the file paths are relative to.
        class_names: the classes in label order (sorted).
        files: `(relative path, label)` per candidate image.
        splits: the given split (`train`, `val` or `test`) per file, or None when the data names none.
        skipped: files left out, with reasons.
        notes: what a user should know (a split carved from train, a class missing from a split...).
        columns: for a manifest, the columns used.
        manifest: for a manifest, its file.
        header: for a manifest, all its columns.
    """

    layout: str
    root: Path
    class_names: list[str]
    files: list[tuple[str, int]]
    splits: tuple[str, ...] | None
    skipped: tuple[SkippedFile, ...]
    notes: tuple[str, ...] = ()
    columns: ManifestColumns | None = None
    manifest: Path | None = None
    header: tuple[str, ...] = ()

    @property
    def given_splits(self) -> tuple[str, ...]:
        """The splits the data itself names, in `SPLITS` order (empty for plain class folders)."""
        present = set(self.splits or ())
        return tuple(s for s in SPLITS if s in present)

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per class in each given split (`{"all": ...}` without given splits), every class listed."""
        parts = self.splits or ("all",) * len(self.files)
        tally = Counter((part, label) for part, (_, label) in zip(parts, self.files))
        names = self.given_splits or ("all",)
        return {part: {c: tally[(part, i)] for i, c in enumerate(self.class_names)} for part in names}

    def formats(self) -> dict[str, int]:
        """Candidate images per file extension (`.jpg`: 3200, ...), most common first."""
        return dict(Counter(Path(path).suffix.lower() for path, _ in self.files).most_common())

    def imbalance(self) -> float | None:
        """Largest / smallest class count among the training images (all images without given splits)."""
        counts = self.counts()
        part = counts.get("train") or counts.get("all") or {}
        sizes = [n for n in part.values()]
        return max(sizes) / min(sizes) if sizes and min(sizes) > 0 else None

    def total_bytes(self) -> int:
        """The candidate images' size on disk (one stat per file; a fraction of a second for 50,000)."""
        total = 0
        for path, _ in self.files:
            try:
                total += (self.root / path).stat().st_size
            except OSError:
                pass
        return total


def scan_dataset(source: str | os.PathLike, columns: ManifestColumns | None = None) -> DataScan:
    """Detects a folder's layout (or reads a manifest file) and lists its images, without decoding.

    Args:
        source: a folder (class folders, split folders, or holding one manifest) or a `.csv`/`.tsv` file.
        columns: manifest columns to use (blank ones are detected). Default: detect all.

    Returns:
        A `DataScan`.

    Raises:
        DatasetError: nothing usable (fewer than two classes, an unreadable manifest...); says what to do.
    """
    path = Path(source)
    columns = columns or ManifestColumns()
    if path.is_file():
        if not is_manifest_file(path):
            raise DatasetError(f"{path.name} is not a folder, a .zip or a .csv/.tsv manifest.")
        return _from_manifest(path, columns)
    root = find_class_root(path)
    children = visible_children(root)
    dirs = [c for c in children if c.is_dir()]
    if any(split_of(d.name) for d in dirs):
        return scan_split_folders(root)
    manifests = [c for c in children if c.is_file() and is_manifest_file(c)]
    if manifests:
        return _from_manifests(root, manifests, columns, has_class_dirs=bool(dirs))
    scan = scan_folder(root)
    return DataScan("class_folders", scan.root, scan.class_names, scan.files, None, scan.skipped)


def scan_split_folders(root: Path) -> DataScan:
    """Scans `train/`, `val/`, `test/` (any of their aliases), each holding class folders."""
    skipped: list[SkippedFile] = []
    notes: list[str] = []
    per_split: dict[str, dict[str, list[str]]] = {}
    for child in visible_children(root):
        split = split_of(child.name) if child.is_dir() else None
        if split is None:
            what = "folder" if child.is_dir() else "file"
            skipped.append(SkippedFile(child.name, f"{what} beside the split folders (not train, val or test)"))
            continue
        classes, found_skipped = scan_class_dirs(child, root)
        skipped.extend(found_skipped)
        if split in per_split:
            notes.append(f"{child.name}/ is a second {SPLIT_TITLES[split]} folder: its images join that split.")
        merged = per_split.setdefault(split, {})
        for name, files in classes.items():
            merged.setdefault(name, []).extend(files)
    class_names = sorted({name for classes in per_split.values() for name, files in classes.items() if files})
    check_class_count(class_names, root)
    index = {name: i for i, name in enumerate(class_names)}
    files, splits = [], []
    for split in SPLITS:
        for name, paths in sorted(per_split.get(split, {}).items()):
            for relative in sorted(paths):
                files.append((relative, index[name]))
                splits.append(split)
    notes += split_notes(class_names, [label for _, label in files], splits)
    return DataScan("split_folders", root, class_names, files, tuple(splits), tuple(skipped), tuple(notes))


def split_notes(class_names: list[str], labels: list[int], splits: list[str]) -> list[str]:
    """What to say about given splits: the ones carved from train, classes missing from a split or only in one."""
    notes = []
    present = [s for s in SPLITS if s in set(splits)]
    if "train" not in present:
        raise DatasetError("the data names no training split (a train/ or training/ folder, or `train` in the "
                           "split column); add one.")
    for split in ("val", "test"):
        if split not in present:
            notes.append(f"No {SPLIT_TITLES[split]} split is given: it is carved from train "
                         "(stratified, by the split seed and share).")
    seen = {(split, label) for split, label in zip(splits, labels)}
    only_in, missing = [], []
    for label, name in enumerate(class_names):
        where = [s for s in present if (s, label) in seen]
        if len(where) == 1 and len(present) > 1:
            only_in.append(f"{name!r} ({SPLIT_TITLES[where[0]]})")
        elif len(where) < len(present):
            missing.append(f"{name!r} (not in {', '.join(SPLIT_TITLES[s] for s in present if s not in where)})")
    if only_in:
        notes.append(f"Classes found in only one split: {', '.join(only_in)}.")
    if missing:
        notes.append(f"Classes missing from a split: {', '.join(missing)}.")
    absent = [n for i, n in enumerate(class_names) if ("train", i) not in seen]
    if absent:
        notes.append(f"No training images for {', '.join(map(repr, absent))}: the model cannot learn "
                     f"{'these classes' if len(absent) > 1 else 'this class'}.")
    return notes


def _from_manifests(root: Path, manifests: list[Path], columns: ManifestColumns, *, has_class_dirs: bool) -> DataScan:
    """The first manifest whose columns are found; class folders beside unusable CSVs are used as class folders."""
    errors = []
    for manifest in sorted(manifests, key=_manifest_preference):
        try:
            scan = _from_manifest(manifest, columns)
        except DatasetError as error:
            errors.append(error)
            continue
        others = [m.name for m in manifests if m != manifest]
        note = (f"Other tables beside it were not used: {', '.join(others)}.",) if others else ()
        return DataScan(**{**scan.__dict__, "notes": scan.notes + note})
    if has_class_dirs:
        scan = scan_folder(root)
        return DataScan("class_folders", scan.root, scan.class_names, scan.files, None, scan.skipped)
    raise errors[0]


def _manifest_preference(path: Path) -> tuple[int, str]:
    preferred = ("labels", "manifest", "annotations", "metadata", "train", "data")
    stem = path.stem.lower()
    return (preferred.index(stem) if stem in preferred else len(preferred), path.name)


def _from_manifest(manifest: Path, columns: ManifestColumns) -> DataScan:
    table = read_manifest(manifest, columns)
    class_names = sorted(set(table.labels))
    check_class_count(class_names, manifest)
    index = {name: i for i, name in enumerate(class_names)}
    files = [(path, index[label]) for path, label in zip(table.paths, table.labels)]
    notes = list(table.notes)
    splits = None
    if table.splits is not None:
        splits = tuple(table.splits)
        notes += split_notes(class_names, [label for _, label in files], list(splits))
    return DataScan("manifest", manifest.parent, class_names, files, splits, tuple(table.skipped), tuple(notes),
                    table.columns, manifest, table.header)
