"""Safe extraction of uploaded `.zip` files of class folders."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path

from engine.data.folders import find_class_root, is_ignored
from engine.data.imageset import DatasetError

logger = logging.getLogger(__name__)

MAX_ENTRIES = 100_000
MAX_TOTAL_BYTES = 4 * 1024**3
MAX_COMPRESSION_RATIO = 200
# Entries smaller than this are not ratio-checked: a tiny blank BMP legitimately compresses 1000:1.
RATIO_CHECK_MIN_BYTES = 1024**2
# Uploads larger than this are refused before they are written (also bounded by maxUploadSize in
# .streamlit/config.toml, which the browser enforces; this is the engine's own check).
MAX_UPLOAD_BYTES = 1024**3  # = maxUploadSize (MB)
UPLOADS_DIR = "uploads"
EXTRACTED_DIR = "files"
_CHUNK = 1024**2


def check_upload_size(size: int, limit: int | None = None) -> None:
    """Raises DatasetError if an upload of `size` bytes exceeds `limit` (default MAX_UPLOAD_BYTES)."""
    limit = MAX_UPLOAD_BYTES if limit is None else limit
    if size > limit:
        raise DatasetError(f"the upload is {size / 1024**2:,.0f} MB; the limit is {limit / 1024**2:,.0f} MB. "
                           "Upload a smaller zip, or put the folder on the server and give its path.")


def _entry_parts(info: zipfile.ZipInfo) -> list[str]:
    """The path components of an entry; raises DatasetError for unsafe names or symlinks."""
    name = info.filename
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise DatasetError(f"the zip holds an absolute path ({name!r}); refusing to extract it. "
                           "Re-create the zip from inside the image folder.")
    parts = [p for p in re.split(r"[/\\]", name) if p not in ("", ".")]
    if ".." in parts:
        raise DatasetError(f"the zip holds a path that leaves its folder ({name!r}); refusing to extract it. "
                           "Re-create the zip from inside the image folder.")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise DatasetError(f"the zip holds a symbolic link ({name!r}); refusing to extract it. "
                           "Zip the image files themselves, not links to them.")
    return parts


def _plan(archive: zipfile.ZipFile, zip_path: Path) -> list[tuple[zipfile.ZipInfo, list[str]]]:
    """Checks every entry before anything is written; returns the files to extract."""
    infos = archive.infolist()
    if len(infos) > MAX_ENTRIES:
        raise DatasetError(f"{zip_path.name} holds {len(infos):,} entries, more than the {MAX_ENTRIES:,} allowed. "
                           "Split the dataset or use a folder path instead of an upload.")
    plan, total, compressed = [], 0, 0
    for info in infos:
        parts = _entry_parts(info)
        if info.is_dir() or not parts or any(is_ignored(p) for p in parts):
            continue
        total += info.file_size
        compressed += info.compress_size
        if info.file_size >= RATIO_CHECK_MIN_BYTES and info.file_size > MAX_COMPRESSION_RATIO * max(
                info.compress_size, 1):
            raise DatasetError(f"{zip_path.name}: {info.filename!r} expands {info.file_size / max(info.compress_size, 1):,.0f}"
                               f" times (limit {MAX_COMPRESSION_RATIO}); this looks like a zip bomb and was not extracted.")
        plan.append((info, parts))
    if total > MAX_TOTAL_BYTES:
        raise DatasetError(f"{zip_path.name} expands to {total / 1024**3:.1f} GiB, more than the "
                           f"{MAX_TOTAL_BYTES / 1024**3:.0f} GiB allowed. Use a folder path for datasets this big.")
    if total >= RATIO_CHECK_MIN_BYTES and total > MAX_COMPRESSION_RATIO * max(compressed, 1):
        raise DatasetError(f"{zip_path.name} expands {total / max(compressed, 1):,.0f} times (limit "
                           f"{MAX_COMPRESSION_RATIO}); this looks like a zip bomb and was not extracted.")
    if not plan:
        raise DatasetError(f"{zip_path.name} is empty (no files besides hidden or __MACOSX ones). "
                           "Zip a folder holding one sub-folder of images per class.")
    return plan


def _copy_limited(source, target, limit: int, name: str) -> None:
    """Copies at most `limit` bytes; a stream longer than its declared size is refused."""
    written = 0
    while chunk := source.read(_CHUNK):
        written += len(chunk)
        if written > limit:
            raise DatasetError(f"{name!r} in the zip is larger than its header says; refusing to extract it.")
        target.write(chunk)


def extract_zip(zip_path: str | os.PathLike, dest_dir: str | os.PathLike) -> Path:
    """Safely extracts a zip of class folders into `dest_dir/files`.

    Refuses absolute paths, `..` components, symbolic links, more than `MAX_ENTRIES`
    entries, more than `MAX_TOTAL_BYTES` uncompressed and compression ratios over
    `MAX_COMPRESSION_RATIO`; skips `__MACOSX/` and hidden files. Extraction goes into a
    temporary folder inside `dest_dir` that is renamed when complete, so nothing is ever
    written outside `dest_dir` and a half-extracted upload is never used.

    Args:
        zip_path: the uploaded `.zip` file.
        dest_dir: the folder to extract into; created if missing. A previous
            extraction there is replaced.

    Returns:
        The folder holding the class folders (below any single wrapper folder).

    Raises:
        DatasetError: the file is not a zip, or is unsafe or empty.
    """
    zip_path, dest_dir = Path(zip_path), Path(dest_dir)
    if not zip_path.is_file() or not zipfile.is_zipfile(zip_path):
        raise DatasetError(f"{zip_path.name} is not a zip archive. Upload a .zip of a folder holding one "
                           "sub-folder of images per class.")
    dest_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".extracting-", dir=dest_dir))
    try:
        try:
            with zipfile.ZipFile(zip_path) as archive:
                plan = _plan(archive, zip_path)
                for info, parts in plan:
                    target = staging.joinpath(*parts)
                    if not target.resolve().is_relative_to(staging.resolve()):
                        raise DatasetError(f"the zip entry {info.filename!r} leaves its folder; refusing to extract it.")
                    try:
                        target.parent.mkdir(parents=True, exist_ok=True)
                        with archive.open(info) as source, open(target, "wb") as out:
                            _copy_limited(source, out, info.file_size, info.filename)
                    except (FileExistsError, IsADirectoryError, NotADirectoryError) as error:
                        raise DatasetError(f"the zip holds both a file and a folder at {info.filename!r} "
                                           f"({error.strerror}); re-create the zip from the image folder.") from None
                    except OSError as error:  # e.g. a name too long for this file system, or a full disk
                        raise DatasetError(f"the zip entry {info.filename!r} can't be written here "
                                           f"({error.strerror or error}).") from None
        except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError, EOFError) as error:
            raise DatasetError(f"{zip_path.name} is damaged or uses an unsupported zip feature ({error}). "
                               "Re-create the zip without encryption.") from None
        final = dest_dir / EXTRACTED_DIR
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=".old-", dir=dest_dir))
            os.replace(final, old / EXTRACTED_DIR)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(staging, final)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    logger.info("extracted %d files from %s", len(plan), zip_path.name)
    return find_class_root(final)


def file_digest(path: Path, kind: str = "sha256") -> str:
    """Returns the hex digest (`sha256` by default, or `md5`...) of a file's bytes, read in chunks."""
    digest = hashlib.new(kind)
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def extract_upload(zip_path: Path, cache_dir: Path) -> Path:
    """Extracts an uploaded zip into `cache_dir/uploads/<sha256[:16]>/`, reusing an earlier extraction.

    Args:
        zip_path: the `.zip` file.
        cache_dir: the cache root.

    Returns:
        The folder holding the class folders.
    """
    if not zipfile.is_zipfile(zip_path):
        raise DatasetError(f"{zip_path.name} is not a zip archive. Upload a .zip of a folder holding one "
                           "sub-folder of images per class.")
    dest = Path(cache_dir) / UPLOADS_DIR / file_digest(zip_path)[:16]
    if (dest / EXTRACTED_DIR).is_dir():
        logger.info("reusing the extracted upload in %s", dest)
        os.utime(dest)  # the cache's least-recently-used clock
        return find_class_root(dest / EXTRACTED_DIR)
    return extract_zip(zip_path, dest)
