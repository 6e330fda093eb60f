"""A small CIFAR-style ResNet (He et al., 2016), optionally with CBAM attention (Woo et al., 2018)."""

from __future__ import annotations

import keras
from keras import layers

from engine.config import ModelConfig
from engine.models.layers import ChannelPool, add_classifier, kernel_regularizer

STAGES = 3
CBAM_REDUCTION = 8
CBAM_KERNEL = 7


def last_block_name(depth: int) -> str:
    """Returns the name of the last residual block's output, e.g. `stage3_block2_out`."""
    return f"stage{STAGES}_block{depth}_out"


def build_resnet(config: ModelConfig, input_shape: tuple[int, int, int], num_classes: int,
                 *, attention: bool = False, weight_decay: float = 0.0) -> keras.Model:
    """Builds a three-stage ResNet of basic blocks, with or without CBAM.

    Stem conv 3x3 (`width` filters) + BN + ReLU, then three stages of `depth` blocks
    with `width`, `2*width` and `4*width` filters (stride 2 at the start of stages 2
    and 3), global average pooling, dropout and the classifier. Layers are named
    `stage{s}_block{b}_{part}`; each block ends in `stage{s}_block{b}_out`.

    Args:
        config: `width` (filters of stage 1), `depth` (blocks per stage), `dropout`.
        input_shape: `(height, width, channels)` of images in 0..255.
        num_classes: number of output classes.
        attention: if True, applies CBAM (channel then spatial attention) to each
            block's residual branch before the addition. Default False.
        weight_decay: L2 penalty on conv and dense kernels; 0 (default) for none.

    Returns:
        A functional `keras.Model` named `resnet` or `resnet_cbam` that outputs class
        probabilities.
    """
    regularizer = kernel_regularizer(weight_decay)
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    x = _conv(x, config.width, 3, 1, regularizer, "stem_conv")
    x = _batch_norm("stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    for stage in range(1, STAGES + 1):
        filters = config.width * 2 ** (stage - 1)
        for block in range(1, config.depth + 1):
            strides = 2 if stage > 1 and block == 1 else 1
            x = _residual_block(x, filters, strides, attention=attention, regularizer=regularizer,
                                name=f"stage{stage}_block{block}")
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = add_classifier(x, num_classes, dropout=config.dropout, regularizer=regularizer)
    return keras.Model(inputs, outputs, name="resnet_cbam" if attention else "resnet")


def _batch_norm(name: str) -> layers.BatchNormalization:
    # Momentum 0.9, not Keras's 0.99: the moving statistics must settle within the few hundred
    # steps a small dataset gives, or validation runs on stale statistics and sits at chance.
    return layers.BatchNormalization(momentum=0.9, name=name)


def _conv(x, filters: int, kernel_size: int, strides: int, regularizer, name: str):
    # No bias: every conv here is followed by batch normalization.
    return layers.Conv2D(filters, kernel_size, strides=strides, padding="same", use_bias=False,
                         kernel_initializer="he_normal", kernel_regularizer=regularizer, name=name)(x)


def _residual_block(x, filters: int, strides: int, *, attention: bool, regularizer, name: str):
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = _conv(x, filters, 1, strides, regularizer, f"{name}_proj_conv")
        shortcut = _batch_norm(f"{name}_proj_bn")(shortcut)
    y = _conv(x, filters, 3, strides, regularizer, f"{name}_conv1")
    y = _batch_norm(f"{name}_bn1")(y)
    y = layers.ReLU(name=f"{name}_relu1")(y)
    y = _conv(y, filters, 3, 1, regularizer, f"{name}_conv2")
    y = _batch_norm(f"{name}_bn2")(y)
    if attention:
        y = _cbam(y, regularizer=regularizer, name=f"{name}_cbam")
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.ReLU(name=f"{name}_out")(y)


def _cbam(x, *, regularizer, name: str):
    """Convolutional Block Attention Module: channel attention, then spatial attention."""
    channels = x.shape[-1]
    hidden = max(1, channels // CBAM_REDUCTION)
    # One MLP shared by the average- and max-pooled descriptors, as in the paper.
    squeeze = layers.Dense(hidden, activation="relu", kernel_regularizer=regularizer, name=f"{name}_mlp1")
    excite = layers.Dense(channels, kernel_regularizer=regularizer, name=f"{name}_mlp2")
    avg = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_avg")(x)
    top = layers.GlobalMaxPooling2D(keepdims=True, name=f"{name}_max")(x)
    scale = layers.Add(name=f"{name}_channel_sum")([excite(squeeze(avg)), excite(squeeze(top))])
    scale = layers.Activation("sigmoid", name=f"{name}_channel_gate")(scale)
    x = layers.Multiply(name=f"{name}_channel_scale")([x, scale])

    pooled = ChannelPool(name=f"{name}_channel_pool")(x)
    mask = layers.Conv2D(1, CBAM_KERNEL, padding="same", activation="sigmoid",
                         kernel_regularizer=regularizer, name=f"{name}_spatial_conv")(pooled)
    return layers.Multiply(name=f"{name}_spatial_scale")([x, mask])
