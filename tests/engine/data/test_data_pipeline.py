"""tf.data pipelines and augmentation, on digits and on a memmapped folder cache."""

from __future__ import annotations

import numpy as np
import pytest
from tests.helpers.images import write_image_folder

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
    ds = data.make_dataset(images, labels, batch_size=50, training=True, seed=3, epochs=2)
    batches = [y for _, y in ds.as_numpy_iterator()]
    epoch1, epoch2 = np.concatenate(batches[:4]), np.concatenate(batches[4:])
    assert len(batches) == 8
    assert sorted(epoch1.tolist()) == sorted(labels.tolist()) == sorted(epoch2.tolist())
    assert not np.array_equal(epoch1, labels) and not np.array_equal(epoch1, epoch2)
    rebuilt = data.make_dataset(images, labels, batch_size=50, training=True, seed=3)
    assert np.array_equal(np.concatenate([y for _, y in rebuilt.as_numpy_iterator()]), epoch1)
    other_seed = data.make_dataset(images, labels, batch_size=50, training=True, seed=4)
    assert not np.array_equal(np.concatenate([y for _, y in other_seed.as_numpy_iterator()]), epoch1)


@pytest.mark.parametrize("memmap", [False, True])
def test_an_epoch_is_the_same_wherever_the_dataset_starts(digits, tmp_path, memmap):
    """Resume: epoch 3 of a dataset started at epoch 3 is epoch 3 of the uninterrupted stream, draws included."""
    images, labels = digits.images[:90], digits.labels[:90]
    if memmap:
        images = np.lib.format.open_memmap(tmp_path / "images.npy", mode="w+", dtype=np.uint8, shape=images.shape)
        images[:] = digits.images[:90]
    steps = 6  # ceil(90 / 16): the last batch is partial
    whole = list(data.make_dataset(images, labels, batch_size=16, training=True, augment=ALL_ON, seed=5,
                                   epochs=4).as_numpy_iterator())
    resumed = list(data.make_dataset(images, labels, batch_size=16, training=True, augment=ALL_ON, seed=5,
                                     first_epoch=2, epochs=2).as_numpy_iterator())
    assert len(whole) == 4 * steps and len(resumed) == 2 * steps and whole[-1][0].shape[0] == 90 - 5 * 16
    for (x, y), (x_resumed, y_resumed) in zip(whole[2 * steps:], resumed):
        assert np.array_equal(y, y_resumed) and np.array_equal(x, x_resumed)  # bit-identical pixels
    epoch1 = np.concatenate([x for x, _ in whole[:steps]])
    epoch3 = np.concatenate([x for x, _ in whole[2 * steps:3 * steps]])
    assert not np.allclose(epoch1, epoch3), "epoch 3 repeated epoch 1's shuffle and augmentation"
    again = list(data.make_dataset(images, labels, batch_size=16, training=True, augment=ALL_ON, seed=5,
                                   first_epoch=2).as_numpy_iterator())
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(again, resumed[:steps]))


def test_augmentation_draws_do_not_depend_on_the_order_batches_are_made(digits):
    """Each batch's draws come from its own seed, so parallel tf.data threads cannot swap them."""
    import tensorflow as tf

    from engine.data.pipeline import augment_batch

    augmenter = data.make_augmenter(ALL_ON, seed=0)
    batch = tf.constant(digits.images[:8].astype(np.float32))
    seeds = [tf.constant([1, 2], tf.int64), tf.constant([1, 3], tf.int64)]
    first = [np.asarray(augment_batch(augmenter, batch, s)) for s in seeds]
    second = [np.asarray(augment_batch(augmenter, batch, s)) for s in reversed(seeds)][::-1]
    assert np.array_equal(first[0], second[0]) and np.array_equal(first[1], second[1])
    assert not np.allclose(first[0], first[1]) and not np.allclose(first[0], digits.images[:8])


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
