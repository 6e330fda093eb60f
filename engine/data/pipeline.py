"""tf.data input pipelines and Keras augmentation; the only part of `engine.data` that imports TensorFlow.

Images stay float32 in 0..255 throughout: the models rescale inside themselves.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.config import AugmentConfig

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

logger = logging.getLogger(__name__)


def make_augmenter(augment: AugmentConfig, seed: int) -> keras.Sequential | None:
    """Builds the enabled random augmentation layers as one model.

    Rotation, shift, zoom and flip are one `RandomGeometry` layer (a single affine
    resample per image); `RandomContrast` and `RandomBrightness` follow when enabled.

    Args:
        augment: which augmentations to apply and how strongly.
        seed: seed for the random layers' own generators (each layer gets its own offset),
            used when the model is called directly (e.g. the augmentation preview); the
            training pipeline draws from a per-batch seed instead (`augment_batch`).

    Returns:
        A `keras.Sequential` to call with `training=True` on float batches in 0..255,
        or None when no augmentation is enabled.
    """
    if not augment.enabled:
        return None
    import keras

    from engine.data.augment import RandomGeometry

    layers = []
    if augment.rotation or augment.shift or augment.zoom or augment.flip:
        # One affine resample per image for all four (instead of one per Keras layer).
        layers.append(RandomGeometry(rotation=augment.rotation, shift=augment.shift, zoom=augment.zoom,
                                     flip=augment.flip, seed=seed))
    if augment.contrast:
        layers.append(keras.layers.RandomContrast(augment.contrast, value_range=(0, 255), seed=seed + 4))
    if augment.brightness:
        layers.append(keras.layers.RandomBrightness(augment.brightness, value_range=(0, 255), seed=seed + 5))
    return keras.Sequential(layers, name="augment")


def make_dataset(images: np.ndarray, labels: np.ndarray, *, batch_size: int, training: bool,
                 augment: Any = None, seed: int = 0, indices: np.ndarray | None = None,
                 first_epoch: int = 0, epochs: int = 1) -> tf.data.Dataset:
    """Builds a batched tf.data pipeline of `(float32 images in 0..255, int32 labels)`.

    Batches are gathered by index, so a memmapped image array is read a batch at a
    time and never loaded whole. Pass a split part as `indices` rather than slicing
    the arrays: `images[split.train]` would copy that part of a memmap into memory.

    When training, every draw is a pure function of (seed, epoch, step): the shuffle
    order of an epoch, and the augmentation of each of its batches. Nothing carries
    over from one epoch to the next, so a run resumed at epoch k (`first_epoch=k`)
    sees exactly the batches the uninterrupted run saw, and parallel map threads
    cannot change which batch gets which draws.

    Args:
        images: `(N, S, S, 3)` uint8 array (in memory or a `np.memmap`), e.g. `imageset.images`.
        labels: `(N,)` int labels.
        batch_size: images per batch.
        training: shuffle (a different order every epoch) and augment; False keeps the order.
        augment: an `AugmentConfig` or a model from `make_augmenter`; used only when training.
        seed: seed for shuffling and augmentation.
        indices: use only these rows of `images`/`labels` (e.g. `split.train`); None = all.
        first_epoch: (training) the 0-based epoch the dataset starts at; a resumed run
            passes the number of epochs it has done. Default 0.
        epochs: (training) how many epochs to yield back to back, each of
            `ceil(len(indices) / batch_size)` batches; `fit` then needs `steps_per_epoch`.
            Default 1. Iterating the dataset again repeats the same epochs.

    Returns:
        A `tf.data.Dataset` yielding `(images, labels)` batches, prefetched.
    """
    import tensorflow as tf

    # These functions and the Keras layers they call never branch on a tensor in Python (Keras 3 code runs on
    # JAX too), so autograph has nothing to convert; converting them anyway took ~0.3 s of every make_dataset.
    plain = tf.autograph.experimental.do_not_convert

    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"images and labels differ in length: {images.shape[0]} vs {labels.shape[0]}")
    indices = np.arange(labels.shape[0], dtype=np.int64) if indices is None else np.asarray(indices, np.int64)
    image_shape = tuple(int(d) for d in images.shape[1:])
    labels = np.asarray(labels, dtype=np.int32)
    augmenter = augment
    if isinstance(augment, AugmentConfig):
        augmenter = make_augmenter(augment, seed)
    if not training:
        augmenter = None

    if isinstance(images, np.memmap):
        def gather(indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            order = np.sort(indices)  # sequential reads; order inside a shuffled batch does not matter
            return np.asarray(images[order]), labels[order]

        @plain
        def load(indices):
            x, y = tf.numpy_function(gather, [indices], (tf.uint8, tf.int32), stateful=False)
            x.set_shape((None, *image_shape))
            y.set_shape((None,))
            return tf.cast(x, tf.float32), y
    else:
        image_tensor = tf.constant(np.asarray(images, dtype=np.uint8))
        label_tensor = tf.constant(labels)

        @plain
        def load(indices):
            return tf.cast(tf.gather(image_tensor, indices), tf.float32), tf.gather(label_tensor, indices)

    if not training:
        ds = tf.data.Dataset.from_tensor_slices(indices).batch(batch_size)
        ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    elif augmenter is not None:
        # Gather and augment in one parallel map: a whole batch per call (one affine resample
        # per batch beats one per image), several batches in flight on the tf.data threads.
        @plain
        def load_and_augment(rows, batch_seed):
            x, y = load(rows)
            return augment_batch(augmenter, x, batch_seed), y

        ds = _shuffled_batches(indices, batch_size, seed, first_epoch, epochs)
        ds = ds.map(load_and_augment, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    else:
        @plain
        def load_rows(rows, _batch_seed):
            return load(rows)

        ds = _shuffled_batches(indices, batch_size, seed, first_epoch, epochs)
        ds = ds.map(load_rows, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def _shuffled_batches(indices: np.ndarray, batch_size: int, seed: int, first_epoch: int, epochs: int):
    """`(rows, batch seed)` for epochs `first_epoch..first_epoch + epochs - 1`, computed from the step alone.

    Epoch e's order is the stateless permutation `index_shuffle(·, [seed, e])` of the rows,
    and its batch s augments with the seed `fold_in([seed, e], s)`. Both are recomputed per
    batch from the global step number, so the dataset can start at any epoch.
    """
    import tensorflow as tf

    count = int(indices.shape[0])
    steps = -(-count // batch_size)
    rows = tf.constant(indices)

    @tf.autograph.experimental.do_not_convert  # see make_dataset
    def batch(global_step):
        epoch, step = global_step // steps, global_step % steps
        positions = tf.range(step * batch_size, tf.minimum((step + 1) * batch_size, count), dtype=tf.int64)
        epoch_seed = tf.stack([tf.constant(seed, tf.int64), epoch])
        order = tf.random.experimental.index_shuffle(positions, seed=epoch_seed, max_index=max(count - 1, 0))
        return tf.gather(rows, order), tf.random.experimental.stateless_fold_in(epoch_seed, step)

    return tf.data.Dataset.range(first_epoch * steps, (first_epoch + max(epochs, 0)) * steps).map(batch)


def augment_batch(augmenter, images, seed):
    """Applies the layers of a `make_augmenter` model to a batch, drawing from `seed` alone.

    Each layer draws its random transformation from a `SeedStream` of `seed` instead of
    its own stateful generator, so the same batch seed always gives the same images.

    Args:
        augmenter: a `keras.Sequential` from `make_augmenter`.
        images: a float32 `(B, H, W, 3)` batch in 0..255.
        seed: an int64 tensor of shape `(2,)`, e.g. from `fold_in`.

    Returns:
        The augmented batch.
    """
    from engine.data.augment import SeedStream

    draws = SeedStream(seed)
    for layer in augmenter.layers:
        if not hasattr(layer, "get_random_transformation"):  # not an image preprocessing layer
            raise TypeError(f"augmentation layer {layer.name!r} ({type(layer).__name__}) cannot draw from a "
                            "given seed: it needs get_random_transformation() and transform_images()")
        transformation = layer.get_random_transformation(images, training=True, seed=draws)
        images = layer.transform_images(images, transformation, training=True)
    return images
