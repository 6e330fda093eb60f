"""CSV/TSV manifests: a path column and a label column (and optionally a split column), detected or named.

Paths are relative to the manifest's folder; a path that leaves it (`..`, an absolute path, a
symbolic link out) is skipped, never read.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from engine.data.images import is_image_file
from engine.data.imageset import DatasetError, SkippedFile
from engine.data.split import split_of

MANIFEST_EXTENSIONS = frozenset({".csv", ".tsv"})
MAX_MANIFEST_BYTES = 512 * 1024**2
PATH_NAMES = ("path", "filepath", "file_path", "image_path", "filename", "file_name", "file", "image", "img",
              "image_id", "images")
LABEL_NAMES = ("label", "class", "class_name", "category", "target", "labels", "species", "y")
SPLIT_COLUMN_NAMES = ("split", "subset", "set", "partition", "fold_name", "dataset")
NO_COLUMN = "none"


def is_manifest_file(path: Path) -> bool:
    return path.suffix.lower() in MANIFEST_EXTENSIONS


@dataclass(frozen=True)
class ManifestColumns:
    """Which manifest columns hold the paths, labels and splits; blank = detect, `none` (split) = no split column."""

    path: str = ""
    label: str = ""
    split: str = ""

    @classmethod
    def from_config(cls, data) -> ManifestColumns:
        """From a `DataConfig`'s `path_column`, `label_column` and `split_column`."""
        return cls(data.path_column.strip(), data.label_column.strip(), data.split_column.strip())

    def is_default(self) -> bool:
        return not (self.path or self.label or self.split)


@dataclass(frozen=True)
class ManifestTable:
    """A manifest's usable rows: paths relative to its folder, labels, and splits (or None)."""

    columns: ManifestColumns
    header: tuple[str, ...]
    paths: list[str]
    labels: list[str]
    splits: list[str] | None
    skipped: list[SkippedFile]
    notes: list[str]


def read_manifest(manifest: Path, columns: ManifestColumns | None = None) -> ManifestTable:
    """Reads a CSV/TSV manifest, detecting the columns not named in `columns`.

    Args:
        manifest: the `.csv` or `.tsv` file.
        columns: the columns to use; blank ones are detected (paths: the column whose values are image
            file names; labels: a column named like `label`/`class`, else the one with the fewest distinct
            values; splits: a column whose values all name splits).

    Returns:
        A `ManifestTable`; rows without a usable image are in its `skipped`.

    Raises:
        DatasetError: the file cannot be read, or a column is missing or cannot be detected.
    """
    columns = columns or ManifestColumns()
    header, rows = _read_rows(manifest)
    path_col = _named(columns.path, header, manifest, "path") or _detect_path(header, rows, manifest)
    label_col = _named(columns.label, header, manifest, "label") or _detect_label(header, rows, path_col, manifest)
    split_col = None
    if columns.split.lower() != NO_COLUMN:
        split_col = _named(columns.split, header, manifest, "split") or _detect_split(header, rows, {path_col,
                                                                                                     label_col})
    root = Path(os.path.realpath(manifest.parent))
    paths, labels, splits, skipped, seen = [], [], [], [], set()
    for number, row in enumerate(rows, start=2):
        raw = (row.get(path_col) or "").strip()
        label = (row.get(label_col) or "").strip()
        where = raw or f"row {number}"
        if not raw:
            skipped.append(SkippedFile(where, "no path in the manifest row"))
            continue
        relative = _inside(root, raw)
        if relative is None:
            skipped.append(SkippedFile(raw, "outside the manifest's folder"))
        elif not label:
            skipped.append(SkippedFile(raw, f"no label (column {label_col!r} is empty)"))
        elif not is_image_file(relative):
            skipped.append(SkippedFile(raw, f"not an image file type ({Path(raw).suffix.lower() or 'no extension'})"))
        elif relative in seen:
            skipped.append(SkippedFile(raw, "listed twice in the manifest"))
        elif not (root / relative).is_file():
            skipped.append(SkippedFile(raw, "listed in the manifest but missing"))
        else:
            split = split_of(row.get(split_col) or "") if split_col else "train"
            if split is None:
                skipped.append(SkippedFile(raw, f"unknown split {row.get(split_col)!r} (use train, val or test)"))
                continue
            seen.add(relative)
            paths.append(relative)
            labels.append(label)
            splits.append(split)
    notes = [f"Manifest {manifest.name}: paths from column {path_col!r}, labels from {label_col!r}"
             + (f", splits from {split_col!r}." if split_col else "; no split column.")]
    used = ManifestColumns(path_col, label_col, split_col or NO_COLUMN)
    return ManifestTable(used, tuple(header), paths, labels, splits if split_col else None, skipped, notes)


