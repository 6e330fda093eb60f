"""Grad-CAM (Selvaraju et al. 2017) and Grad-CAM++ (Chattopadhay et al. 2018): where in the image a
convolutional feature map supports a class.

On the small images this project trains on, the last conv block is a grid of only 4x4 to
12x12 cells (a cell every 2-4 px on 32 px images), so how the grid becomes a pixel map
decides where the map's peak lands. Three things here:

- Placement. Each cell's value is put at the centre of the pixels it depends on, not spread
  evenly edge to edge as a plain resize does. A plain resize is wrong for valid
  convolutions (LeNet-5's `conv2` on 32 px: 12 cells centred on pixels 5..27 get stretched
  over 0..32, up to 3.7 px off), off by about a pixel on TensorFlow's asymmetric `same`
  padding at stride 2 (the ResNets), and blind to border cells whose receptive field is
  mostly padding (on 32 px a ResNet's corner cell looks at pixels centred about 5 px in).
  The centres are the centres of mass of the effective receptive fields (Luo et al. 2016):
  the input-gradient magnitude of each row and each column of cells, on noise images,
  measured once per model, layer and image shape (no data, no labels).
- Sub-cell shifts ("augmented Grad-CAM", Morbidelli et al. 2020). The image is also
  explained shifted by a few pixels (up to 4 phases per axis spread over one cell's
  stride: -2..1 px on a 4 px grid, edges replicated); each shifted map is placed back by
  its shift and the maps are averaged. One grid samples the evidence every 4 px; the
  shifted grids fill in between, so the map's resolution approaches a pixel. The channel
  weights and the class are those of Grad-CAM on each shifted copy; `shifts=1` gives
  plain single-pass Grad-CAM.
- Cost. The feature/score graph is built once per model and layer, compiled as a
  `tf.function` that takes all shifted copies in one batch, and reused (cached in a
  `WeakKeyDictionary`, so it goes when the model does).
"""

from __future__ import annotations

import math
import threading
import weakref

import numpy as np

VARIANTS = ("gradcam", "gradcam_pp")
MAX_SHIFTS = 4  # phases per axis at most (16 passes)
PROBES = 2  # noise images averaged when measuring where each cell looks
_BATCH_PIXELS = 2**20  # pixels per gradient batch (bounds memory on large inputs)

_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {layer name: _CamGraph}
_LOCK = threading.Lock()


def gradcam(model, image: np.ndarray, layer_name: str, class_index: int | None = None, *,
            variant: str = "gradcam", shifts: int | None = None) -> np.ndarray:
    """Computes a Grad-CAM (or Grad-CAM++) heat map for one image.

    Args:
        model: a functional Keras model from `engine.models.make_model` (or loaded from its
            `.keras` file). Transfer models keep the layer inside their nested `base`.
        image: `(H, W, C)` pixels in 0..255, as the model takes them.
        layer_name: the convolutional layer to explain, usually
            `engine.models.last_conv_layer_name(config.model)`.
        class_index: the class to explain. Default `None`: the predicted class.
        variant: `gradcam` (channel weights: the mean gradient) or `gradcam_pp` (Grad-CAM++:
            positive gradients weighted per location, so several or large regions of the
            class count fully rather than as an average). Grad-CAM++'s weighting assumes the
            score is linear in globally pooled features (the ResNets, the transfer models);
            on LeNet-5's flatten-and-dense head it can lose the class: use Grad-CAM there.
        shifts: phases per axis of the sub-cell shifts (see the module doc). Default `None`:
            one per pixel of the grid's stride, at most `MAX_SHIFTS`; 1 = no shifts.

    Returns:
        `(H, W)` float32 in [0, 1]; all zeros when no location supports the class.

    Raises:
        ValueError: an unknown variant, a layer the class score does not depend on, or a
            layer without a spatial feature map.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant={variant!r}: expected one of {', '.join(VARIANTS)}")
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3:
        raise ValueError(f"image shape {image.shape}: expected (H, W, C)")
    graph = _cam_graph(model, layer_name)
    heat = graph.heat(image, -1 if class_index is None else int(class_index), variant, shifts)
    peak = float(heat.max())
    return (heat / peak if peak > 0 else np.zeros_like(heat)).astype(np.float32)


def gradcam_pp(model, image: np.ndarray, layer_name: str, class_index: int | None = None, *,
               shifts: int | None = None) -> np.ndarray:
    """Grad-CAM++ (`gradcam(..., variant="gradcam_pp")`)."""
    return gradcam(model, image, layer_name, class_index, variant="gradcam_pp", shifts=shifts)


def cell_centres(model, layer_name: str, image_shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Where in the image each row and column of the layer's cells looks: `(row centres, column centres)` in
    pixels (0 = the image's top/left edge, so pixel k's centre is k + 0.5)."""
    return _cam_graph(model, layer_name).centres(tuple(int(s) for s in image_shape))


