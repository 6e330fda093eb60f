"""Image folders (one sub-folder per class): scanning, parallel decoding and a memmap cache."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from engine.data.images import ImageReadError, is_image_file, read_image
from engine.data.imageset import SPLIT_CODES, DatasetError, ImageSet, SkippedFile, cap_per_class

logger = logging.getLogger(__name__)

IGNORED_NAMES = frozenset({"__MACOSX", ".DS_Store", "Thumbs.db", "desktop.ini"})
DECODED_DIR = "decoded"
_CACHE_VERSION = 2
_DECODE_CHUNK = 16  # files per task: one future per file costs ~90 us, a third of a small JPEG's decode
_PROBE_CHUNKS = 3  # chunks decoded on one thread, then as many per thread on several, to time both


def is_ignored(name: str) -> bool:
    """Returns whether a file or folder name is OS clutter to ignore silently (hidden, `__MACOSX`...)."""
    return name.startswith(".") or name in IGNORED_NAMES


def visible_children(folder: Path) -> list[Path]:
    """A folder's entries, sorted, without OS clutter (hidden files, `__MACOSX`...)."""
    return sorted(p for p in folder.iterdir() if not is_ignored(p.name))


def _is_split_name(name: str) -> bool:
    from engine.data.split import split_of

    return split_of(name) is not None


def find_class_root(folder: Path) -> Path:
    """Returns the folder holding the class folders (or split folders), looking through single wrapper folders.

    A zip of `pets/` unpacks to `pets/cat/...`, `pets/dog/...`; this returns `pets`. A single folder
    named like a split (`train/`) is not a wrapper, nor is a folder beside a CSV/TSV manifest.

    Args:
        folder: an existing directory.

    Returns:
        `folder`, or the innermost single sub-folder that itself holds sub-folders
        (when everything above it holds only that one folder and no images).
    """
    folder = Path(folder)
    for _ in range(16):  # a wrapper chain deeper than this is not a wrapper
        children = visible_children(folder)
        dirs = [c for c in children if c.is_dir()]
        files = [c for c in children if c.is_file() and (is_image_file(c.name) or c.suffix.lower() in (".csv", ".tsv"))]
        if (len(dirs) != 1 or files or _is_split_name(dirs[0].name)
                or not any(c.is_dir() for c in visible_children(dirs[0]))):
            return folder
        folder = dirs[0]
    return folder


@dataclass(frozen=True)
class FolderScan:
    """The image files of a class folder tree, before decoding.

    Args:
        root: the folder holding the class folders.
        class_names: sorted names of the class folders that hold at least one image file.
        files: `(relative path, label)` per candidate image, sorted by path within each class.
        skipped: files that are not candidate images (wrong type, outside class folders).
    """

    root: Path
    class_names: list[str]
    files: list[tuple[str, int]]
    skipped: tuple[SkippedFile, ...]


def scan_class_dirs(folder: Path, root: Path) -> tuple[dict[str, list[str]], list[SkippedFile]]:
    """Lists each class folder of `folder` with its image files (recursively), paths relative to `root`.

    Returns:
        `{class name: sorted relative paths}` (a class may have none) and the files that were skipped.
    """
    skipped: list[SkippedFile] = []
    per_class: dict[str, list[str]] = {}
    for child in visible_children(folder):
        if child.is_file():
            skipped.append(SkippedFile(child.relative_to(root).as_posix(), "not inside a class folder"))
            continue
        if not child.is_dir():
            continue
        found = []
        for dirpath, dirnames, filenames in os.walk(child, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if not is_ignored(d))
            for name in filenames:
                if is_ignored(name):
                    continue
                relative = Path(dirpath, name).relative_to(root).as_posix()
                if is_image_file(name):
                    found.append(relative)
                else:
                    suffix = Path(name).suffix.lower() or "no extension"
                    skipped.append(SkippedFile(relative, f"not an image file type ({suffix})"))
        per_class[child.name] = sorted(found)
    return per_class, skipped


