"""`RandomGeometry`: rotation, shift, zoom and horizontal flip as ONE affine transform per image.

Keras's `RandomRotation`, `RandomTranslation` and `RandomZoom` each resample the whole
batch (and `RandomFlip` copies it once more). Composing the four into one matrix per
image resamples once: about 3x less work per batch, and one interpolation instead of
three, so the images are also less blurred.

`SeedStream` lets the training pipeline draw any augmentation layer's randomness from a
per-batch seed, so the draws depend on (seed, epoch, step) and nothing else.

Imports Keras (and so TensorFlow); `engine.data` imports this module lazily.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf
from keras import ops

FILL_MODES = ("reflect", "wrap", "constant", "nearest")
INTERPOLATIONS = ("bilinear", "nearest")


def geometry_transform(angle, shift_x, shift_y, zoom, flip, height: int, width: int):
    """Builds one affine transform per image, in the 8-number form `keras.ops.image.affine_transform` takes.

    Each transform maps an output pixel `(x, y)` to the input point it samples
    (`x_in = a0 x + a1 y + a2`, `y_in = b0 x + b1 y + b2`). The image is flipped
    horizontally (where `flip` is 1), rotated by `angle` and scaled about its
    centre, then moved by the shift: its content moves `shift_x * width` pixels
    right and `shift_y * height` pixels down, as with `keras.layers.RandomTranslation`.
    `zoom` is the factor of `keras.layers.RandomZoom`: above 1 zooms out (the
    output shows more of the image), below 1 zooms in.

    Args:
        angle: `(B,)` rotation in degrees.
        shift_x: `(B,)` horizontal shift as a fraction of the width.
        shift_y: `(B,)` vertical shift as a fraction of the height.
        zoom: `(B,)` zoom factor (1 = unchanged).
        flip: `(B,)` 1 to mirror left-right, 0 to keep.
        height: image height in pixels.
        width: image width in pixels.

    Returns:
        A `(B, 8)` float32 tensor.
    """
    angle = ops.cast(angle, "float32") * (math.pi / 180.0)
    shift_x = ops.cast(shift_x, "float32") * float(width)
    shift_y = ops.cast(shift_y, "float32") * float(height)
    zoom = ops.cast(zoom, "float32")
    sign = 1.0 - 2.0 * ops.cast(flip, "float32")  # -1 mirrors x about the centre
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    cos, sin = ops.cos(angle) * zoom, ops.sin(angle) * zoom
    # input = c + Z R F (output - shift - c)
    a0, a1 = cos * sign, -sin
    b0, b1 = sin * sign, cos
    px, py = cx + shift_x, cy + shift_y
    a2 = cx - a0 * px - a1 * py
    b2 = cy - b0 * px - b1 * py
    zeros = ops.zeros_like(a0)
    return ops.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)


@keras.saving.register_keras_serializable(package="aperture")
class RandomGeometry(keras.layers.Layer):
    """Random rotation, shift, zoom and horizontal flip, resampled once per image.

    For every image it draws, independently and uniformly: an angle in
    `[-rotation, rotation]` degrees, shifts in `[-shift, shift]` of the width and of
    the height, a zoom factor in `[1 - zoom, 1 + zoom]` (as `keras.layers.RandomZoom(zoom)`:
    above 1 zooms out), and a left-right flip with probability 0.5 when `flip`.
    Defaults match the Keras layers: bilinear interpolation, `reflect` fill.
    Identity when `training` is false or every part is off.

    Args:
        rotation: maximum rotation in degrees.
        shift: maximum shift as a fraction of the side, in x and in y.
        zoom: maximum zoom in or out as a fraction.
        flip: random horizontal flips.
        fill_mode: `reflect`, `wrap`, `constant` or `nearest`, for points outside the image.
        interpolation: `bilinear` or `nearest`.
        fill_value: the value outside the image when `fill_mode="constant"`.
        seed: seed for the random draws.
    """

    def __init__(self, rotation: float = 0.0, shift: float = 0.0, zoom: float = 0.0, flip: bool = False,
                 fill_mode: str = "reflect", interpolation: str = "bilinear", fill_value: float = 0.0,
                 seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if rotation < 0 or shift < 0 or zoom < 0:
            raise ValueError(f"rotation, shift and zoom must be >= 0, got {rotation}, {shift}, {zoom}")
        if zoom >= 1:
            raise ValueError(f"zoom must be below 1, got {zoom}")
        if fill_mode not in FILL_MODES:
            raise ValueError(f"fill_mode must be one of {FILL_MODES}, got {fill_mode!r}")
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
        self.rotation = float(rotation)
        self.shift = float(shift)
        self.zoom = float(zoom)
        self.flip = bool(flip)
        self.fill_mode = fill_mode
        self.interpolation = interpolation
        self.fill_value = float(fill_value)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = False

    @property
    def active(self) -> bool:
        return bool(self.rotation or self.shift or self.zoom or self.flip)

    def random_transforms(self, batch_size, height: int, width: int, seed=None):
        """Draws `(batch_size, 8)` transforms (see `geometry_transform`); `seed` defaults to the layer's generator."""
        seed = self.seed_generator if seed is None else seed
        u = keras.random.uniform((batch_size, 5), minval=-1.0, maxval=1.0, seed=seed)
        flip = ops.cast(u[:, 4] < 0, "float32") if self.flip else ops.zeros_like(u[:, 4])
        return geometry_transform(u[:, 0] * self.rotation, u[:, 1] * self.shift, u[:, 2] * self.shift,
                                  1.0 + u[:, 3] * self.zoom, flip, height, width)

    def get_random_transformation(self, images, training=True, seed=None):
        """Draws the transforms for a `(B, H, W, C)` batch, as Keras' image preprocessing layers do.

        Args:
            images: the batch the transforms are for.
            training: False (or every part off) draws nothing and returns None.
            seed: a `SeedGenerator` (e.g. a `SeedStream`); default the layer's own.

        Returns:
            A `(B, 8)` tensor for `transform_images`, or None for the identity.
        """
        if not training or not self.active:
            return None
        height, width = images.shape[1], images.shape[2]
        if height is None or width is None:
            raise ValueError(f"RandomGeometry needs a known image height and width, got shape {images.shape}")
        return self.random_transforms(ops.shape(images)[0], int(height), int(width), seed=seed)

    def transform_images(self, images, transformation, training=True):
        """Resamples a `(B, H, W, C)` batch with transforms from `get_random_transformation`."""
        images = ops.cast(images, self.compute_dtype)
        if not training or transformation is None:
            return images
        return ops.image.affine_transform(images, transformation, interpolation=self.interpolation,
                                          fill_mode=self.fill_mode, fill_value=self.fill_value,
                                          data_format="channels_last")

    def call(self, inputs, training=True):
        images = ops.cast(inputs, self.compute_dtype)
        if not training or not self.active:
            return images
        unbatched = len(images.shape) == 3
        if unbatched:
            images = ops.expand_dims(images, 0)
        out = self.transform_images(images, self.get_random_transformation(images), training=True)
        return ops.squeeze(out, 0) if unbatched else out

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"rotation": self.rotation, "shift": self.shift, "zoom": self.zoom, "flip": self.flip,
                       "fill_mode": self.fill_mode, "interpolation": self.interpolation,
                       "fill_value": self.fill_value, "seed": self.seed})
        return config


class SeedStream(keras.random.SeedGenerator):
    """Seeds for Keras random ops that depend only on one seed tensor: draw `n` gets `fold_in(seed, n)`.

    A stateless stand-in for a layer's own `SeedGenerator`, passed as the `seed` of
    `get_random_transformation`. The training pipeline makes one per batch from
    (run seed, epoch, step), so a batch's draws do not depend on how many draws came
    before it: not on which tf.data thread ran first, nor on whether the run was
    resumed. It holds no state variable (a tf.data function cannot create one).

    Args:
        seed: an int64 tensor of shape `(2,)`.
    """

    def __init__(self, seed):  # no super().__init__(): it would create the state variable
        self.seed = tf.cast(seed, tf.int64)
        self.draws = 0

    def next(self, ordered=True):
        self.draws += 1  # counted while tracing: each random op in the graph gets its own seed
        return tf.random.experimental.stateless_fold_in(self.seed, self.draws)
