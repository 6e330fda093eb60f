"""`load_images`: one entry point for every kind of source (built-in name, folder, manifest or zip); `scan_source`."""

from __future__ import annotations

import logging
import os
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Callable

from engine.data.archive import extract_upload, extract_zip
from engine.data.builtin import BUILTIN_SOURCES, load_builtin
from engine.data.cache import prune
from engine.data.folders import load_scan
from engine.data.imageset import DatasetError, ImageSet
from engine.data.layouts import DataScan, scan_dataset
from engine.data.manifest import ManifestColumns, is_manifest_file
from engine.data.versions import load_version_images, version_id

logger = logging.getLogger(__name__)


DATA_ROOTS_ENV = "APERTURE_DATA_ROOTS"  # os.pathsep-separated folders; set: folder/zip sources must lie inside


def data_roots() -> list[Path]:
    """The configured data roots (resolved), or [] when any path on the server may be used."""
    raw = os.environ.get(DATA_ROOTS_ENV, "")
    return [Path(os.path.realpath(os.path.expanduser(p))) for p in raw.split(os.pathsep) if p.strip()]


def check_source_allowed(source: str | os.PathLike) -> None:
    """Raises DatasetError unless a folder/zip source lies inside `$APERTURE_DATA_ROOTS` (or the workspace).

    Built-in names always pass; with no roots configured every path does. Symlinks and `..`
    are resolved first, so a link inside a root that points outside is refused. The check
    comes before any existence test, so nothing is revealed about paths outside the roots.
    """
    roots = data_roots()
    if not roots or str(source) in BUILTIN_SOURCES or version_id(str(source)) is not None:
        return  # a version's root source is checked when it loads
    from engine.store import default_root  # the workspace's own uploads are always allowed

    real = Path(os.path.realpath(os.path.expanduser(str(source))))
    if not any(real == root or root in real.parents for root in [*roots, default_root()]):
        raise DatasetError(f"{source!r} is outside the allowed data folders ({DATA_ROOTS_ENV}): "
                           f"{os.pathsep.join(str(r) for r in roots)}. Put the data there, or upload a zip.")


def load_images(source: str, image_size: int, *, max_per_class: int = 0, seed: int = 0,
                cache_dir: Path | None = None, columns: ManifestColumns | None = None,
                progress: Callable[[int, int], None] | None = None) -> ImageSet:
    """Loads a dataset as square uint8 RGB images with integer labels. Never imports TensorFlow.

    Args:
        source: a built-in name (`digits`, `mnist`, `fashion_mnist`, `cifar10`, `shapes`), a folder
            (class folders, split folders `train/ val/ test/` of class folders, or one holding a CSV/TSV
            manifest), a `.csv`/`.tsv` manifest, a `.zip` of any of these, or a dataset version
            `version:ID` (`engine.data.versions`; stored in the workspace that holds `cache_dir`).
        image_size: side of the square output images in pixels, at least 1.
        max_per_class: keep at most this many images per class, picked at random by `seed`
            (0 = all; for `shapes`, how many to generate, default 300).
        seed: seed for that pick and for `shapes` generation.
        cache_dir: where to keep extracted uploads (`uploads/`) and decoded folder images
            (`decoded/`), so a second load is near-instant; None decodes into memory.
        columns: a manifest's columns (blank ones detected). Default: detect.
        progress: `progress(done, total)` while images decode (see `load_scan`).

    Returns:
        An `ImageSet`; unreadable files of a folder are listed in its `skipped`, the splits the data
        gives in its `splits`.

    Raises:
        DatasetError: the source does not exist, is not usable, or is not cached and cannot
            be downloaded; the message says what to do.
    """
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise DatasetError(f"image_size={image_size!r} must be a positive whole number of pixels, e.g. 32.")
    if max_per_class < 0:
        raise DatasetError(f"max_per_class={max_per_class!r} must be 0 (all images) or more.")
    if source in BUILTIN_SOURCES:
        return load_builtin(source, image_size, max_per_class=max_per_class, seed=seed)
    if version_id(source) is not None:  # a dataset version: its root source, split pinned, then its changes
        from engine.store import default_root

        root = Path(cache_dir).parent if cache_dir is not None else default_root()  # cache_dir: <workspace>/cache
        return load_version_images(source, image_size, load_images, workspace_root=root, max_per_class=max_per_class,
                                   seed=seed, cache_dir=cache_dir, progress=progress)
    check_source_allowed(source)
    options = {"max_per_class": max_per_class, "seed": seed, "source": str(source), "progress": progress}
    if cache_dir is None:
        with tempfile.TemporaryDirectory(prefix="aperture-zip-") as scratch:
            return load_scan(scan_source(source, scratch_dir=Path(scratch), columns=columns), image_size, **options)
    started = time.time() - 1  # mtimes may be rounded down to the second
    scan = scan_source(source, cache_dir=Path(cache_dir), columns=columns)
    images = load_scan(scan, image_size, cache_dir=Path(cache_dir), **options)
    prune(cache_dir, keep_used_since=started)
    return images


def scan_source(source: str, *, cache_dir: Path | None = None, scratch_dir: Path | None = None,
                columns: ManifestColumns | None = None) -> DataScan:
    """Detects a folder/zip/manifest source's layout and lists its images, without decoding (see `scan_dataset`).

    Args:
        source: a folder, a `.zip` or a `.csv`/`.tsv` manifest.
        cache_dir: where a zip is extracted (`uploads/<digest>`, reused); or
        scratch_dir: a temporary folder to extract it into instead (gone with the scan's files).
        columns: a manifest's columns (blank ones detected).

    Raises:
        DatasetError: no such file or folder, or nothing usable in it.
    """
    if version_id(source) is not None:  # a version's layout is its root source's
        from engine.data.versions import load_version
        from engine.store import default_root

        root = Path(cache_dir).parent if cache_dir is not None else default_root()
        source = load_version(root, source).source
    check_source_allowed(source)
    path = Path(os.path.expanduser(str(source)))
    if not path.exists():
        raise DatasetError(f"{source!r} is not a built-in dataset ({', '.join(BUILTIN_SOURCES)}) and no such "
                           "file or folder exists. Check the path, or pick a built-in dataset.")
    if path.is_dir() or (path.is_file() and is_manifest_file(path)):
        return scan_dataset(path, columns)
    if not path.is_file() or not zipfile.is_zipfile(path):
        raise DatasetError(f"{path.name} is neither a folder nor a zip archive (nor a .csv/.tsv manifest). Give a folder "
                           "holding one sub-folder of images per class (or train/val/test folders of them), or a "
                           ".zip of it.")
    if cache_dir is not None:
        return scan_dataset(extract_upload(path, cache_dir), columns)
    if scratch_dir is None:
        raise DatasetError(f"{path.name}: scanning a zip needs a folder to extract it into")
    return scan_dataset(extract_zip(path, scratch_dir), columns)
