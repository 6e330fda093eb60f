"""Getting a transfer base's ImageNet weights: a resumable, hash-checked download, or an import from a file.

KerasHub bases (`hub:<preset>`) are fetched by KerasHub itself (`download_preset`) or imported from a preset
folder (`import_preset`).

`download` needs no TensorFlow; `import_weights` builds the base (TensorFlow) to check the file's shapes.
Both put the file where keras.applications looks (`engine.zoo.keras_cache_dir()`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

from engine import zoo

log = logging.getLogger(__name__)

_CHUNK = 256 * 1024


class WeightsError(ValueError):
    """A download or import failed; the message says why and what to do."""


class DownloadCancelled(Exception):
    """The download was stopped on request; its partial file is kept, and the next `get` resumes it."""


def partial_path(base: str) -> Path:
    return zoo.keras_cache_dir() / (zoo.get_base(base).file + ".part")


def download(base: str, *, url: str | None = None, expected_hash: str | None = None,
             progress: Callable[[int, int], None] | None = None, should_stop: Callable[[], bool] | None = None,
             timeout: float = 60.0) -> Path:
    """Downloads a base's no-top ImageNet weights into the Keras cache, resuming a broken download.

    A `.part` file left by an interrupted download is continued with an HTTP Range request (a
    server that ignores Range sends the whole file again). The finished file is checked against the
    hash Keras publishes (md5 or sha256 by length) before it is put in place.

    Args:
        base: a `model.base`, e.g. `efficientnet_v2b0`.
        url: where to download from. Default: the base's published URL (`$APERTURE_WEIGHTS_URL` replaces
            its folder).
        expected_hash: the hex digest to check against. Default: the published one (MobileNetV2 has none:
            its sha256 is recorded instead).
        progress: `progress(bytes done, total bytes or 0 when unknown)`, called per chunk.
        should_stop: returns True to stop; the partial file is kept for a resume.
        timeout: seconds to wait for the server.

    Returns:
        The weights file's path.

    Raises:
        WeightsError: the server cannot be reached or answers an error, or the hash does not match.
        DownloadCancelled: `should_stop` said so.
    """
    entry = zoo.get_base(base)
    url = url or entry.url
    expected = expected_hash if expected_hash is not None else entry.published_hash
    final = zoo.keras_cache_dir() / entry.file
    part = partial_path(base)
    part.parent.mkdir(parents=True, exist_ok=True)
    with _only_download(part, base):
        return _download_into(part, final, base, url, expected, progress, should_stop, timeout)


@contextlib.contextmanager
def _only_download(part: Path, base: str):
    """Holds an exclusive lock beside `part` while one process writes it: a second `weights get` of the same base
    (another shell, or the Train page's Get job) is refused instead of appending to the same file."""
    with open(part.with_name(part.name + ".lock"), "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WeightsError(f"{base}'s weights are being downloaded by another process already (a `weights get` "
                               "or the Train page's Get); wait for it, or stop it and run this again") from None
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _download_into(part: Path, final: Path, base: str, url: str, expected: str | None,
                   progress: Callable[[int, int], None] | None, should_stop: Callable[[], bool] | None,
                   timeout: float) -> Path:
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 - an http(s) URL we name
    except urllib.error.HTTPError as error:
        if error.code == 416 and have:  # the part is already whole
            return _finish(part, final, expected, url)
        raise WeightsError(f"cannot download {url}: the server answered {error.code} {error.reason}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise WeightsError(f"cannot download {url}: {reason}. Without internet, copy the file here and run "
                           f"`python -m engine weights import FILE --base {base}`.") from None
    with response:
        resumed = response.status == 206
        total = int(response.headers.get("Content-Length") or 0)
        done = have if resumed else 0
        total = total + done if total else 0
        log.info("downloading %s (%s)%s", url, f"{total / 1e6:.1f} MB" if total else "size unknown",
                 f", resuming at {have / 1e6:.1f} MB" if resumed else "")
        with open(part, "ab" if resumed else "wb") as out:
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
                if should_stop is not None and should_stop():
                    raise DownloadCancelled(f"stopped after {done / 1e6:.1f} MB; `weights get {base}` resumes")
    if total and done < total:
        raise WeightsError(f"the download of {url} broke off at {done:,} of {total:,} bytes; run "
                           f"`python -m engine weights get {base}` again to resume it")
    return _finish(part, final, expected, url)


def _finish(part: Path, final: Path, expected: str | None, url: str) -> Path:
    sha256 = zoo.file_sha256(part)
    if expected:
        kind = "md5" if len(expected) == 32 else "sha256"
        actual = sha256 if kind == "sha256" else zoo.file_hash(part, "md5")
        if actual != expected.lower():
            part.unlink(missing_ok=True)
            raise WeightsError(f"the file from {url} has {kind} {actual}, not the published {expected}; it was "
                               "deleted. Try again, or check the mirror.")
    os.replace(part, final)
    zoo.record_source(final, "imagenet", sha256, url)
    log.info("weights saved to %s (sha256 %s)", final, sha256[:12])
    return final


def import_weights(path: str | os.PathLike, base: str) -> Path:
    """Checks a weights file against the base's shapes and puts it where the base's weights are looked for.

    Args:
        path: a `.h5` (keras.applications' no-top file, by layer name) or `.weights.h5` (Keras 3
            `save_weights` of the same no-top base) file; for a `hub:` base a KerasHub preset folder
            (`import_preset`).
        base: the `model.base` it is for.

    Returns:
        The path it was copied to in the Keras cache.

    Raises:
        WeightsError: no such file, not HDF5, or its shapes do not fit the base (the message names the layer).
    """
    if zoo.is_hub_base(base):
        return import_preset(path, base)
    source = Path(os.path.expanduser(str(path)))
    zoo.get_base(base)
    if not source.is_file():
        raise WeightsError(f"{source}: no such file")
    if not source.name.lower().endswith((".h5", ".hdf5")):
        raise WeightsError(f"{source.name}: expected a .h5 or .weights.h5 file of a no-top {base} base")
    with open(source, "rb") as handle:
        if handle.read(8) != b"\x89HDF\r\n\x1a\n":
            raise WeightsError(f"{source.name} is not an HDF5 weights file")
    from engine.models.transfer import make_base  # imports TensorFlow

    try:
        make_base(base, (96, 96, 3), source)
    except (ValueError, OSError, KeyError, TypeError) as error:
        reason = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
        raise WeightsError(f"{source.name} does not fit the {base} base: {reason}") from None
    modern = source.name.lower().endswith(".weights.h5")
    target = zoo.keras_cache_dir() / (zoo.imported_file_name(base) if modern else zoo.get_base(base).file)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, prefix=".import-", delete=False) as tmp:
        shutil.copyfileobj(open(source, "rb"), tmp)
    os.replace(tmp.name, target)
    zoo.record_source(target, "import", zoo.file_sha256(target), str(source))
    if not modern:  # an older .weights.h5 import would be preferred to this file
        stale = zoo.keras_cache_dir() / zoo.imported_file_name(base)
        for old in (stale, stale.with_name(stale.name + ".source.json")):
            old.unlink(missing_ok=True)
    return target


