"""The workspace's data cache (decoded images and extracted uploads): its size, and pruning it to a cap.

Everything in the cache can be rebuilt from its source, so pruning only costs a re-decode.
Entries are dropped least recently used first; a set a running job has memory-mapped stays
readable after its file is removed (POSIX keeps the inode until it is closed).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from engine.data.archive import UPLOADS_DIR
from engine.data.folders import DECODED_DIR

logger = logging.getLogger(__name__)

CACHE_LIMIT_ENV = "APERTURE_CACHE_LIMIT_GB"
DEFAULT_LIMIT_GB = 20.0


@dataclass(frozen=True)
class CacheEntry:
    """One rebuildable thing in the cache: a decoded set (`.npy` + sidecar) or an extracted upload."""

    kind: str  # "decoded" or "upload"
    name: str
    paths: tuple[Path, ...]
    size_bytes: int
    used_at: float  # last time it was read or written (mtime; reads touch it)


def limit_bytes() -> int:
    """The cache cap from `$APERTURE_CACHE_LIMIT_GB` (default 20 GB); 0 or less means no cap."""
    raw = os.environ.get(CACHE_LIMIT_ENV, "")
    try:
        gigabytes = float(raw) if raw.strip() else DEFAULT_LIMIT_GB
    except ValueError:
        logger.warning("%s=%r is not a number: using %g GB", CACHE_LIMIT_ENV, raw, DEFAULT_LIMIT_GB)
        gigabytes = DEFAULT_LIMIT_GB
    return int(gigabytes * 1e9)


def entries(cache_dir: Path) -> list[CacheEntry]:
    """The cache's entries, least recently used first (temporary files of a write in progress are left out)."""
    cache_dir = Path(cache_dir)
    found = []
    decoded = cache_dir / DECODED_DIR
    if decoded.is_dir():
        for sidecar in decoded.glob("*.json"):
            parts = tuple(p for p in (sidecar, sidecar.with_suffix(".npy")) if p.exists())
            found.append(CacheEntry("decoded", sidecar.stem, parts, sum(_size(p) for p in parts), _mtime(sidecar)))
    uploads = cache_dir / UPLOADS_DIR
    if uploads.is_dir():
        for folder in uploads.iterdir():
            if folder.is_dir() and not folder.name.startswith("."):
                found.append(CacheEntry("upload", folder.name, (folder,), _tree_size(folder), _mtime(folder)))
    return sorted(found, key=lambda e: e.used_at)


def prune(cache_dir: Path, max_bytes: int | None = None, *, keep_used_since: float | None = None) -> list[CacheEntry]:
    """Removes least-recently-used entries until the cache fits in `max_bytes`; returns what was removed.

    Args:
        cache_dir: the cache root (`Workspace.cache_dir`).
        max_bytes: the cap; default `limit_bytes()` (where 0 means no cap). An explicit 0 empties the cache.
        keep_used_since: never remove entries used at or after this time (the ones the caller is using).
    """
    cap = limit_bytes() if max_bytes is None else max_bytes
    if cap < 0 or (max_bytes is None and cap == 0):
        return []
    current = entries(cache_dir)
    total = sum(e.size_bytes for e in current)
    removed = []
    for entry in current:
        if total <= cap:
            break
        if keep_used_since is not None and entry.used_at >= keep_used_since:
            continue
        for path in entry.paths:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        total -= entry.size_bytes
        removed.append(entry)
        logger.info("pruned the cached %s %s (%.1f MB, unused since %s)", entry.kind, entry.name,
                    entry.size_bytes / 1e6, time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.used_at)))
    return removed


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _tree_size(folder: Path) -> int:
    return sum(_size(Path(root) / name) for root, _, names in os.walk(folder) for name in names)
