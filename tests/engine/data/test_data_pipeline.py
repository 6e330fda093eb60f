"""tf.data pipelines and augmentation, on digits and on a memmapped folder cache."""

from __future__ import annotations

import numpy as np
import pytest
from tests.image_files import write_image_folder

import engine.data as data
from engine.config import AugmentConfig

ALL_ON = AugmentConfig(rotation=15, shift=0.1, flip=True, zoom=0.1, contrast=0.2, brightness=0.2)


@pytest.fixture(scope="module")
def digits():
    return data.load_images("digits", 32)


def test_eval_dataset_keeps_order_and_range(digits):
    ds = data.make_dataset(digits.images, digits.labels, batch_size=64, training=False)
    batches = list(ds.as_numpy_iterator())
    x, y = batches[0]
    assert x.shape == (64, 32, 32, 3) and x.dtype == np.float32 and y.dtype == np.int32
    assert 0 <= x.min() and x.max() <= 255 and x.max() > 200
    assert np.array_equal(np.concatenate([b[1] for b in batches]), digits.labels)
    assert np.array_equal(x, digits.images[:64].astype(np.float32))
    assert ds.element_spec[0].shape.as_list() == [None, 32, 32, 3]


def test_training_dataset_shuffles_per_epoch_reproducibly(digits):
    images, labels = digits.images[:200], digits.labels[:200]
    ds = data.make_dataset(images, labels, batch_size=50, training=True, seed=3)
    epoch1 = np.concatenate([y for _, y in ds.as_numpy_iterator()])
    epoch2 = np.concatenate([y for _, y in ds.as_numpy_iterator()])
    assert sorted(epoch1.tolist()) == sorted(labels.tolist()) and not np.array_equal(epoch1, labels)
    assert not np.array_equal(epoch1, epoch2)
    rebuilt = data.make_dataset(images, labels, batch_size=50, training=True, seed=3)
    assert np.array_equal(np.concatenate([y for _, y in rebuilt.as_numpy_iterator()]), epoch1)


def test_memmapped_images_are_gathered_per_batch(tmp_path):
    folder = write_image_folder(tmp_path / "images", classes=("a", "b"), per_class=10, size=16)
    images = data.load_images(str(folder), 16, cache_dir=tmp_path / "cache")
    assert isinstance(images.images, np.memmap)
    split = data.split_indices(images.labels, 0.2, 0.2, 0)
    ds = data.make_dataset(images.images, images.labels, batch_size=8, training=False)
    x = np.concatenate([b[0] for b in ds.as_numpy_iterator()])
    assert x.dtype == np.float32 and np.array_equal(x, np.asarray(images.images, np.float32))
    train = data.make_dataset(images.images, images.labels, indices=split.train, batch_size=4,
                              training=True, augment=ALL_ON)
    xb, yb = next(iter(train))
    assert xb.shape == (4, 16, 16, 3) and yb.shape == (4,)
    test = data.make_dataset(images.images, images.labels, indices=split.test, batch_size=100, training=False)
    xt, yt = next(test.as_numpy_iterator())
    assert np.array_equal(xt, images.images[split.test].astype(np.float32))
    assert np.array_equal(yt, images.labels[split.test])
    pairs = data.make_dataset(images.images, images.labels, batch_size=5, training=True, seed=1)
    for xs, ys in pairs.as_numpy_iterator():  # shuffled, but each image still carries its own label
        for image, label in zip(xs, ys):
            assert (image.reshape(-1, 3).mean(0).argmax() == [0, 1][label])


def test_augmenter_layers_and_output(digits):
    off = AugmentConfig(rotation=0, shift=0, zoom=0)
    assert data.make_augmenter(off, seed=0) is None
    augmenter = data.make_augmenter(ALL_ON, seed=0)
    names = [type(layer).__name__ for layer in augmenter.layers]
    assert names == ["RandomGeometry", "RandomContrast", "RandomBrightness"]
    geometry = augmenter.layers[0]
    assert (geometry.rotation, geometry.shift, geometry.zoom, geometry.flip) == (15, 0.1, 0.1, True)
    flip_only = data.make_augmenter(AugmentConfig(rotation=0, shift=0, zoom=0, flip=True), 0)
    assert [type(x).__name__ for x in flip_only.layers] == ["RandomGeometry"]
    assert (flip_only.layers[0].rotation, flip_only.layers[0].flip) == (0, True)
    colour_only = data.make_augmenter(AugmentConfig(rotation=0, shift=0, zoom=0, brightness=0.1), 0)
    assert [type(x).__name__ for x in colour_only.layers] == ["RandomBrightness"]
    assert [type(x).__name__ for x in data.make_augmenter(AugmentConfig(), 0).layers] == ["RandomGeometry"]
    batch = digits.images[:16].astype(np.float32)
    out = np.asarray(augmenter(batch, training=True))
    assert out.shape == batch.shape and out.dtype == np.float32
    assert out.min() >= -1e-3 and out.max() <= 255 + 1e-3 and not np.allclose(out, batch)
    ds = data.make_dataset(digits.images[:64], digits.labels[:64], batch_size=32, training=True, augment=ALL_ON)
    x, _ = next(ds.as_numpy_iterator())
    assert x.shape == (32, 32, 32, 3) and x.dtype == np.float32 and x.max() <= 255 + 1e-3
    plain = data.make_dataset(digits.images[:64], digits.labels[:64], batch_size=64, training=False, augment=ALL_ON)
    x, _ = next(plain.as_numpy_iterator())
    assert np.array_equal(x, digits.images[:64].astype(np.float32))  # no augmentation outside training
