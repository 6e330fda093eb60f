"""The attribution maps behind `methods.METHODS`: Grad-CAM, SHAP and LIME, and their one-off warm-ups.

Each map function takes a Keras model, one `(H, W, 3)` float32 image in 0..255 and the target
class, with its settings as keywords (their defaults are declared once, in `methods.METHODS`),
and returns `(attribution (H, W), the settings used)`. `predict` is the model's batched
predict where the method samples it (SHAP, LIME); the gradient methods ignore it.

Importing this module is cheap: shap, lime, scikit-image and TensorFlow are imported by the
functions that use them.
"""

from __future__ import annotations

import threading
import weakref

import numpy as np

from engine.explain import faithfulness as fa


def gradcam_map(model, image: np.ndarray, target: int, *, layer_name: str | None, shifts: int | None,
                variant: str, predict=None) -> tuple[np.ndarray, dict]:
    """Grad-CAM (or Grad-CAM++ with `variant="gradcam_pp"`) on the last conv block (found by name when not
    given), with sub-cell shifts (`shifts` phases per axis; default: automatic; 1: none)."""
    from engine.explain.gradcam import gradcam

    layer_name = layer_name or _last_conv(model)
    attribution = gradcam(model, image, layer_name, target, variant=variant, shifts=shifts)
    return attribution, {"layer": layer_name, "shifts": "auto" if shifts is None else int(shifts)}


_LAST_CONV: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> its last conv layer's name


def _last_conv(model) -> str:
    """The model's last conv block (looked up once per model: `describe_model` also counts every weight)."""
    from engine.models import describe_model

    layer_name = _LAST_CONV.get(model)
    if layer_name is None:
        layer_name = describe_model(model)["last_conv"]
        if layer_name is None:
            raise ValueError("the model has no convolutional layer for Grad-CAM")
        _LAST_CONV[model] = layer_name
    return layer_name


def shap_map(model, image: np.ndarray, target: int, *, max_evals: int, batch_size: int, masker: str,
             predict=None) -> tuple[np.ndarray, dict]:
    """SHAP partition explainer with an image masker; the map sums the channels' values.

    `masker` is `"grey"` (hidden pixels turn mid-grey, as in the faithfulness curves) or an `shap.maskers.Image`
    string such as `"blur(9,9)"` (keeps colour, so it is blind to colour cues).
    """
    import shap

    predict = predict or fa.model_predict(model)
    fill = fa.grey(image) if masker == "grey" else masker
    image_masker = shap.maskers.Image(fill, image.shape)
    explainer = shap.Explainer(lambda x: predict(np.asarray(x, dtype=np.float32)), image_masker)
    result = explainer(image[None], max_evals=int(max_evals), batch_size=int(batch_size), outputs=[int(target)],
                       silent=True)
    values = np.asarray(result.values)[0, ..., 0]  # (H, W, C)
    return values.sum(axis=-1).astype(np.float32), {"max_evals": int(max_evals), "batch_size": int(batch_size),
                                                    "masker": masker}


def shap_gradient_map(model, image: np.ndarray, target: int, *, background: np.ndarray | None, nsamples: int,
                      batch_size: int, predict=None) -> tuple[np.ndarray, dict]:
    """`shap.GradientExplainer` (expected gradients) against a background sample of training images."""
    if background is None:
        raise ValueError("shap_gradient needs background=: a sample of training images, (N, H, W, 3)")
    import shap

    background = np.asarray(background, dtype=np.float32)
    explainer = shap.GradientExplainer(model, background, batch_size=int(batch_size))
    values = explainer.shap_values(image[None], nsamples=int(nsamples))
    values = np.asarray(values)  # (1, H, W, C, classes)
    return values[0, ..., int(target)].sum(axis=-1).astype(np.float32), {
        "nsamples": int(nsamples), "background": int(len(background))}


