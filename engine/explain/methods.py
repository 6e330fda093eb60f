"""Grad-CAM, SHAP and LIME behind one call, each returning an `Explanation` with its cost and faithfulness.

All functions are pure: a Keras model (as `engine.models.make_model` builds it, or loaded
from its `.keras` file) and one `(H, W, 3)` float32 image in 0..255 in, data out.
`warm_up` pays the one-off costs (SHAP's numba compilation, Grad-CAM's graph) ahead of time.
"""

from __future__ import annotations

import threading
import time
import weakref
from dataclasses import asdict, dataclass, field

import numpy as np

from engine.explain import faithfulness as fa

METHODS = ("gradcam", "shap", "lime")  # the three shown side by side
EXTRA_METHODS = ("gradcam_pp", "shap_gradient")  # also accepted by `explain`
LABELS = {"gradcam": "Grad-CAM", "gradcam_pp": "Grad-CAM++", "shap": "SHAP", "lime": "LIME",
          "shap_gradient": "SHAP (gradients)"}
SHAP_DEFAULTS = {"max_evals": 500, "batch_size": 50}
LIME_DEFAULTS = {"num_samples": 1000, "batch_size": 200, "n_segments": 30, "seed": 0}


@dataclass
class Explanation:
    """One attribution map for one image and class.

    `attribution` is `(H, W)` float32 at the input's resolution; higher means more support
    for the target class (SHAP and LIME maps are signed, Grad-CAM's are in [0, 1]).
    """

    method: str
    attribution: np.ndarray
    target: int
    target_name: str
    probability: float  # the model's probability of the target class on the untouched image
    params: dict = field(default_factory=dict)
    seconds: float = 0.0  # time to compute the map (not the faithfulness curves)
    deletion_auc: float | None = None
    insertion_auc: float | None = None
    random_deletion_auc: float | None = None
    random_insertion_auc: float | None = None
    deletion_curve: list[float] | None = None
    insertion_curve: list[float] | None = None

    @property
    def faithfulness_score(self) -> float | None:
        """How much the map beats random on both curves (higher is better); None if not measured."""
        if self.deletion_auc is None:
            return None
        return (self.random_deletion_auc - self.deletion_auc) + (self.insertion_auc - self.random_insertion_auc)

    def heatmap(self) -> np.ndarray:
        """The positive part scaled to [0, 1], for overlays."""
        positive = np.clip(np.nan_to_num(self.attribution), 0, None)
        peak = float(positive.max())
        return (positive / peak if peak > 0 else np.zeros_like(positive)).astype(np.float32)

    def summary(self) -> dict:
        """The JSON-able fields (no map)."""
        out = asdict(self)
        out.pop("attribution")
        out["label"] = LABELS.get(self.method, self.method)
        out["faithfulness_score"] = self.faithfulness_score
        return out


def _image(image) -> np.ndarray:
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ValueError(f"image shape {image.shape}: expected (H, W, 3) (or (H, W, 1))")
    return image


def gradcam_map(model, image: np.ndarray, target: int, *, layer_name: str | None = None,
                variant: str = "gradcam", shifts: int | None = None) -> tuple[np.ndarray, dict]:
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


