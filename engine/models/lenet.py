"""LeNet-5 (LeCun et al., 1998), adapted to colour images of any size from 8 pixels up."""

from __future__ import annotations

import keras
from keras import layers

from engine.config import ModelConfig
from engine.models.layers import add_classifier, kernel_regularizer

LAST_CONV = "conv2"
_POOLS = {"average": layers.AveragePooling2D, "max": layers.MaxPooling2D}


def build_lenet5(config: ModelConfig, input_shape: tuple[int, int, int], num_classes: int,
                 *, weight_decay: float = 0.0) -> keras.Model:
    """Builds LeNet-5: conv 6@5x5, pool, conv 16@5x5, pool, dense 120, dense 84, classifier.

    The first convolution pads `same` so 28 and 32 pixel images both work. On small
    images the second convolution pads `same` when a 5x5 `valid` window would not fit,
    and a pooling step is skipped when the map is already a single pixel, so the
    network builds for images down to 8x8.

    Args:
        config: `activation` (`tanh` as in the paper, or `relu`), `pooling` (`average`
            as in the paper, or `max`) and `dropout` (rate before the classifier, 0 = none).
        input_shape: `(height, width, channels)` of images in 0..255.
        num_classes: number of output classes.
        weight_decay: L2 penalty on conv and dense kernels; 0 (default) for none.

    Returns:
        A functional `keras.Model` named `lenet5` that outputs class probabilities.
    """
    regularizer = kernel_regularizer(weight_decay)
    pool = _POOLS[config.pooling]
    side = min(input_shape[0], input_shape[1])

    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    x = layers.Conv2D(6, 5, padding="same", activation=config.activation,
                      kernel_regularizer=regularizer, name="conv1")(x)
    if side >= 2:
        x = pool(2, name="pool1")(x)
        side //= 2
    padding = "valid" if side >= 5 else "same"
    x = layers.Conv2D(16, 5, padding=padding, activation=config.activation,
                      kernel_regularizer=regularizer, name=LAST_CONV)(x)
    if padding == "valid":
        side -= 4
    if side >= 2:
        x = pool(2, name="pool2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(120, activation=config.activation, kernel_regularizer=regularizer, name="fc1")(x)
    x = layers.Dense(84, activation=config.activation, kernel_regularizer=regularizer, name="fc2")(x)
    outputs = add_classifier(x, num_classes, dropout=config.dropout, regularizer=regularizer)
    return keras.Model(inputs, outputs, name="lenet5")