def lime_map(model, image: np.ndarray, target: int, *, num_samples: int, batch_size: int, n_segments: int,
             seed: int, predict=None) -> tuple[np.ndarray, dict]:
    """LIME over SLIC superpixels (~`n_segments`, a grid if SLIC finds none).

    Hidden segments turn mid-grey, as in the faithfulness curves (LIME's default, each
    segment's own mean colour, hides nothing of a flat-coloured region).
    """
    from lime import lime_image
    from skimage.segmentation import slic

    predict = predict or fa.model_predict(model)
    rgb = image if image.shape[2] == 3 else np.repeat(image, 3, axis=2)
    scaled = (rgb / 255.0).astype(np.float64)

    def segment(x):
        segments = slic(x, n_segments=int(n_segments), compactness=20, start_label=0, channel_axis=-1)
        return segments if segments.max() >= 3 else _grid(x.shape[:2], int(n_segments))

    def classify(batch):
        batch = np.asarray(batch, dtype=np.float32) * 255.0
        return predict(batch if image.shape[2] == 3 else batch[..., :1])

    lime_image.tqdm = _silent  # lime 0.2.0.1 has no progress_bar switch; keep its bar out of logs
    explainer = lime_image.LimeImageExplainer(random_state=seed)
    explanation = explainer.explain_instance(scaled, classify, labels=(int(target),), top_labels=None,
                                             hide_color=fa.GREY / 255.0, num_samples=int(num_samples),
                                             batch_size=int(batch_size), segmentation_fn=segment,
                                             random_seed=seed)
    weights = dict(explanation.local_exp[int(target)])
    segments = explanation.segments
    attribution = np.vectorize(lambda s: weights.get(int(s), 0.0), otypes=[np.float64])(segments)
    return attribution.astype(np.float32), {"num_samples": int(num_samples), "batch_size": int(batch_size),
                                            "segments": int(segments.max()) + 1, "seed": int(seed)}


def _silent(iterable, *args, **kwargs):
    return iterable


def _grid(shape: tuple[int, int], count: int) -> np.ndarray:
    """A square grid of about `count` cells: LIME's segments when SLIC finds no structure (e.g. noise)."""
    side = max(1, int(round(np.sqrt(count))))
    rows = np.minimum(np.arange(shape[0]) * side // shape[0], side - 1)
    cols = np.minimum(np.arange(shape[1]) * side // shape[1], side - 1)
    return (rows[:, None] * side + cols[None, :]).astype(np.int64)


# -- warm-ups: `Method.warm_up(model, image_shape, layer_name)`, see `methods.warm_up` -------------------------

_SHAP_LOCK = threading.Lock()
_SHAP_READY = False


def warm_gradcam(model, image_shape: tuple[int, ...] | None, layer_name: str | None) -> None:
    """Builds and traces the model's Grad-CAM graph and measures where its cells look (once per model)."""
    from engine.explain.gradcam import gradcam

    shape = tuple(image_shape or tuple(int(d) for d in model.inputs[0].shape[1:]))
    gradcam(model, np.full(shape, fa.GREY, dtype=np.float32), layer_name or _last_conv(model), 0)


def warm_lime(model=None, image_shape=None, layer_name=None) -> None:
    """Imports lime and scikit-image and segments a tiny image once."""
    rng = np.random.default_rng(0)
    lime_map(None, rng.uniform(0, 255, (8, 8, 3)).astype(np.float32), 0, num_samples=10, batch_size=10,
             n_segments=4, seed=0, predict=_dummy_predict)


def warm_shap(model=None, image_shape=None, layer_name=None) -> None:
    """Compiles shap's numba functions on a tiny dummy image with a NumPy stand-in model (once per process)."""
    global _SHAP_READY
    with _SHAP_LOCK:
        if _SHAP_READY:
            return
        image = np.random.default_rng(0).uniform(0, 255, (8, 8, 3)).astype(np.float32)
        # The same explainer, masker and output selection as `shap_map`, so the same numba
        # signatures compile (they depend on dtypes and ranks, not on sizes).
        shap_map(None, image, 0, max_evals=64, batch_size=64, masker="grey", predict=_dummy_predict)
        _SHAP_READY = True


def _dummy_predict(images: np.ndarray) -> np.ndarray:
    """A stand-in two-class "model" for warming up: the mean brightness and its complement."""
    mean = np.asarray(images, dtype=np.float32).reshape(len(images), -1).mean(axis=1, keepdims=True) / 255.0
    return np.concatenate([mean, 1 - mean], axis=1)
