"""Grad-CAM, SHAP and LIME behind one call, each returning an `Explanation` with its cost and faithfulness.

The methods are declared once, in `METHODS`: a `Method` per name with its label, its map
function (in `maps`), its settings with their defaults, its warm-ups and whether it needs a
conv layer. Pages, the batch job and the CLI list, label and call methods through it.

All functions are pure: a Keras model (as `engine.models.make_model` builds it, or loaded
from its `.keras` file) and one `(H, W, 3)` float32 image in 0..255 in, data out.
`warm_up` pays the one-off costs (SHAP's numba compilation, Grad-CAM's graph) ahead of time.
Importing this module is cheap (no TensorFlow, shap or lime).
"""

from __future__ import annotations

import functools
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from engine.explain import faithfulness as fa
from engine.explain import maps


@dataclass(frozen=True)
class Param:
    """One setting of a method.

    Attributes:
        name: the keyword the map function takes.
        default: its value when a caller does not set it (None: found automatically, or required where the
            method says so).
        minimum: the least whole number a batch request may set (None: a request may not set it).
    """

    name: str
    default: Any = None
    minimum: int | None = None

    @property
    def tunable(self) -> bool:
        """A batch request (`MistakesRequest.params`) may set it."""
        return self.minimum is not None


@dataclass(frozen=True)
class Method:
    """One explanation method.

    Attributes:
        name: its key in requests, stored batches, the CLI's `--method` and JSON.
        label: how pages and the CLI name it.
        compute: `compute(model, image, target, *, predict, **settings) -> (attribution, settings used)`.
        params: its settings with their defaults (`explain` fills in those not given).
        warm_up: `warm_up(model, image_shape, layer_name)`, the one-off cost of a first call in a process
            (`methods.warm_up`); None if it has none. Methods sharing one share the work.
        job_warm_up: the settings of the small untimed call a batch job makes before timing the
            method (its first call is slow), or None where it needs none.
        needs_conv: it explains a conv layer (and takes `layer_name`); a model without one cannot use it.
        side_by_side: one of the methods shown side by side, offered by batches and the CLI.
        instant: the Explain page runs it as soon as an image is chosen (the others behind a button).
        seconds_per_image: a rough cost on two CPU cores, for estimates.
        warm_up_seconds: a rough one-off cost per job, for estimates.
    """

    name: str
    label: str
    compute: Callable[..., tuple[np.ndarray, dict]]
    params: tuple[Param, ...] = ()
    warm_up: Callable[..., None] | None = None
    job_warm_up: Mapping[str, Any] | None = None
    needs_conv: bool = False
    side_by_side: bool = False
    instant: bool = False
    seconds_per_image: float = 1.0
    warm_up_seconds: float = 0.0

    @property
    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}

    @property
    def tunable(self) -> dict[str, Param]:
        """The settings a batch request may change, by name."""
        return {p.name: p for p in self.params if p.tunable}


def _gradcam(name: str, label: str, **flags) -> Method:
    return Method(name, label, functools.partial(maps.gradcam_map, variant=name),
                  (Param("layer_name"), Param("shifts")), warm_up=maps.warm_gradcam, needs_conv=True, **flags)


METHODS: dict[str, Method] = {m.name: m for m in (
    _gradcam("gradcam", "Grad-CAM", job_warm_up={}, side_by_side=True, instant=True, seconds_per_image=0.1),
    Method("shap", "SHAP", maps.shap_map,
           (Param("max_evals", 500, minimum=1), Param("batch_size", 50, minimum=1), Param("masker", "grey")),
           warm_up=maps.warm_shap, job_warm_up={"max_evals": 40, "batch_size": 40}, side_by_side=True,
           warm_up_seconds=15),
    Method("lime", "LIME", maps.lime_map,
           (Param("num_samples", 1000, minimum=1), Param("batch_size", 200, minimum=1),
            Param("n_segments", 30, minimum=1), Param("seed", 0)),
           warm_up=maps.warm_lime, side_by_side=True),
    _gradcam("gradcam_pp", "Grad-CAM++"),
    Method("shap_gradient", "SHAP (gradients)", maps.shap_gradient_map,
           (Param("background"), Param("nsamples", 200), Param("batch_size", 50))),  # background: required
)}
SIDE_BY_SIDE = tuple(name for name, m in METHODS.items() if m.side_by_side)  # gradcam, shap, lime


def method_label(name: str) -> str:
    """The method's label (the name itself for one not in `METHODS`)."""
    method = METHODS.get(name)
    return method.label if method else name


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
        out["label"] = method_label(self.method)
        out["faithfulness_score"] = self.faithfulness_score
        return out


def _image(image) -> np.ndarray:
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ValueError(f"image shape {image.shape}: expected (H, W, 3) (or (H, W, 1))")
    return image


def warm_up(model=None, image_shape: tuple[int, ...] | None = None, *, methods=SIDE_BY_SIDE,
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
        model: the Keras model to be explained (optional; only the methods that need a conv layer need it).
        image_shape: `(H, W, C)` of the images it takes (default: the model's input shape).
        methods: which methods to prepare (default the three shown side by side).
        layer_name: Grad-CAM's layer (default: the last conv block).

    Returns:
        Seconds spent per prepared method (0 when it was already warm); methods that share a
        warm-up (Grad-CAM and Grad-CAM++) appear once, under the first.
    """
    spent, done = {}, set()
    for name, method in METHODS.items():
        if name not in methods or method.warm_up is None or method.warm_up in done:
            continue
        if method.needs_conv and model is None:
            continue
        started = time.perf_counter()
        method.warm_up(model, image_shape, layer_name)
        spent[name] = time.perf_counter() - started
        done.add(method.warm_up)
    return spent


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
    spec = METHODS.get(method)
    if spec is None:
        raise ValueError(f"method={method!r}: expected one of {', '.join(METHODS)}")
    image = _image(image)
    predict = fa.model_predict(model)
    probabilities = predict(image[None])[0]
    if target is None:
        target = int(np.argmax(probabilities))
    if not 0 <= int(target) < probabilities.shape[0]:
        raise ValueError(f"target={target}: the model has {probabilities.shape[0]} classes")
    target = int(target)
    started = time.perf_counter()
    attribution, used = spec.compute(model, image, target, predict=predict, **{**spec.defaults, **params})
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
    label = method_label(best.method)
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