def shap_map(model, image: np.ndarray, target: int, *, max_evals: int = 500, batch_size: int = 50,
             masker: str = "grey", predict=None) -> tuple[np.ndarray, dict]:
    """SHAP partition explainer with an image masker; the map sums the channels' values.

    `masker` is `"grey"` (hidden pixels turn mid-grey, as in the faithfulness curves) or an `shap.maskers.Image` string such as `"blur(9,9)"` (keeps colour, so it is
    blind to colour cues).
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


def shap_gradient_map(model, image: np.ndarray, target: int, *, background: np.ndarray, nsamples: int = 200,
                      batch_size: int = 50) -> tuple[np.ndarray, dict]:
    """`shap.GradientExplainer` (expected gradients) against a background sample of training images."""
    import shap

    background = np.asarray(background, dtype=np.float32)
    explainer = shap.GradientExplainer(model, background, batch_size=int(batch_size))
    values = explainer.shap_values(image[None], nsamples=int(nsamples))
    values = np.asarray(values)  # (1, H, W, C, classes)
    return values[0, ..., int(target)].sum(axis=-1).astype(np.float32), {
        "nsamples": int(nsamples), "background": int(len(background))}


def lime_map(model, image: np.ndarray, target: int, *, num_samples: int = 1000, batch_size: int = 200,
             n_segments: int = 30, seed: int = 0, predict=None) -> tuple[np.ndarray, dict]:
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


_SHAP_LOCK = threading.Lock()
_SHAP_READY = False


def warm_up(model=None, image_shape: tuple[int, ...] | None = None, *, methods=METHODS,
            layer_name: str | None = None) -> dict[str, float]:
    """Pays the one-off costs of the first explanation in this process, e.g. from a background thread.

    - `shap`: shap's partition explainer runs on numba functions that shap does not cache on
      disk, so every new process compiles them on its first call (about 15-20 s on 2 cores,
      more under load) whatever the model or image size. Here they compile on a tiny
      dummy image with a NumPy stand-in model: no TensorFlow, no model needed. Done once per
      process; concurrent callers wait for the first.
    - `gradcam` / `gradcam_pp`: with a `model` and `image_shape`, builds and traces the model's
      Grad-CAM graph and measures where its cells look (a few seconds, once per model).
    - `lime`: imports lime and scikit-image and segments a tiny image once (well under a second).

    Args:
        model: the Keras model to be explained (optional; only Grad-CAM needs it).
        image_shape: `(H, W, C)` of the images it takes (default: the model's input shape).
        methods: which methods to prepare (default all three).
        layer_name: Grad-CAM's layer (default: the last conv block).

    Returns:
        Seconds spent per prepared method (0 when it was already warm).
    """
    spent = {}
    if "shap" in methods:
        started = time.perf_counter()
        _warm_shap()
        spent["shap"] = time.perf_counter() - started
    if "lime" in methods:
        started = time.perf_counter()
        rng = np.random.default_rng(0)
        lime_map(None, rng.uniform(0, 255, (8, 8, 3)).astype(np.float32), 0, num_samples=10, batch_size=10,
                 n_segments=4, predict=_dummy_predict)
        spent["lime"] = time.perf_counter() - started
    if model is not None and {"gradcam", "gradcam_pp"} & set(methods):
        started = time.perf_counter()
        shape = tuple(image_shape or tuple(int(d) for d in model.inputs[0].shape[1:]))
        from engine.explain.gradcam import gradcam

        gradcam(model, np.full(shape, fa.GREY, dtype=np.float32), layer_name or _last_conv(model), 0)
        spent["gradcam"] = time.perf_counter() - started
    return spent


def _dummy_predict(images: np.ndarray) -> np.ndarray:
    """A stand-in two-class "model" for warming up: the mean brightness and its complement."""
    mean = np.asarray(images, dtype=np.float32).reshape(len(images), -1).mean(axis=1, keepdims=True) / 255.0
    return np.concatenate([mean, 1 - mean], axis=1)


def _warm_shap() -> None:
    global _SHAP_READY
    with _SHAP_LOCK:
        if _SHAP_READY:
            return
        image = np.random.default_rng(0).uniform(0, 255, (8, 8, 3)).astype(np.float32)
        # The same explainer, masker and output selection as `shap_map`, so the same numba
        # signatures compile (they depend on dtypes and ranks, not on sizes).
        shap_map(None, image, 0, max_evals=64, batch_size=64, predict=_dummy_predict)
        _SHAP_READY = True


def explain(model, image, method: str = "gradcam", *, target: int | None = None,
            class_names: list[str] | None = None, faithfulness: bool = True, steps: int = fa.DEFAULT_STEPS,
            **params) -> Explanation:
    """Explains the model's score for one class on one image.

    Args:
        model: a Keras classifier returning probabilities.
        image: `(H, W, 3)` pixels in 0..255.
        method: `gradcam`, `shap`, `lime`, `gradcam_pp` (Grad-CAM++) or `shap_gradient`
            (needs `background=`).
        target: the class index to explain. Default: the predicted class.
        class_names: to name the target (default: its index).
        faithfulness: also measure deletion/insertion AUCs against random orders.
        steps: points on the deletion/insertion curves.
        **params: passed to the method (`layer_name`, `shifts` for both Grad-CAMs; `max_evals`,
            `batch_size`; `num_samples`, `n_segments`, `seed`; `background`, `nsamples`).

    Returns:
        An `Explanation`.

    Raises:
        ValueError: an unknown method, target or image shape.
    """
    image = _image(image)
    predict = fa.model_predict(model)
    probabilities = predict(image[None])[0]
    if target is None:
        target = int(np.argmax(probabilities))
    if not 0 <= int(target) < probabilities.shape[0]:
        raise ValueError(f"target={target}: the model has {probabilities.shape[0]} classes")
    target = int(target)
    started = time.perf_counter()
    if method in ("gradcam", "gradcam_pp"):
        attribution, used = gradcam_map(model, image, target, variant=method, **params)
    elif method == "shap":
        attribution, used = shap_map(model, image, target, predict=predict, **params)
    elif method == "lime":
        attribution, used = lime_map(model, image, target, predict=predict, **params)
    elif method == "shap_gradient":
        attribution, used = shap_gradient_map(model, image, target, **params)
    else:
        raise ValueError(f"method={method!r}: expected one of {', '.join(METHODS + EXTRA_METHODS)}")
    seconds = time.perf_counter() - started
    attribution = np.nan_to_num(np.asarray(attribution, dtype=np.float32))
    result = Explanation(method=method, attribution=attribution, target=target,
                         target_name=class_names[target] if class_names else str(target),
                         probability=float(probabilities[target]), params=used, seconds=seconds)
    if faithfulness:
        scores = fa.deletion_insertion(predict, image, attribution, target, steps=steps)
        result.deletion_auc, result.insertion_auc = scores.deletion_auc, scores.insertion_auc
        result.random_deletion_auc, result.random_insertion_auc = scores.random_deletion_auc, \
            scores.random_insertion_auc
        result.deletion_curve, result.insertion_curve = scores.deletion_curve, scores.insertion_curve
    return result


def most_faithful(explanations: list[Explanation]) -> Explanation | None:
    """The explanation that beats random by the most (None if none was measured)."""
    scored = [e for e in explanations if e.faithfulness_score is not None]
    return max(scored, key=lambda e: e.faithfulness_score) if scored else None


def verdict(explanations: list[Explanation]) -> str:
    """One plain-language line on which method to trust for this image."""
    best = most_faithful(explanations)
    if best is None:
        return "Faithfulness was not measured."
    label = LABELS.get(best.method, best.method)
    beats_deletion = best.deletion_auc < best.random_deletion_auc
    beats_insertion = best.insertion_auc > best.random_insertion_auc
    if not (beats_deletion or beats_insertion):
        return (f"No method beats a random pixel order on this image; treat these maps with caution "
                f"({label} comes closest).")
    how = ("removing its top pixels lowers the score faster, and adding them raises it faster, than a random order"
           if beats_deletion and beats_insertion else
           "removing its top pixels lowers the score faster than a random order" if beats_deletion else
           "adding its top pixels back raises the score faster than a random order")
    if len([e for e in explanations if e.faithfulness_score is not None]) == 1:
        return f"{label} beats chance here: {how}. Run the other methods to rank them."
    return f"{label} is the most faithful here: {how}."
