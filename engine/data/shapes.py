"""A synthetic RGB dataset with known object masks: for checking what explanations point at."""

from __future__ import annotations

import numpy as np

SHAPE_NAMES = ["circle", "square", "triangle", "cross"]


def _shape_mask(kind: str, size: int, cx: float, cy: float, r: float) -> np.ndarray:
    """A bool `(size, size)` mask of one shape centred at (cx, cy) with half-extent r (pixels)."""
    y, x = np.mgrid[0:size, 0:size] + 0.5
    dx, dy = x - cx, y - cy
    if kind == "circle":
        return dx * dx + dy * dy <= r * r
    if kind == "square":
        half = r * 0.8
        return (np.abs(dx) <= half) & (np.abs(dy) <= half)
    if kind == "triangle":  # point up; inside all three edges
        top, bottom, half_base = -r, r * 0.8, r
        t = (dy - top) / (bottom - top)  # 0 at the apex, 1 at the base
        return (t >= 0) & (t <= 1) & (np.abs(dx) <= t * half_base)
    bar = max(r / 3.0, 0.75)  # cross
    return ((np.abs(dx) <= bar) & (np.abs(dy) <= r)) | ((np.abs(dy) <= bar) & (np.abs(dx) <= r))


def _distinct_colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A background and a foreground colour that differ clearly."""
    while True:
        background, foreground = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        if np.abs(background - foreground).sum() >= 180:
            return background, foreground


def make_shapes(image_size: int, *, per_class: int = 300, seed: int = 0
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Draws circles, squares, triangles and crosses on noisy backgrounds.

    Each image holds one shape of random colour, size and position on a random,
    noisy background colour; the same seed always gives the same images.

    Args:
        image_size: side of the square images, at least 8 recommended.
        per_class: images per class.
        seed: seed for everything random.

    Returns:
        `(images, labels, masks, class_names)`: `(N, S, S, 3)` uint8 images, `(N,)` int32
        labels, `(N, S, S)` bool object masks and the four class names; classes
        interleave (image i has label i % 4).
    """
    rng = np.random.default_rng(seed)
    size = int(image_size)
    count = per_class * len(SHAPE_NAMES)
    images = np.empty((count, size, size, 3), dtype=np.uint8)
    masks = np.empty((count, size, size), dtype=bool)
    labels = np.arange(count, dtype=np.int32) % len(SHAPE_NAMES)
    for i in range(count):
        r = max(rng.uniform(0.18, 0.36) * size, 1.5)
        cx, cy = rng.uniform(r, size - r, 2)
        mask = _shape_mask(SHAPE_NAMES[labels[i]], size, cx, cy, r)
        if not mask.any():  # tiny images: make sure the object has at least its centre pixel
            mask[min(int(cy), size - 1), min(int(cx), size - 1)] = True
        background, foreground = _distinct_colours(rng)
        pixels = np.where(mask[..., None], foreground, background) + rng.normal(0, 12, (size, size, 3))
        images[i] = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
        masks[i] = mask
    return images, labels, masks, list(SHAPE_NAMES)