def download_preset(base: str) -> Path:
    """Has KerasHub download a hub base's preset (backbone and image converter) into its cache.

    Returns:
        The preset folder in KerasHub's cache.

    Raises:
        WeightsError: the download failed (no internet, unknown preset); the message says how to import instead.
    """
    import keras_hub  # imports TensorFlow

    preset = zoo.hub_preset(base)
    try:
        keras_hub.models.Backbone.from_preset(preset)
        keras_hub.layers.ImageConverter.from_preset(preset)
    except Exception as error:  # noqa: BLE001 - kagglehub/huggingface raise many kinds; all mean "not fetched"
        reason = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
        raise WeightsError(f"KerasHub cannot fetch the preset {preset}: {reason}. Without internet, copy a preset "
                           f"folder here and run `python -m engine weights import FOLDER --base {base}`.") from None
    folder = zoo.hub_preset_dir(base)
    if folder is None:
        raise WeightsError(f"KerasHub loaded {preset} but its folder is not in {zoo.kagglehub_cache_dir()}")
    return folder


def import_preset(path: str | os.PathLike, base: str) -> Path:
    """Checks a KerasHub preset folder and copies it where the hub base's preset is looked for.

    The folder must hold config.json (a KerasHub Backbone), model.weights.h5 that loads into it, and
    image_converter.json. When the base's preset is already here (downloaded), the folder's backbone config
    must equal it (same architecture and shapes).

    Returns:
        The imported folder (`engine.zoo.hub_import_dir(base)`).

    Raises:
        WeightsError: what makes the folder unusable (a missing file, weights that do not fit, another architecture).
    """
    source = Path(os.path.expanduser(str(path)))
    try:
        zoo.check_preset_folder(source)
    except zoo.WeightsMissing as error:
        raise WeightsError(str(error)) from None
    from engine.models.transfer import make_hub_base  # imports TensorFlow

    try:
        make_hub_base(source)
    except Exception as error:  # noqa: BLE001 - KerasHub and h5py raise many kinds for a bad folder
        reason = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
        raise WeightsError(f"{source} is not a usable KerasHub preset: {reason}") from None
    known = zoo.hub_preset_dir(base)
    if known is not None and known.resolve() != source.resolve():
        ours, theirs = (json.loads((f / "config.json").read_text()).get("config", {}) for f in (source, known))
        ours.pop("name", None), theirs.pop("name", None)
        if ours != theirs:
            changed = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))
            raise WeightsError(f"{source} does not fit the {base} base in {known}: its backbone config differs in "
                               f"{', '.join(changed[:5])}")
    target = zoo.hub_import_dir(base)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".import-"))
    shutil.copytree(source, staging, dirs_exist_ok=True)
    zoo.record_preset_source(staging, "import", str(source))
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)
    return target
