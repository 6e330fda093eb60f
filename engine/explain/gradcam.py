"""Grad-CAM (Selvaraju et al. 2017): where in the image the last feature map supports a class."""

from __future__ import annotations

import numpy as np


def gradcam(model, image: np.ndarray, layer_name: str, class_index: int | None = None) -> np.ndarray:
    """Computes a Grad-CAM heat map for one image.

    Args:
        model: a functional Keras model from `engine.models.make_model` (or loaded from its
            `.keras` file). Transfer models keep the layer inside their nested `base`.
        image: `(H, W, 3)` pixels in 0..255, as the model takes them.
        layer_name: the convolutional layer to explain, usually
            `engine.models.last_conv_layer_name(config.model)`.
        class_index: the class to explain. Default `None`: the predicted class.

    Returns:
        `(H, W)` float32 in [0, 1] (the map bilinearly resized to the image); all zeros
        when no location supports the class.
    """
    import keras
    import tensorflow as tf

    x = tf.convert_to_tensor(np.asarray(image, dtype=np.float32)[None])
    forward = _feature_and_score_model(model, layer_name, keras)
    with tf.GradientTape() as tape:
        features, scores = forward(x)
        if class_index is None:
            class_index = int(tf.argmax(scores[0]))
        target = scores[:, class_index]
    gradients = tape.gradient(target, features)
    if gradients is None:
        raise ValueError(f"layer_name={layer_name!r}: the class score does not depend on this layer")
    weights = tf.reduce_mean(gradients, axis=(1, 2))  # one weight per channel
    cam = tf.nn.relu(tf.reduce_sum(features * weights[:, None, None, :], axis=-1))[0]
    cam = tf.image.resize(cam[..., None], image.shape[:2], method="bilinear")[..., 0].numpy()
    peak = float(cam.max())
    return (cam / peak if peak > 0 else np.zeros_like(cam)).astype(np.float32)


def _feature_and_score_model(model, layer_name: str, keras):
    """A callable image -> (feature map, class scores); scores are logits when the model names them."""
    names = {layer.name for layer in model.layers}
    score_name = "logits" if "logits" in names else None
    if layer_name in names:
        score = model.get_layer(score_name).output if score_name else model.outputs[0]
        graph = keras.Model(model.inputs, [model.get_layer(layer_name).output, score])
        return lambda x: graph(x, training=False)

    # A nested base: the outer graph cannot reach its inner layer, so run the chain by hand
    # with a sub-model of the base that also returns the feature map.
    from engine.models import BASE_LAYER_NAME

    base = model.get_layer(BASE_LAYER_NAME)
    inner = keras.Model(base.inputs, [base.get_layer(layer_name).output, base.outputs[0]])
    chain = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]

    def forward(x):
        features, y = None, x
        for layer in chain:
            if layer is base:
                features, y = inner(y, training=False)
            else:
                y = layer(y, training=False)
            if layer.name == score_name:
                break
        return features, y

    return forward


def overlay(image: np.ndarray, heatmap: np.ndarray, *, alpha: float = 0.45, weighted: bool = False) -> np.ndarray:
    """Blends a [0, 1] heat map (jet-like colours) over a uint8 RGB image; returns uint8 RGB.

    `weighted=True` scales the opacity by the map, so pixels without attribution stay untinted.
    """
    h = np.clip(np.asarray(heatmap, dtype=np.float32), 0, 1)[..., None]
    # A compact blue -> cyan -> yellow -> red ramp, no matplotlib needed.
    colour = np.concatenate([np.clip(1.5 - np.abs(4 * h - 3), 0, 1), np.clip(1.5 - np.abs(4 * h - 2), 0, 1),
                             np.clip(1.5 - np.abs(4 * h - 1), 0, 1)], axis=-1)
    weight = alpha * h if weighted else alpha
    blended = (1 - weight) * np.asarray(image, dtype=np.float32) + weight * 255 * colour
    return np.clip(blended, 0, 255).astype(np.uint8)
