"""Built-in sources: digits, shapes, and the Keras datasets read from a temporary KERAS_HOME."""

from __future__ import annotations

import gzip
import pickle
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

import engine.data as data
from engine.data import builtin

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def keras_home(tmp_path, monkeypatch) -> Path:
    """An empty KERAS_HOME whose download URLs point at a closed local port (fails at once)."""
    home = tmp_path / "keras"
    monkeypatch.setenv("KERAS_HOME", str(home))
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setattr(builtin, "KERAS_DATASETS_URL", f"http://127.0.0.1:{port}/")
    monkeypatch.setattr(builtin, "CIFAR10_URL", f"http://127.0.0.1:{port}/cifar-10-python.tar.gz")
    return home / "datasets"


def test_digits_are_rgb_uint8_at_the_requested_size():
    images = data.load_images("digits", 24)
    assert images.images.shape == (1797, 24, 24, 3) and images.images.dtype == np.uint8
    assert images.labels.dtype == np.int32 and images.labels.shape == (1797,)
    assert images.class_names == [str(i) for i in range(10)]
    assert images.ids[17] == "digits/17" and len(images.ids) == 1797
    assert images.images.max() == 255 and images.images.min() == 0
    assert np.array_equal(images.images[..., 0], images.images[..., 2])  # gray in three channels
    assert images.masks is None and images.skipped == ()
    assert images.fingerprint == data.load_images("digits", 24).fingerprint


def test_max_per_class_caps_each_class_reproducibly():
    first = data.load_images("digits", 8, max_per_class=5, seed=3)
    assert set(first.class_counts().values()) == {5}
    assert first.ids == data.load_images("digits", 8, max_per_class=5, seed=3).ids
    assert first.ids != data.load_images("digits", 8, max_per_class=5, seed=4).ids


def test_shapes_have_masks_that_match_the_drawn_objects():
    shapes = data.load_images("shapes", 32, max_per_class=20, seed=1)
    assert shapes.images.shape == (80, 32, 32, 3) and shapes.masks.shape == (80, 32, 32)
    assert shapes.masks.dtype == bool
    assert shapes.class_names == ["circle", "square", "triangle", "cross"]
    assert shapes.class_counts() == {"circle": 20, "square": 20, "triangle": 20, "cross": 20}
    area = shapes.masks.mean(axis=(1, 2))
    assert (area > 0.01).all() and (area < 0.6).all()
    for image, mask in zip(shapes.images.astype(float), shapes.masks):
        inside, outside = image[mask].mean(axis=0), image[~mask].mean(axis=0)
        assert np.abs(inside - outside).sum() > 100  # the object stands out where its mask says
    again = data.load_images("shapes", 32, max_per_class=20, seed=1)
    assert np.array_equal(again.images, shapes.images) and again.fingerprint == shapes.fingerprint
    assert not np.array_equal(data.load_images("shapes", 32, max_per_class=20, seed=2).images, shapes.images)


def test_shapes_default_per_class():
    from engine.data.builtin import SHAPES_PER_CLASS

    counts = data.load_images("shapes", 8).class_counts()
    assert counts == {n: SHAPES_PER_CLASS for n in ("circle", "square", "triangle", "cross")}


def test_mnist_is_read_from_the_keras_cache(keras_home):
    keras_home.mkdir(parents=True)
    rng = np.random.default_rng(0)
    np.savez(keras_home / "mnist.npz", x_train=rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
             y_train=np.arange(20) % 10, x_test=rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
             y_test=np.arange(10) % 10)
    info = {s.name: s for s in data.list_sources()}["mnist"]
    assert info.available and "mnist" in info.detail
    images = data.load_images("mnist", 16)
    assert images.images.shape == (30, 16, 16, 3) and images.class_counts()["3"] == 3
    assert images.labels.tolist()[20:] == list(range(10))  # train first, then test


def test_missing_mnist_names_the_file_and_does_not_hang(keras_home):
    info = {s.name: s for s in data.list_sources()}["mnist"]
    assert not info.available and "mnist.npz" in info.detail
    started = time.monotonic()
    with pytest.raises(data.DatasetError) as error:
        data.load_images("mnist", 28)
    assert time.monotonic() - started < 5
    message = str(error.value)
    assert "mnist.npz" in message and str(keras_home) in message and "download" in message
    assert not list(keras_home.glob("*.part"))


def test_fashion_mnist_is_read_from_gzipped_idx_files(keras_home):
    folder = keras_home / "fashion-mnist"
    folder.mkdir(parents=True)
    for prefix, count in (("train", 12), ("t10k", 8)):
        with gzip.open(folder / f"{prefix}-images-idx3-ubyte.gz", "wb") as handle:
            handle.write(b"\0" * 16 + np.full((count, 28, 28), 7, np.uint8).tobytes())
        with gzip.open(folder / f"{prefix}-labels-idx1-ubyte.gz", "wb") as handle:
            handle.write(b"\0" * 8 + (np.arange(count) % 10).astype(np.uint8).tobytes())
    images = data.load_images("fashion_mnist", 28)
    assert images.images.shape == (20, 28, 28, 3) and images.class_names[9] == "Ankle boot"
    assert (images.images == 7).all()


def write_cifar_batches(folder: Path) -> None:
    folder.mkdir(parents=True)
    for i, name in enumerate(builtin.CIFAR10_BATCHES):
        pixels = np.zeros((2, 3, 32, 32), np.uint8)
        pixels[:, 0] = 200  # red plane
        batch = {b"data": pixels.reshape(2, 3072), b"labels": [i, (i + 1) % 10]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))


def test_cifar10_is_read_from_the_extracted_batches(keras_home):
    write_cifar_batches(keras_home / "cifar-10-batches-py")
    assert {s.name: s for s in data.list_sources()}["cifar10"].available
    images = data.load_images("cifar10", 32)
    assert images.images.shape == (12, 32, 32, 3)
    assert (images.images[..., 0] == 200).all() and (images.images[..., 1] == 0).all()  # channels last


def test_cifar10_archive_is_extracted_once(keras_home, tmp_path):
    write_cifar_batches(tmp_path / "cifar-10-batches-py")
    keras_home.mkdir(parents=True)
    with tarfile.open(keras_home / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    assert {s.name: s for s in data.list_sources()}["cifar10"].available
    assert len(data.load_images("cifar10", 8, max_per_class=1)) == 7  # labels 0..6 in the fake batches
    assert (keras_home / "cifar-10-batches-py" / "test_batch").is_file()


def test_missing_cifar10_says_where_to_put_it(keras_home):
    with pytest.raises(data.DatasetError, match="cifar-10-python.tar.gz"):
        data.load_images("cifar10", 32)


def test_list_sources_covers_every_builtin():
    infos = data.list_sources()
    assert [i.name for i in infos] == list(data.BUILTIN_SOURCES)
    assert all(i.description and i.detail for i in infos)
    assert {i.name for i in infos if i.available} >= {"digits", "shapes"}


def test_bad_arguments_are_dataset_errors(tmp_path):
    with pytest.raises(data.DatasetError, match="image_size"):
        data.load_images("digits", 0)
    with pytest.raises(data.DatasetError, match="no such file or folder"):
        data.load_images(str(tmp_path / "nowhere"), 32)


def test_loading_data_does_not_import_tensorflow():
    code = ("import sys, engine.data as d; d.load_images('digits', 32); d.list_sources(); "
            "d.split_indices(d.load_images('shapes', 8, max_per_class=5).labels, 0.2, 0.2, 0); "
            "bad = [m for m in ('tensorflow', 'keras') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)
