"""Tiny image folders made on the fly for tests (PNG files whose class is visible in the pixels)."""

import numpy as np
from PIL import Image


def write_image_folder(root, classes=("circle", "square", "cross"), per_class=12, size=16, seed=0):
    """Writes `per_class` small PNGs per class whose class is visible in the pixels."""
    rng = np.random.default_rng(seed)
    for index, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
            pixels[:, :, index % 3] += 150  # one colour channel per class: learnable in a few steps
            Image.fromarray(pixels).save(folder / f"{name}_{i}.png")
    return root


def write_digit_folder(root, count):
    """The first `count` of scikit-learn's 8×8 digits as PNGs in class folders `0`..`9`; their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    for i in range(count):
        folder = root / str(digits.target[i])
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (digits.images[i] * 255 / 16).astype(np.uint8)
        Image.fromarray(np.stack([pixels] * 3, axis=-1)).save(folder / f"{i}.png")
    return digits.target[:count]
