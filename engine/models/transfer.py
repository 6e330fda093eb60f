"""Transfer learning on a keras.applications base (MobileNetV2, EfficientNetV2B0).

ImageNet weights are used only when their file is already in the Keras cache
(`$KERAS_HOME/models`, default `~/.keras/models`); nothing is downloaded here.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import keras
from keras import layers

from engine.config import ModelConfig, TRANSFER_BASES
from engine.models.layers import add_classifier, kernel_regularizer

log = logging.getLogger(__name__)

BASE_LAYER_NAME = "base"
# The base's last convolutional activation: where Grad-CAM looks.
LAST_CONV = {"mobilenet_v2": "out_relu", "efficientnet_v2b0": "top_activation"}
# keras.applications' URL folders, for the message that says where to get the weights.
WEIGHTS_URL = {
    "mobilenet_v2": "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/",
    "efficientnet_v2b0": "https://storage.googleapis.com/tensorflow/keras-applications/efficientnet_v2/",
}
# Input sizes with their own MobileNetV2 weight file; others use the 224 file. Without
# the top the kernels do not depend on the input size, so any of the files fits.
_MOBILENET_SIZES = (96, 128, 160, 192, 224)


def weights_file_names(base: str, image_size: int | None = None) -> list[str]:
    """Names keras.applications gives a base's no-top ImageNet weights, preferred first.

    Args:
        base: `mobilenet_v2` or `efficientnet_v2b0`.
        image_size: input side; picks MobileNetV2's size-specific file (96, 128, 160,
            192 or 224) when there is one. Default `None` (the 224 file).

    Returns:
        File names as keras.applications caches them under `models/`.
    """
    if base == "mobilenet_v2":
        sizes = [image_size] if image_size in _MOBILENET_SIZES and image_size != 224 else []
        return [f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{size}_no_top.h5" for size in [*sizes, 224]]
    if base == "efficientnet_v2b0":
        return ["efficientnetv2-b0_notop.h5"]
    raise ValueError(f"base={base!r}: must be one of {', '.join(TRANSFER_BASES)}")


def keras_cache_dir() -> Path:
    """Returns the folder where keras.applications caches weights: `$KERAS_HOME/models` or `~/.keras/models`."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models"


def imagenet_weights_path(base: str, image_size: int | None = None) -> Path | None:
    """Finds a base's cached no-top ImageNet weights without downloading anything.

    Args:
        base: `mobilenet_v2` or `efficientnet_v2b0`.
        image_size: input side, to prefer MobileNetV2's size-specific file. Default `None`.

    Returns:
        The path of the weights file in the Keras cache, or `None` if it is not there.
    """
    folder = keras_cache_dir()
    for name in weights_file_names(base, image_size):
        if (folder / name).is_file():
            return folder / name
    return None


def build_transfer(config: ModelConfig, input_shape: tuple[int, int, int], num_classes: int,
                   *, weight_decay: float = 0.0) -> keras.Model:
    """Builds a classifier on a (mostly) frozen keras.applications base.

    The base is a nested model named `base`, called with `training=False` so that its
    batch normalization stays in inference mode even while its top layers fine-tune.
    MobileNetV2 sees inputs rescaled to [-1, 1] by a `rescale` layer; EfficientNetV2B0
    rescales 0..255 inputs itself.

    Args:
        config: `base` (`mobilenet_v2` or `efficientnet_v2b0`), `fine_tune_layers`
            (0 = base frozen; N > 0 = the top N base layers that have weights, not
            counting batch normalization, are trainable) and `dropout`.
        input_shape: `(height, width, 3)` of images in 0..255, at least 32x32.
        num_classes: number of output classes.
        weight_decay: L2 penalty on the head's dense kernel (never on the base); 0 for none.

    Returns:
        A functional `keras.Model` named `transfer_<base>` that outputs class probabilities.
    """
    if input_shape[-1] != 3 or min(input_shape[:2]) < 32:
        raise ValueError(f"input_shape={input_shape!r}: a {config.base} base needs 3 channels "
                         "and images of at least 32x32")
    base = _make_base(config.base, input_shape)
    set_trainable_top(base, config.fine_tune_layers)

    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    if config.base == "mobilenet_v2":
        x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="rescale")(x)
    x = base(x, training=False)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = add_classifier(x, num_classes, dropout=config.dropout, regularizer=kernel_regularizer(weight_decay))
    return keras.Model(inputs, outputs, name=f"transfer_{config.base}")


def _make_base(base: str, input_shape: tuple[int, int, int]) -> keras.Model:
    path = imagenet_weights_path(base, input_shape[0] if input_shape[0] == input_shape[1] else None)
    if path is None:
        log.warning("No ImageNet weights for %s in %s: the base starts from random initialisation. "
                    "To use ImageNet weights, download %s%s into that folder.",
                    base, keras_cache_dir(), WEIGHTS_URL[base], weights_file_names(base)[-1])
    else:
        log.info("Loading ImageNet weights for %s from %s", base, path)
    # A file path rather than weights="imagenet", which would try to download.
    weights = str(path) if path is not None else None
    if base == "mobilenet_v2":
        model = keras.applications.MobileNetV2(include_top=False, input_shape=input_shape, weights=weights)
    else:
        model = keras.applications.EfficientNetV2B0(include_top=False, input_shape=input_shape, weights=weights,
                                                    include_preprocessing=True)
    # Renamed by re-wrapping the same layers: EfficientNetV2 looks its blocks up by its `name` argument.
    return keras.Model(model.input, model.output, name=BASE_LAYER_NAME)


def set_trainable_top(base: keras.Model, count: int) -> list[str]:
    """Freezes a base except its top `count` layers with weights; batch normalization stays frozen.

    Args:
        base: the keras.applications model.
        count: how many of the topmost non-BatchNormalization layers that have weights to
            unfreeze; 0 freezes the whole base.

    Returns:
        The names of the trainable layers, top first.
    """
    if count <= 0:
        base.trainable = False
        return []
    base.trainable = True
    trainable = []
    for layer in reversed(base.layers):
        tune = (len(trainable) < count and bool(layer.trainable_weights)
                and not isinstance(layer, layers.BatchNormalization))
        layer.trainable = tune
        if tune:
            trainable.append(layer.name)
    return trainable