def scan_folder(folder: Path) -> FolderScan:
    """Lists the class folders and their image files (recursively) without decoding anything.

    Args:
        folder: the folder holding class folders (or a single wrapper folder around them).

    Returns:
        A `FolderScan`.

    Raises:
        DatasetError: no class folders, or fewer than two classes with images.
    """
    root = find_class_root(folder)
    per_class, skipped = scan_class_dirs(root, root)
    if not per_class:
        raise DatasetError(f"{folder} has no class folders. Put the images in one sub-folder per class, "
                           "e.g. cats/*.jpg and dogs/*.jpg.")
    class_names = sorted(name for name, found in per_class.items() if found)
    empty = sorted(name for name, found in per_class.items() if not found)
    if empty:
        logger.warning("ignoring class folders without images: %s", ", ".join(empty))
    check_class_count(class_names, folder)
    files = [(path, label) for label, name in enumerate(class_names) for path in per_class[name]]
    return FolderScan(root, class_names, files, tuple(skipped))


def check_class_count(class_names: list[str], folder: Path) -> None:
    """Raises DatasetError unless there are at least two classes with images."""
    if not class_names:
        raise DatasetError(f"{folder} has no readable images in its class folders. "
                           "Add .jpg, .png, .bmp, .gif or .webp images to one sub-folder per class.")
    if len(class_names) < 2:
        raise DatasetError(f"{folder} has only one class with images ({class_names[0]!r}); a classifier needs "
                           "at least two. Add a second class folder next to it.")


def load_scan(scan, image_size: int, *, source: str, max_per_class: int = 0, seed: int = 0,
              cache_dir: Path | None = None, progress: Callable[[int, int], None] | None = None) -> ImageSet:
    """Decodes the images of a scan into an `ImageSet`, through a disk cache when given one.

    Args:
        scan: an `engine.data.layouts.DataScan` (root, class_names, files, splits, skipped, layout, notes).
        image_size: side of the square images.
        source: the source string to record in the set.
        max_per_class: decode at most this many images per class, picked at random by `seed` (0 = all).
        seed: seed for that pick.
        cache_dir: where `decoded/<key>.npy` caches live; None decodes into memory.
        progress: `progress(done, total)`, called as images are decoded (from decoding threads); it may
            raise (e.g. `JobCancelled`) to stop, leaving no partial cache behind. Default: nothing.

    Returns:
        An `ImageSet` whose images are a read-only memmap when cached.
    """
    files, splits = scan.files, scan.splits
    if max_per_class > 0:
        keep = cap_per_class(np.array([label for _, label in files]), max_per_class, seed)
        files = [files[i] for i in keep]
        splits = None if splits is None else tuple(splits[i] for i in keep)
    stats = [(path, *_size_and_mtime(scan.root / path)) for path, _ in files]
    key = _cache_key(scan.root, stats, image_size, [scan.layout, [label for _, label in files], splits])
    if cache_dir is not None:
        cached = _read_cache(Path(cache_dir) / DECODED_DIR, key, source)
        if cached is not None:
            _touch(Path(cache_dir) / DECODED_DIR / f"{key}.json")  # the cache's least-recently-used clock
            logger.info("loaded %d decoded images from the cache (%s)", len(cached), key[:12])
            if progress is not None:
                progress(len(files), len(files))
            return cached
    started = time.perf_counter()
    paths = [scan.root / path for path, _ in files]
    if cache_dir is None:
        images, reasons = _decode_into(np.empty((len(paths), image_size, image_size, 3), np.uint8), paths, image_size,
                                       progress)
        ok = np.array([r is None for r in reasons], dtype=bool)
        images = images[ok] if not ok.all() else images
    else:
        images, reasons, ok = _decode_to_cache(Path(cache_dir) / DECODED_DIR, key, paths, image_size, progress)
    elapsed = time.perf_counter() - started
    logger.info("decoded %d images in %.1f s (%.0f images/s)", len(paths), elapsed, len(paths) / max(elapsed, 1e-9))
    skipped = list(scan.skipped) + [SkippedFile(path, reason) for (path, _), reason in zip(files, reasons)
                                    if reason is not None]
    kept = [f for f, good in zip(files, ok) if good]
    labels = np.array([label for _, label in kept], dtype=np.int32)
    class_names = list(scan.class_names)
    present = sorted(set(labels.tolist()))
    present_names = [class_names[i] for i in present]
    if len(present) < len(class_names) and splits is None:  # a class lost all its images to decoding errors
        class_names = present_names
        labels = np.searchsorted(np.array(present), labels).astype(np.int32)
    check_class_count(present_names, scan.root)
    kept_splits = None if splits is None else np.array([SPLIT_CODES[p] for p, good in zip(splits, ok) if good],
                                                       dtype=np.int8)
    kept_sizes = [(path, size) for (path, size, _), good in zip(stats, ok) if good]
    extra = [] if splits is None else [scan.layout, kept_splits.tolist()]
    fingerprint = hashlib.sha256(json.dumps([image_size, kept_sizes, *extra]).encode()).hexdigest()
    result = ImageSet(images, labels, class_names, [p for p, _ in kept], source, fingerprint, tuple(skipped),
                      splits=kept_splits, layout=scan.layout, notes=tuple(scan.notes))
    if cache_dir is not None:
        _write_sidecar(Path(cache_dir) / DECODED_DIR, key, result)
    return result


