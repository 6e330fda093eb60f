"""Model factories: `lenet5`, `resnet`, `resnet_cbam` and `transfer` (the zoo of `engine.zoo`).

Every model is functional, takes float32 images in 0..255 and rescales them itself,
and ends in a `logits` dense layer and a float32 `probabilities` softmax. Import this
package before `keras.models.load_model` so that its custom layers are registered.
"""

from __future__ import annotations

import logging

import keras
import numpy as np

from engine.config import ModelConfig
from engine.models import lenet, resnet, transfer
from engine.models.layers import ChannelPool
from engine.models.transfer import BASE_LAYER_NAME, imagenet_weights_path

__all__ = ["BASE_LAYER_NAME", "ChannelPool", "describe_model", "imagenet_weights_path", "last_conv_layer_name",
           "load_run_model", "make_model"]

log = logging.getLogger(__name__)


def make_model(config: ModelConfig, input_shape: tuple[int, int, int], num_classes: int, *,
               weight_decay: float = 0.0, seed: int | None = None) -> keras.Model:
    """Builds the (uncompiled) classifier a model config describes.

    Args:
        config: the model section of a run config; `config.name` is one of `lenet5`,
            `resnet`, `resnet_cbam`, `transfer`.
        input_shape: `(height, width, channels)` of float32 images in 0..255; at least
            8x8 (32x32 with 3 channels for `transfer`).
        num_classes: number of classes, at least 2.
        weight_decay: L2 penalty on conv and dense kernels (for `transfer`, only the
            head's), 0 to 1. Default 0 (none).
        seed: if given, seeds Keras (`keras.utils.set_random_seed`) so that the initial
            weights are reproducible. Default `None` leaves the global seed alone.

    Returns:
        A functional `keras.Model` mapping images to class probabilities (float32).

    Raises:
        ConfigError: a config value is invalid.
        ValueError: `input_shape`, `num_classes` or `weight_decay` is invalid.
    """
    config.validate()
    input_shape = tuple(int(side) for side in input_shape)
    if len(input_shape) != 3 or min(input_shape[:2]) < 8 or input_shape[2] < 1:
        raise ValueError(f"input_shape={input_shape!r}: expected (height, width, channels) of at least 8x8")
    if not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
        raise ValueError(f"num_classes={num_classes!r}: expected an integer of at least 2")
    if not 0 <= weight_decay <= 1:
        raise ValueError(f"weight_decay={weight_decay!r}: expected a number between 0 and 1")
    if seed is not None:
        keras.utils.set_random_seed(seed)
    num_classes = int(num_classes)
    if config.name == "lenet5":
        model = lenet.build_lenet5(config, input_shape, num_classes, weight_decay=weight_decay)
    elif config.name in ("resnet", "resnet_cbam"):
        model = resnet.build_resnet(config, input_shape, num_classes, attention=config.name == "resnet_cbam",
                                    weight_decay=weight_decay)
    else:
        model = transfer.build_transfer(config, input_shape, num_classes, weight_decay=weight_decay)
    log.info("Built %s: %d parameters (%d trainable)", model.name, model.count_params(),
             _count(model.trainable_weights))
    return model


def last_conv_layer_name(config: ModelConfig) -> str:
    """Names the last convolutional feature map, the layer Grad-CAM explains.

    Args:
        config: the model config the model was built from.

    Returns:
        For `lenet5`, `resnet` and `resnet_cbam` a layer of the model itself (`conv2`,
        `stage3_block{depth}_out`); for `transfer` a layer inside the nested base
        (`model.get_layer(BASE_LAYER_NAME).get_layer(name)`): `out_relu` for MobileNetV2,
        `top_activation` for EfficientNetV2B0.
    """
    if config.name == "lenet5":
        return lenet.LAST_CONV
    if config.name in ("resnet", "resnet_cbam"):
        return resnet.last_block_name(config.depth)
    if config.name == "transfer":
        return transfer.LAST_CONV[config.base]
    raise ValueError(f"config.name={config.name!r}: not a known model")


def load_run_model(workspace, run_id: str) -> keras.Model:
    """A run's best checkpoint (`model.keras`), loaded in safe mode: a Lambda layer or unknown code is refused.

    Raises:
        FileNotFoundError: the run has no trained model yet.
        ValueError: the file is corrupt or holds layers safe mode refuses (the message says which).
    """
    from engine.runfolder import RunFolder

    path = RunFolder(workspace, run_id).model_file
    if not path.exists():
        raise FileNotFoundError(f"run {run_id} has no trained model yet ({path.name})")
    return keras.saving.load_model(path, compile=False)


def describe_model(model: keras.Model) -> dict:
    """Summarises a model in a small JSON-able dict.

    Args:
        model: a model built by `make_model` (or loaded from its `.keras` file).

    Returns:
        `{"name", "params", "trainable_params", "layers", "last_conv"}`: total and
        trainable parameter counts, the number of layers (a nested base counts its
        own layers), and the last convolutional layer's name or `None` if none is found.
    """
    return {
        "name": model.name,
        "params": int(model.count_params()),
        "trainable_params": _count(model.trainable_weights),
        "layers": _count_layers(model),
        "last_conv": _find_last_conv(model),
    }


def _count(weights) -> int:
    return int(sum(np.prod(w.shape) for w in weights))


def _count_layers(model: keras.Model) -> int:
    return sum(_count_layers(layer) if isinstance(layer, keras.Model) else 1 for layer in model.layers)


def _find_last_conv(model: keras.Model) -> str | None:
    names = {layer.name for layer in model.layers}
    if BASE_LAYER_NAME in names:
        base_names = {layer.name for layer in model.get_layer(BASE_LAYER_NAME).layers}
        return next((name for name in transfer.LAST_CONV.values() if name in base_names), None)
    for layer in reversed(model.layers):
        if layer.name.endswith("_out") and layer.name.startswith("stage"):
            return layer.name
        if isinstance(layer, keras.layers.Conv2D):
            return layer.name
    return None

