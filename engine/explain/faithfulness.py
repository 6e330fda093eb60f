"""How far an attribution map can be trusted: deletion/insertion curves against a random order, and the pointing game.

Deletion (Petsiuk et al. 2018, RISE): replace the pixels with a baseline in order of
attribution, most important first, and track the target probability; a faithful map
makes it fall fast (low AUC). Insertion starts from the baseline and puts pixels back
in the same order; a faithful map makes it rise fast (high AUC). The same curves with a
random pixel order are the bar every method has to clear.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

Predict = Callable[[np.ndarray], np.ndarray]  # (N, H, W, 3) float32 0..255 -> (N, classes) probabilities
DEFAULT_STEPS = 20
RANDOM_REPEATS = 3


@dataclass(frozen=True)
class Faithfulness:
    """Deletion/insertion AUCs (x: share of pixels changed, 0..1; y: target probability) and their random baselines."""

    deletion_auc: float  # lower is better
    insertion_auc: float  # higher is better
    random_deletion_auc: float
    random_insertion_auc: float
    deletion_curve: list[float]
    insertion_curve: list[float]

    def as_dict(self, curves: bool = False) -> dict:
        out = {"deletion_auc": self.deletion_auc, "insertion_auc": self.insertion_auc,
               "random_deletion_auc": self.random_deletion_auc, "random_insertion_auc": self.random_insertion_auc}
        if curves:
            out.update(deletion_curve=self.deletion_curve, insertion_curve=self.insertion_curve)
        return out

    @property
    def score(self) -> float:
        """One number to rank methods by: how much the map beats random on both curves (higher is better)."""
        return (self.random_deletion_auc - self.deletion_auc) + (self.insertion_auc - self.random_insertion_auc)


def model_predict(model, batch_size: int = 256) -> Predict:
    """A batched probability function for a Keras model (eager calls; no `predict` overhead)."""

    def predict(images: np.ndarray) -> np.ndarray:
        images = np.asarray(images, dtype=np.float32)
        if images.ndim == 3:
            images = images[None]
        out = [np.asarray(model(images[i:i + batch_size], training=False)) for i in range(0, len(images), batch_size)]
        return np.concatenate(out).astype(np.float32)

    return predict


GREY = 127.5


def grey(image: np.ndarray) -> np.ndarray:
    """Mid-grey everywhere: the default deletion/insertion baseline. It removes colour, shape and texture
    cues and, unlike the image's own mean colour, carries no hint of the image's dominant colour."""
    return np.full(np.shape(image), GREY, dtype=np.float32)


def blurred(image: np.ndarray) -> np.ndarray:
    """A heavily blurred copy (Gaussian, sigma an eighth of the side): keeps colour, removes shape and texture."""
    import cv2

    image = np.asarray(image, dtype=np.float32)
    sigma = max(image.shape[:2]) / 8
    out = cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)
    return out.reshape(image.shape).astype(np.float32)


def _curves(predict: Predict, image: np.ndarray, baseline: np.ndarray, orders: list[np.ndarray], target: int,
            steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Deletion and insertion probabilities `(len(orders), steps + 1)` for each pixel order."""
    h, w = image.shape[:2]
    n = h * w
    counts = np.round(np.linspace(0, n, steps + 1)).astype(int)
    flat_image, flat_base = image.reshape(n, -1), baseline.reshape(n, -1)
    batch = []
    for order in orders:
        rank = np.empty(n, dtype=np.int64)
        rank[order] = np.arange(n)
        for count in counts:
            changed = (rank < count)[:, None]
            batch.append(np.where(changed, flat_base, flat_image).reshape(image.shape))  # deletion
            batch.append(np.where(changed, flat_image, flat_base).reshape(image.shape))  # insertion
    probabilities = predict(np.stack(batch))[:, target].reshape(len(orders), steps + 1, 2)
    return probabilities[..., 0], probabilities[..., 1]


def _auc(curve: np.ndarray) -> float:
    return float(np.trapezoid(curve, dx=1.0 / (curve.shape[-1] - 1), axis=-1).mean())


def deletion_insertion(predict: Predict, image: np.ndarray, attribution: np.ndarray, target: int, *,
                       steps: int = DEFAULT_STEPS, baseline: np.ndarray | str = "grey", seed: int = 0,
                       random_repeats: int = RANDOM_REPEATS) -> Faithfulness:
    """Deletion and insertion AUCs of one attribution map, and of random pixel orders.

    Args:
        predict: images `(N, H, W, 3)` float32 0..255 -> probabilities `(N, classes)`
            (`model_predict(model)`).
        image: `(H, W, 3)` float32 0..255.
        attribution: `(H, W)`; higher means more support for `target`.
        target: the class whose probability is tracked.
        steps: points on each curve after the start (each step changes 1/steps of the pixels).
        baseline: what a removed pixel becomes: `"grey"` (mid-grey, default),
            `"blur"` (`blurred(image)`) or an array shaped like the image.
        seed: seeds the random orders.
        random_repeats: random orders averaged for the baseline AUCs.

    Returns:
        A `Faithfulness`; ties in the map are broken at random.
    """
    image = np.asarray(image, dtype=np.float32)
    attribution = np.asarray(attribution, dtype=np.float64)
    if attribution.shape != image.shape[:2]:
        raise ValueError(f"attribution shape {attribution.shape} does not match the image {image.shape[:2]}")
    if not np.all(np.isfinite(attribution)):
        raise ValueError("attribution has non-finite values")
    rng = np.random.default_rng(seed)
    n = attribution.size
    tie_break = rng.random(n)
    ranked = np.lexsort((tie_break, -attribution.ravel()))  # most important first
    orders = [ranked] + [rng.permutation(n) for _ in range(random_repeats)]
    if isinstance(baseline, str):
        if baseline not in ("grey", "blur"):
            raise ValueError(f"baseline={baseline!r}: expected 'grey', 'blur' or an image")
        base = grey(image) if baseline == "grey" else blurred(image)
    else:
        base = np.asarray(baseline, dtype=np.float32)
    deletion, insertion = _curves(predict, image, base, orders, int(target), steps)
    return Faithfulness(deletion_auc=_auc(deletion[0]), insertion_auc=_auc(insertion[0]),
                        random_deletion_auc=_auc(deletion[1:]), random_insertion_auc=_auc(insertion[1:]),
                        deletion_curve=[float(v) for v in deletion[0]],
                        insertion_curve=[float(v) for v in insertion[0]])


def pointing_hit(attribution: np.ndarray, mask: np.ndarray, tolerance: int = 0) -> bool:
    """Whether the map's peak (the first maximum) falls inside the object mask, or within `tolerance`
    pixels of it (Zhang et al. use 15 px on 224 px images, about 2 px on 32 px ones)."""
    attribution = np.asarray(attribution)
    peak = np.unravel_index(int(np.argmax(attribution)), attribution.shape)
    mask = np.asarray(mask, dtype=bool)
    if tolerance <= 0:
        return bool(mask[peak])
    ys, xs = np.nonzero(mask)
    return bool(ys.size and np.min((ys - peak[0]) ** 2 + (xs - peak[1]) ** 2) <= tolerance ** 2)


def pointing_game(attributions, masks, tolerance: int = 0) -> float:
    """The share of maps whose peak falls inside (or within `tolerance` px of) their object mask; NaN for none."""
    hits = [pointing_hit(a, m, tolerance) for a, m in zip(attributions, masks, strict=True)]
    return float(np.mean(hits)) if hits else float("nan")