def _read_rows(manifest: Path) -> tuple[list[str], list[dict[str, str]]]:
    try:
        size = manifest.stat().st_size
        if size > MAX_MANIFEST_BYTES:
            raise DatasetError(f"{manifest.name} is {size / 1024**2:,.0f} MB; manifests up to "
                               f"{MAX_MANIFEST_BYTES / 1024**2:,.0f} MB are read.")
        text = manifest.read_text(encoding="utf-8-sig", errors="strict")
    except UnicodeDecodeError:
        raise DatasetError(f"{manifest.name} is not UTF-8 text; save it as UTF-8 CSV.") from None
    except OSError as error:
        raise DatasetError(f"cannot read {manifest.name} ({error.strerror or error})") from None
    if "\x00" in text:
        raise DatasetError(f"{manifest.name} holds binary data, not a CSV/TSV table.")
    delimiter = "\t" if manifest.suffix.lower() == ".tsv" else _sniff_delimiter(text)
    try:
        reader = csv.DictReader(text.splitlines(), delimiter=delimiter)
        header = [h.strip() for h in (reader.fieldnames or [])]
        reader.fieldnames = header
        rows = [row for row in reader if any((v or "").strip() for v in row.values() if isinstance(v, str))]
    except csv.Error as error:
        raise DatasetError(f"{manifest.name} is not a readable CSV/TSV table ({error}).") from None
    if len(header) < 2 or not rows:
        raise DatasetError(f"{manifest.name} needs a header row and at least two columns (a path and a label); "
                           f"found columns {header or 'none'} and {len(rows)} rows.")
    return header, rows


def _sniff_delimiter(text: str) -> str:
    try:
        return csv.Sniffer().sniff(text[:8192], delimiters=",;\t|").delimiter
    except csv.Error:
        return ","


def _named(name: str, header: list[str], manifest: Path, what: str) -> str | None:
    if not name:
        return None
    match = next((h for h in header if h == name), None) or next((h for h in header if h.lower() == name.lower()),
                                                                 None)
    if match is None:
        raise DatasetError(f"{manifest.name} has no column {name!r} for the {what}s; its columns are "
                           f"{', '.join(header)}.")
    return match


def _values(rows: list[dict[str, str]], column: str, limit: int = 2000) -> list[str]:
    return [(row.get(column) or "").strip() for row in rows[:limit]]


def _detect_path(header: list[str], rows: list[dict[str, str]], manifest: Path) -> str:
    def share(column: str) -> float:
        values = [v for v in _values(rows, column) if v]
        return sum(is_image_file(v) for v in values) / len(values) if values else 0.0

    scored = sorted(header, key=lambda c: (-share(c), _rank(c, PATH_NAMES)))
    if share(scored[0]) < 0.5:
        raise DatasetError(f"{manifest.name}: no column holds image file names (.jpg, .png...); its columns are "
                           f"{', '.join(header)}. Name the path column (data.path_column).")
    return scored[0]


def _detect_label(header: list[str], rows: list[dict[str, str]], path_col: str, manifest: Path) -> str:
    candidates = [c for c in header if c != path_col]
    named = [c for c in candidates if c.lower() in LABEL_NAMES]
    if named:
        return min(named, key=lambda c: _rank(c, LABEL_NAMES))
    usable = []
    paths = _values(rows, path_col)
    for column in candidates:
        values = _values(rows, column)
        present = [v for v in values if v]
        distinct = len(set(present))
        if present and 2 <= distinct <= max(2, len(present) // 2) and not all(split_name(v) for v in present):
            # A label that is also a folder of the path (`img/cat/1.jpg`, `cat`) is the likeliest class.
            in_path = sum(bool(v) and v in Path(p).parts for v, p in zip(values, paths)) / len(values)
            usable.append((-in_path, distinct, column))
    if not usable:
        raise DatasetError(f"{manifest.name}: no column looks like class labels; its columns are "
                           f"{', '.join(header)}. Name the label column (data.label_column).")
    return min(usable)[2]


def _detect_split(header: list[str], rows: list[dict[str, str]], used: set[str]) -> str | None:
    for column in sorted((c for c in header if c not in used), key=lambda c: _rank(c, SPLIT_COLUMN_NAMES)):
        values = [v for v in _values(rows, column) if v]
        if values and all(split_name(v) for v in values):
            return column
    return None


def split_name(value: str) -> bool:
    return split_of(value) is not None


def _rank(column: str, names: tuple[str, ...]) -> int:
    return names.index(column.lower()) if column.lower() in names else len(names)


def _inside(root: Path, raw: str) -> str | None:
    """`raw` as a posix path relative to `root`, or None when it leaves it (absolute elsewhere, `..`, links)."""
    candidate = Path(raw.replace("\\", "/"))
    full = Path(os.path.realpath(candidate if candidate.is_absolute() else root / candidate))
    if full != root and root not in full.parents:
        return None
    return full.relative_to(root).as_posix()