def _touch(path: Path) -> None:
    try:
        os.utime(path)
    except OSError:
        pass


def _size_and_mtime(path: Path) -> tuple[int, int]:
    try:
        stat = path.stat()
        return stat.st_size, stat.st_mtime_ns
    except OSError:
        return -1, 0


def _cache_key(root: Path, stats: list[tuple[str, int, int]], image_size: int, extra: list) -> str:
    payload = json.dumps([_CACHE_VERSION, str(root.resolve()), image_size, stats, extra])
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def decode_threads() -> int:
    """Threads for decoding big images: one per core this process may use, at most 8."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))


def _decode_into(out: np.ndarray, paths: list[Path], image_size: int,
                 progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, list[str | None]]:
    """Decodes `paths[i]` into `out[i]`; returns `out` and a skip reason per file (None when decoded).

    JPEGs decode without the GIL (simplejpeg), so 224 px ones decode about 2.7x as fast on two
    threads as on one; but other small images (PNG thumbnails, via Pillow) spend a third of their
    time in Python, and on a busy two-core machine two threads decoding those were slower than
    one. So this measures instead of guessing: it decodes a first chunk on this thread, the next
    chunks on `decode_threads()` threads, and the rest the faster way. Files are handed out in chunks: a future per file costs about a third
    of a small image's decode.
    """
    reasons: list[str | None] = [None] * len(paths)
    done = [0]
    lock = threading.Lock()

    def decode(start: int) -> None:
        end = min(start + _DECODE_CHUNK, len(paths))
        for index in range(start, end):
            try:
                out[index] = read_image(paths[index], image_size)
            except ImageReadError as error:
                reasons[index] = error.reason
        if progress is not None:
            with lock:
                done[0] += end - start
                count = done[0]
            progress(count, len(paths))

    starts = list(range(0, len(paths), _DECODE_CHUNK))
    threads = min(decode_threads(), len(starts))
    if threads <= 1:
        for start in starts:
            decode(start)
        return out, reasons
    if len(starts) < 2 * _PROBE_CHUNKS * (threads + 1):  # too few to measure; threads, which big images need
        _decode_chunks(decode, starts, threads)
        return out, reasons
    serial = _timed(lambda: [decode(start) for start in starts[:_PROBE_CHUNKS]]) / _PROBE_CHUNKS
    probe = starts[_PROBE_CHUNKS:_PROBE_CHUNKS * (threads + 1)]
    parallel = _timed(lambda: _decode_chunks(decode, probe, threads)) / len(probe)
    rest = starts[_PROBE_CHUNKS * (threads + 1):]
    logger.debug("decoding: %.2f ms per image on one thread, %.2f ms on %d", serial / _DECODE_CHUNK * 1e3,
                 parallel / _DECODE_CHUNK * 1e3, threads)
    if parallel < serial:
        _decode_chunks(decode, rest, threads)
    else:
        for start in rest:
            decode(start)
    return out, reasons


def _decode_chunks(decode, starts: list[int], threads: int) -> None:
    with ThreadPoolExecutor(threads, thread_name_prefix="decode") as pool:
        list(pool.map(decode, starts))


def _timed(work) -> float:
    began = time.perf_counter()
    work()
    return time.perf_counter() - began


class _RowFile:
    """The rows of a `.npy` file of uint8 images, written and read with pwrite/pread (thread-safe).

    Not a memmap: pages written through a mapping stay in the process's resident set until it ends,
    so decoding 20,000 images that way grew the decode's RSS by their size; written with pwrite they
    only pass through the page cache, and the process's memory stays flat.
    """

    def __init__(self, path: Path, shape: tuple[int, ...]):
        header = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)  # header + sparse file
        self.offset, self.row_bytes = header.offset, int(np.prod(shape[1:]))
        del header
        self.fd = os.open(path, os.O_RDWR)

    def __setitem__(self, index: int, row: np.ndarray) -> None:
        os.pwrite(self.fd, memoryview(np.ascontiguousarray(row, dtype=np.uint8)).cast("B"),
                  self.offset + index * self.row_bytes)

    def read(self, index: int) -> bytes:
        return os.pread(self.fd, self.row_bytes, self.offset + index * self.row_bytes)

    def close(self) -> None:
        os.close(self.fd)


def _decode_to_cache(folder: Path, key: str, paths: list[Path], image_size: int, progress=None):
    """Decodes straight into a `.npy` file (by pwrite), then atomically publishes it as `<key>.npy`."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{key}.{uuid.uuid4().hex[:8]}.tmp.npy"
    shape = (len(paths), image_size, image_size, 3)
    try:
        staging = _RowFile(tmp, shape)
        try:
            _, reasons = _decode_into(staging, paths, image_size, progress)
            ok = np.array([r is None for r in reasons], dtype=bool)
            if not ok.all():  # copy the good rows into a file of the right length
                compact = folder / f".{key}.{uuid.uuid4().hex[:8]}.tmp.npy"
                final = _RowFile(compact, (int(ok.sum()), *shape[1:]))
                try:
                    for row, index in enumerate(np.flatnonzero(ok).tolist()):
                        os.pwrite(final.fd, staging.read(index), final.offset + row * final.row_bytes)
                finally:
                    final.close()
                os.replace(compact, tmp)
        finally:
            staging.close()
        os.replace(tmp, folder / f"{key}.npy")
    finally:
        tmp.unlink(missing_ok=True)
    return np.load(folder / f"{key}.npy", mmap_mode="r"), reasons, ok


