"""Small building blocks shared by the model factories.

`ChannelPool` is registered as a Keras serializable under the `aperture` package:
import `engine.models` before `keras.models.load_model` on a `resnet_cbam` model.
"""

from __future__ import annotations

import keras
from keras import layers, ops


def kernel_regularizer(weight_decay: float) -> keras.regularizers.Regularizer | None:
    """Returns an L2 kernel regularizer for `weight_decay > 0`, else `None`."""
    return keras.regularizers.L2(weight_decay) if weight_decay > 0 else None


def add_classifier(x, num_classes: int, *, dropout: float = 0.0, regularizer=None):
    """Appends the shared head: optional dropout, `logits` dense, float32 `probabilities` softmax.

    The softmax is float32 so that outputs stay float32 under a mixed precision policy.

    Args:
        x: a 2D feature tensor (batch, features).
        num_classes: number of output classes.
        dropout: rate before the classifier; 0 (default) adds no dropout layer.
        regularizer: kernel regularizer for the dense layer, or `None`.

    Returns:
        The probabilities tensor.
    """
    if dropout > 0:
        x = layers.Dropout(dropout, name="dropout")(x)
    x = layers.Dense(num_classes, kernel_regularizer=regularizer, name="logits")(x)
    return layers.Activation("softmax", dtype="float32", name="probabilities")(x)


@keras.saving.register_keras_serializable(package="aperture")
class ChannelPool(layers.Layer):
    """Stacks the mean and the max over channels: (B, H, W, C) -> (B, H, W, 2).

    The input of CBAM's spatial attention; a named layer rather than a `Lambda` so
    that models save and load in Keras' default safe mode.
    """

    def call(self, inputs):
        return ops.concatenate([ops.mean(inputs, axis=-1, keepdims=True),
                                ops.max(inputs, axis=-1, keepdims=True)], axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 2)
