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
        seed: seed for the random layers (each layer gets its own offset).

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
                 augment: Any = None, seed: int = 0, indices: np.ndarray | None = None) -> tf.data.Dataset:
    """Builds a batched tf.data pipeline of `(float32 images in 0..255, int32 labels)`.

    Batches are gathered by index, so a memmapped image array is read a batch at a
    time and never loaded whole. Pass a split part as `indices` rather than slicing
    the arrays: `images[split.train]` would copy that part of a memmap into memory.

    Args:
        images: `(N, S, S, 3)` uint8 array (in memory or a `np.memmap`), e.g. `imageset.images`.
        labels: `(N,)` int labels.
        batch_size: images per batch.
        training: shuffle (seeded, reshuffled every epoch) and augment; False keeps the order.
        augment: an `AugmentConfig` or a model from `make_augmenter`; used only when training.
        seed: seed for shuffling and augmentation.
        indices: use only these rows of `images`/`labels` (e.g. `split.train`); None = all.

    Returns:
        A `tf.data.Dataset` yielding `(images, labels)` batches, prefetched.
    """
    import tensorflow as tf

    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"images and labels differ in length: {images.shape[0]} vs {labels.shape[0]}")
    indices = np.arange(labels.shape[0], dtype=np.int64) if indices is None else np.asarray(indices, np.int64)
    count = int(indices.shape[0])
    image_shape = tuple(int(d) for d in images.shape[1:])
    labels = np.asarray(labels, dtype=np.int32)
    augmenter = augment
    if isinstance(augment, AugmentConfig):
        augmenter = make_augmenter(augment, seed)
    if not training:
        augmenter = None

    ds = tf.data.Dataset.from_tensor_slices(indices)
    if training:
        ds = ds.shuffle(count, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)

    if isinstance(images, np.memmap):
        def gather(indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            order = np.sort(indices)  # sequential reads; order inside a shuffled batch does not matter
            return np.asarray(images[order]), labels[order]

        def load(indices):
            x, y = tf.numpy_function(gather, [indices], (tf.uint8, tf.int32), stateful=False)
            x.set_shape((None, *image_shape))
            y.set_shape((None,))
            return tf.cast(x, tf.float32), y
    else:
        image_tensor = tf.constant(np.asarray(images, dtype=np.uint8))
        label_tensor = tf.constant(labels)

        def load(indices):
            return tf.cast(tf.gather(image_tensor, indices), tf.float32), tf.gather(label_tensor, indices)

    if augmenter is not None:
        # Gather and augment in one parallel map: a whole batch per call (one affine resample
        # per batch beats one per image), several batches in flight on the tf.data threads.
        def load_and_augment(indices):
            x, y = load(indices)
            return augmenter(x, training=True), y

        ds = ds.map(load_and_augment, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    else:
        ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)