def _write_sidecar(folder: Path, key: str, images: ImageSet) -> None:
    sidecar = {"version": _CACHE_VERSION, "labels": images.labels.tolist(), "ids": images.ids,
               "class_names": images.class_names, "fingerprint": images.fingerprint,
               "skipped": [[s.path, s.reason] for s in images.skipped], "layout": images.layout,
               "splits": None if images.splits is None else images.splits.tolist(), "notes": list(images.notes)}
    tmp = folder / f".{key}.{uuid.uuid4().hex[:8]}.tmp.json"
    tmp.write_text(json.dumps(sidecar))
    os.replace(tmp, folder / f"{key}.json")


def _read_cache(folder: Path, key: str, source: str) -> ImageSet | None:
    """The cached set for `key`, or None when it is missing or unreadable."""
    try:
        sidecar = json.loads((folder / f"{key}.json").read_text())
        images = np.load(folder / f"{key}.npy", mmap_mode="r")
        labels = np.array(sidecar["labels"], dtype=np.int32)
        if sidecar.get("version") != _CACHE_VERSION or images.shape[0] != labels.shape[0]:
            return None
        splits = sidecar.get("splits")
        return ImageSet(images, labels, list(sidecar["class_names"]), list(sidecar["ids"]), source,
                        sidecar["fingerprint"], tuple(SkippedFile(p, r) for p, r in sidecar["skipped"]),
                        splits=None if splits is None else np.array(splits, dtype=np.int8),
                        layout=sidecar.get("layout", "class_folders"), notes=tuple(sidecar.get("notes", ())))
    except (OSError, ValueError, KeyError, TypeError):
        return None
