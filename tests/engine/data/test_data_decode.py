"""Decoding a folder: chunked, on one thread or several, whichever the first chunks measured faster."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import engine.data.folders as folders
from engine.data.images import read_image

BAD = {0: b"", 15: b"not an image", 16: b"", 47: b"\x89PNG\r\n", 48: b"", 399: b"not an image"}  # chunk edges


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """400 small images of varied size and kind, some of them broken, at chunk boundaries."""
    root = tmp_path_factory.mktemp("decode")
    rng = np.random.default_rng(0)
    paths = []
    for index in range(400):
        path = root / f"{index:03d}.{'jpg' if index % 3 else 'png'}"
        if index in BAD:
            path.write_bytes(BAD[index])
        else:
            side = int(rng.integers(6, 40))
            Image.fromarray(rng.integers(0, 256, (side, side + 3, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def expected(paths, size):
    images, reasons = np.zeros((len(paths), size, size, 3), np.uint8), []
    for index, path in enumerate(paths):
        try:
            images[index] = read_image(path, size)
            reasons.append(None)
        except folders.ImageReadError as error:
            reasons.append(error.reason)
    return images, reasons


@pytest.mark.parametrize("threads, faster", [(1, None), (2, "parallel"), (2, "serial"), (3, "parallel")])
def test_every_way_of_decoding_gives_the_same_images_and_reasons(files, monkeypatch, threads, faster):
    monkeypatch.setattr(folders, "decode_threads", lambda: threads)
    timings = iter([1.0, 0.5] if faster == "parallel" else [0.5, 1.0])

    def timed(work):  # runs the work, reports the measurement the case wants
        work()
        return next(timings)

    monkeypatch.setattr(folders, "_timed", timed)
    want_images, want_reasons = expected(files, 12)
    out = np.full((len(files), 12, 12, 3), 7, np.uint8)
    images, reasons = folders._decode_into(out, files, 12)
    assert images is out and reasons == want_reasons
    assert [i for i, r in enumerate(reasons) if r is not None] == sorted(BAD)
    good = [i for i in range(len(files)) if i not in BAD]
    assert np.array_equal(images[good], want_images[good])
    if threads > 1:
        assert next(timings, "both measured") == "both measured"


def test_a_few_files_decode_without_measuring(files, monkeypatch):
    monkeypatch.setattr(folders, "decode_threads", lambda: 2)
    monkeypatch.setattr(folders, "_timed", lambda work: pytest.fail("too few files to measure"))
    images, reasons = folders._decode_into(np.zeros((40, 8, 8, 3), np.uint8), files[:40], 8)
    want_images, want_reasons = expected(files[:40], 8)
    assert reasons == want_reasons and np.array_equal(images, want_images)


def test_decode_threads_follow_the_cores_this_process_may_use(monkeypatch):
    monkeypatch.setattr(folders.os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert folders.decode_threads() == 1
    monkeypatch.setattr(folders.os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    assert folders.decode_threads() == 8
