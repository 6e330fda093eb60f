"""Transfer learning on a keras.applications base from the zoo (`engine.zoo.BASES`) or a KerasHub preset (`hub:`).

Pretrained weights are used only when their file is here (the Keras cache, or a path in
`model.weights`); nothing is downloaded here (`python -m engine weights get` does), and a run that
asks for ImageNet weights that are missing is refused (`WeightsMissing`), never silently random.
Each base's own preprocessing is inside the graph, so the model takes 0..255 RGB.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import keras
import numpy as np
from keras import layers

from engine import zoo
from engine.config import ModelConfig
from engine.models.layers import add_classifier, kernel_regularizer
from engine.zoo import WeightsMissing, keras_cache_dir, weights_file_names

__all__ = ["BASE_LAYER_NAME", "LAST_CONV", "WeightsMissing", "build_transfer", "imagenet_weights_path",
           "keras_cache_dir", "make_base", "set_trainable_top", "weights_file_names"]

log = logging.getLogger(__name__)

BASE_LAYER_NAME = "base"


class _LastConv(dict):
    """Base name -> its last convolutional feature map, where Grad-CAM looks; every `hub:` base has the same one."""

    def __missing__(self, base: str) -> str:
        if zoo.is_hub_base(base):
            return zoo.HUB_FEATURES
        raise KeyError(base)


LAST_CONV = _LastConv({name: base.last_conv for name, base in zoo.BASES.items()}, hub=zoo.HUB_FEATURES)


def imagenet_weights_path(base: str, image_size: int | None = None) -> Path | None:
    """Finds a base's cached no-top ImageNet weights without downloading anything (see `engine.zoo.weights_path`).

    Args:
        base: a `model.base`, e.g. `mobilenet_v2`.
        image_size: input side, to prefer MobileNetV2's size-specific file. Default `None`.

    Returns:
        The path of the weights file in the Keras cache, or `None` if it is not there.
    """
    return zoo.weights_path(base, image_size)


def build_transfer(config: ModelConfig, input_shape: tuple[int, int, int], num_classes: int,
                   *, weight_decay: float = 0.0) -> keras.Model:
    """Builds a classifier on a (mostly) frozen keras.applications base.

    The base is a nested model named `base`, called with `training=False` so that its
    batch normalization stays in inference mode even while its top layers fine-tune.
    Bases that do not preprocess 0..255 inputs themselves (MobileNetV2, ResNet50V2) see them
    rescaled to [-1, 1] by a `rescale` layer.

    Args:
        config: `base` (one of the zoo), `weights` (`imagenet`, `random` or a file path),
            `fine_tune_layers` (0 = base frozen; N > 0 = the top N base layers that have weights,
            not counting batch normalization, are trainable; with `random` weights the whole base
            trains) and `dropout`.
        input_shape: `(height, width, 3)` of images in 0..255, at least 32x32.
        num_classes: number of output classes.
        weight_decay: L2 penalty on the head's dense kernel (never on the base); 0 for none.

    Returns:
        A functional `keras.Model` named `transfer_<base>` that outputs class probabilities.

    Raises:
        WeightsMissing: the pretrained weights asked for are not here (the message says how to get them).
    """
    if input_shape[-1] != 3 or min(input_shape[:2]) < 32:
        raise ValueError(f"input_shape={input_shape!r}: a {config.base} base needs 3 channels "
                         "and images of at least 32x32")
    size = input_shape[0] if input_shape[0] == input_shape[1] else None
    path, source = zoo.resolve_weights(config.base, config.weights, size)
    log.info("%s base: %s weights%s", config.base, source["source"], f" from {path}" if path else "")
    random = source["source"] == "random"
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    if zoo.is_hub_base(config.base):
        base, preprocess = make_hub_base(path, load_weights=not random)
        x = preprocess(x)
    else:
        base = make_base(config.base, input_shape, path)
        rescale = zoo.get_base(config.base).rescale
        if rescale is not None:
            x = layers.Rescaling(rescale[0], offset=rescale[1], name="rescale")(x)
    if random:
        base.trainable = True  # a random base must learn: a frozen random base never can
    else:
        set_trainable_top(base, config.fine_tune_layers)

    x = base(x, training=False)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = add_classifier(x, num_classes, dropout=config.dropout, regularizer=kernel_regularizer(weight_decay))
    name = zoo.hub_preset(config.base) if zoo.is_hub_base(config.base) else config.base
    return keras.Model(inputs, outputs, name=f"transfer_{name}")


def make_hub_base(folder: Path, *, load_weights: bool = True) -> tuple[keras.Model, layers.Layer]:
    """A KerasHub preset folder's backbone, named `base`, and its image preprocessing as a plain Keras layer.

    The backbone is re-wrapped so that its last feature map passes through an identity layer named
    `engine.zoo.HUB_FEATURES` (Grad-CAM's layer, the same for every preset). The preset's image converter
    (`x * scale + offset` on 0..255 RGB) becomes a plain per-channel `Rescaling` layer named `preprocess`, so the
    model takes 0..255 RGB and exports need no KerasHub preprocessor (a ResNet backbone is plain Keras layers;
    MobileNet's blocks are KerasHub layers, which Keras imports by module when loading). The converter's resize is
    left out: the backbone is fully convolutional and the data pipeline already sizes the images.

    Args:
        folder: a preset folder (`config.json`, `model.weights.h5`, `image_converter.json`).
        load_weights: False builds the architecture with random weights (`model.weights=random`).

    Raises:
        ValueError: the folder's weights do not fit its config, or its converter is not an image converter.
    """
    import keras_hub  # a few seconds, and only transfer runs on a hub base need it

    with warnings.catch_warnings():  # Keras only warns when a weights file lacks some layers: never a random base
        warnings.filterwarnings("error", message=".*retain their freshly-initialized weights", category=UserWarning)
        try:
            backbone = keras_hub.models.Backbone.from_preset(str(folder), load_weights=load_weights)
        except UserWarning as warning:
            raise ValueError(f"its model.weights.h5 lacks weights of layers its config.json has ({warning})") from None
    converter = keras_hub.layers.ImageConverter.from_preset(str(folder))
    if len(backbone.output.shape) != 4:
        raise ValueError(f"{folder}: the {type(backbone).__name__} does not output an image feature map")
    features = layers.Activation("linear", name=zoo.HUB_FEATURES)(backbone.output)
    base = keras.Model(backbone.inputs, features, name=BASE_LAYER_NAME)
    scale = np.broadcast_to(np.asarray(1.0 if converter.scale is None else converter.scale, "float32"), (3,))
    offset = np.broadcast_to(np.asarray(0.0 if converter.offset is None else converter.offset, "float32"), (3,))
    # Constants, not a Normalization layer's variables: tf2onnx turns those into extra model inputs.
    preprocess = layers.Rescaling(scale.tolist(), offset=offset.tolist(), name="preprocess")
    return base, preprocess


def make_base(base: str, input_shape: tuple[int, int, int], weights: Path | str | None) -> keras.Model:
    """The no-top keras.applications base, named `base`, with `weights` loaded (None: random).

    Raises:
        ValueError: the weights file does not fit the base (Keras names the layer and shapes).
    """
    entry = zoo.get_base(base)
    constructor = getattr(keras.applications, entry.constructor)
    options = {} if entry.rescale is not None else {"include_preprocessing": True}
    model = constructor(include_top=False, input_shape=input_shape, weights=None, **options)
    if weights is not None:
        model.load_weights(str(weights))  # by file type: legacy .h5 by layer name, .weights.h5 by structure
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