def default_shifts(image_shape: tuple[int, ...], grid: tuple[int, int]) -> tuple[int, int]:
    """Phases per axis when `shifts=None`: the grid's stride in pixels (rounded up), at most `MAX_SHIFTS`; 1 along
    an axis with a single cell (a 1x1 map, e.g. MobileNetV2's on 32 px, is flat however it is shifted)."""
    return tuple(1 if cells == 1 else max(1, min(MAX_SHIFTS, math.ceil(size / cells)))
                 for size, cells in zip(image_shape[:2], grid))


def clear_cache(model=None) -> None:
    """Forgets the compiled graphs and measured placements of `model` (of every model by default)."""
    with _LOCK:
        if model is None:
            _CACHE.clear()
        else:
            _CACHE.pop(model, None)


def _cam_graph(model, layer_name: str) -> _CamGraph:
    with _LOCK:
        per_model = _CACHE.get(model)
        if per_model is None:
            per_model = _CACHE[model] = {}
        graph = per_model.get(layer_name)
        if graph is None:
            graph = per_model[layer_name] = _CamGraph(model, layer_name)
        return graph


class _CamGraph:
    """One model and layer: the compiled map function and, per image shape, where the cells sit."""

    def __init__(self, model, layer_name: str):
        import keras
        import tensorflow as tf

        self.layer_name = layer_name
        self._forward = _feature_and_score_model(model, layer_name, keras)
        self._tf = tf
        self._cams = tf.function(self._cams_graph, reduce_retracing=True)
        self._centres: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray]] = {}
        self._lock = threading.Lock()

    def _cams_graph(self, x, class_index):
        """Cell maps `(N, h, w)` of a batch, Grad-CAM's and Grad-CAM++'s, for `class_index` (-1: the top class of
        the first image), and the class used."""
        tf = self._tf
        with tf.GradientTape() as tape:
            features, scores = self._forward(x)
            if features.shape.rank != 4:
                raise ValueError(f"layer_name={self.layer_name!r}: not a spatial feature map "
                                 f"(output shape {tuple(features.shape)})")
            target = tf.where(class_index < 0, tf.argmax(scores[0], output_type=tf.int32), class_index)
            score = tf.reduce_sum(scores[:, target])  # images are independent: per-image gradients
        gradients = tape.gradient(score, features)
        if gradients is None:
            raise ValueError(f"layer_name={self.layer_name!r}: the class score does not depend on this layer")
        features, gradients = tf.cast(features, tf.float32), tf.cast(gradients, tf.float32)
        weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)  # Grad-CAM: one weight per channel
        plain = tf.nn.relu(tf.reduce_sum(features * weights, axis=-1))
        # Grad-CAM++ (their eq. 19: with exp(score), the higher derivatives are powers of the gradient).
        squared = gradients * gradients
        denominator = 2 * squared + tf.reduce_sum(features, axis=(1, 2), keepdims=True) * squared * gradients
        alpha = tf.where(denominator > 0, squared / tf.where(denominator > 0, denominator, 1.0), 0.0)
        weights_pp = tf.reduce_sum(alpha * tf.nn.relu(gradients), axis=(1, 2), keepdims=True)
        plus = tf.nn.relu(tf.reduce_sum(features * weights_pp, axis=-1))
        return plain, plus, target

    def heat(self, image: np.ndarray, class_index: int, variant: str, shifts: int | None) -> np.ndarray:
        """The unnormalised `(H, W)` map: the shifted copies' cell maps, each placed back by its shift, averaged."""
        tf = self._tf
        height, width = image.shape[:2]
        rows, cols = self.centres(image.shape)
        phases = default_shifts(image.shape, (len(rows), len(cols))) if shifts is None else (int(shifts),) * 2
        if min(phases) < 1:
            raise ValueError(f"shifts={shifts!r}: expected at least 1")
        offsets_y, offsets_x = _offsets(phases[0], height / len(rows)), _offsets(phases[1], width / len(cols))
        moves = [(dy, dx) for dy in offsets_y for dx in offsets_x]
        moves.sort(key=lambda move: move != (0, 0))  # the unshifted image first: it picks the default class
        chunk = max(1, _BATCH_PIXELS // (height * width))
        which = VARIANTS.index(variant)
        target = tf.constant(class_index, tf.int32)
        cams = []
        for start in range(0, len(moves), chunk):
            batch = np.stack([_shift(image, dy, dx) for dy, dx in moves[start:start + chunk]])
            maps = self._cams(tf.convert_to_tensor(batch), target)
            cams.append(maps[which].numpy().astype(np.float64))
            target = maps[2]
        cams = np.concatenate(cams)
        heat = np.zeros((height, width))
        for (dy, dx), cam in zip(moves, cams):
            # Content moved by (dy, dx), so each cell looked at the original image (dy, dx) earlier.
            heat += _interpolation(rows - dy, height) @ cam @ _interpolation(cols - dx, width).T
        return heat / len(moves)

    def centres(self, image_shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            centres = self._centres.get(image_shape)
            if centres is None:
                centres = self._centres[image_shape] = self._measure_centres(image_shape)
            return centres

    def _measure_centres(self, image_shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Row and column centres from the effective receptive fields on noise images (see the module doc)."""
        tf = self._tf
        height, width = image_shape[:2]
        probes = np.random.default_rng(0).uniform(0, 255, (PROBES, *image_shape)).astype(np.float32)
        features = self._forward(tf.convert_to_tensor(probes[:1]))[0]
        if len(features.shape) != 4:
            raise ValueError(f"layer_name={self.layer_name!r}: not a spatial feature map "
                             f"(output shape {tuple(features.shape)})")
        h, w = (int(d) for d in features.shape[1:3])
        # Selector k picks row k (k < h) or column k - h of the grid: the profile of its input gradient
        # along y (rows) or x (columns) shows where that row or column looks. One image per probe and selector.
        select = np.zeros((h + w, h, w), dtype=np.float32)
        for k in range(h):
            select[k, k, :] = 1
        for k in range(w):
            select[h + k, :, k] = 1
        jobs = [(p, k) for p in range(PROBES) for k in range(h + w)]
        chunk = max(1, _BATCH_PIXELS // (height * width))
        profile_y, profile_x = np.zeros((h, height)), np.zeros((w, width))
        for start in range(0, len(jobs), chunk):
            part = jobs[start:start + chunk]
            batch = tf.convert_to_tensor(probes[[p for p, _ in part]])
            selector = tf.convert_to_tensor(select[[k for _, k in part]])
            with tf.GradientTape() as tape:
                tape.watch(batch)
                features = tf.cast(self._forward(batch)[0], tf.float32)
                total = tf.reduce_sum(tf.reduce_sum(features, axis=-1) * selector)
            gradient = tape.gradient(total, batch)
            if gradient is None:
                return _even(h, height), _even(w, width)
            magnitude = np.abs(gradient.numpy()).sum(axis=-1)  # (n, H, W)
            for (_, k), field in zip(part, magnitude):
                if k < h:
                    profile_y[k] += field.sum(axis=1)
                else:
                    profile_x[k - h] += field.sum(axis=0)
        return _centres_of_mass(profile_y, height), _centres_of_mass(profile_x, width)


def _offsets(count: int, stride: float) -> list[int]:
    """`count` whole-pixel shifts around 0, evenly spread over one stride of the grid: 4 on a 4 px grid ->
    [-2, -1, 0, 1]; 4 on a 32 px grid -> [-16, -8, 0, 8]."""
    step = max(1, round(stride / count))
    return [step * (k - count // 2) for k in range(count)]


def _shift(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """The image with its content moved down by `dy` and right by `dx` pixels, edge pixels repeated."""
    height, width = image.shape[:2]
    rows = np.clip(np.arange(height) - dy, 0, height - 1)
    cols = np.clip(np.arange(width) - dx, 0, width - 1)
    return image[rows][:, cols]


def _even(count: int, size: int) -> np.ndarray:
    """Cells spread evenly edge to edge: what a plain resize assumes (the fallback)."""
    return (np.arange(count) + 0.5) * size / count


def _centres_of_mass(profiles: np.ndarray, size: int) -> np.ndarray:
    """Each profile's centre of mass in pixels; evenly spread cells if they are not finite and increasing."""
    position = np.arange(profiles.shape[1]) + 0.5
    with np.errstate(invalid="ignore", divide="ignore"):
        centres = (profiles * position).sum(axis=1) / profiles.sum(axis=1)
    if not np.all(np.isfinite(centres)) or np.any(np.diff(centres) <= 0):
        return _even(profiles.shape[0], size)
    return centres


def _interpolation(centres: np.ndarray, size: int) -> np.ndarray:
    """`(size, len(centres))`: linear interpolation between cell centres at each pixel centre; pixels beyond
    the outer centres take the outer cell's value."""
    count = len(centres)
    matrix = np.zeros((size, count))
    if count == 1:
        matrix[:, 0] = 1
        return matrix
    position = np.interp(np.arange(size) + 0.5, centres, np.arange(count))
    low = np.minimum(np.floor(position).astype(int), count - 2)
    fraction = position - low
    matrix[np.arange(size), low] = 1 - fraction
    matrix[np.arange(size), low + 1] = fraction
    return matrix


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

    if BASE_LAYER_NAME not in names:
        raise ValueError(f"layer_name={layer_name!r}: no such layer in the model")
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
