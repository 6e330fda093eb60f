"""Makes a folder of real RGB photographs, one class per source photo, without any download (and a synthetic one).

The ten photos are the colour ones that ship inside scikit-image and scikit-learn
(astronaut, cat, coffee, rocket, ...). Each class holds random crops of its photo at
varied scale, position and aspect, saved as JPEGs of varied size: real camera pixels,
real JPEG decoding, and a task that needs colour and texture.

Usage: python tests/benchmarks/photo_folder.py OUT_DIR [--per-class 200]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

SKIMAGE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "hubble_deep_field.jpg",
                  "ihc.png", "motorcycle_left.png", "retina.jpg")


def source_photos() -> dict[str, Image.Image]:
    import skimage
    import sklearn.datasets

    photos = {}
    data_dir = Path(skimage.__file__).parent / "data"
    for name in SKIMAGE_PHOTOS:
        photos[name.split(".")[0]] = Image.open(data_dir / name).convert("RGB")
    sklearn_dir = Path(sklearn.datasets.__file__).parent / "images"
    for name in ("china.jpg", "flower.jpg"):
        photos[name.split(".")[0]] = Image.open(sklearn_dir / name).convert("RGB")
    return photos


def write_photo_folder(out: Path, per_class: int = 200, seed: int = 0) -> Path:
    """Writes `per_class` JPEG crops per photo under `out/<photo>/`; returns `out`."""
    rng = np.random.default_rng(seed)
    for name, photo in source_photos().items():
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        width, height = photo.size
        for i in range(per_class):
            side = int(min(width, height) * rng.uniform(0.25, 0.6))
            aspect = rng.uniform(0.75, 1.33)
            w, h = int(side * aspect), side
            w = min(w, width)
            left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
            crop = photo.crop((left, top, left + w, top + h))
            if rng.random() < 0.5:
                crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            size = int(rng.integers(80, 200))
            crop = crop.resize((size, max(8, int(size * h / w))), Image.Resampling.BILINEAR)
            crop.save(folder / f"{name}_{i:04d}.jpg", quality=int(rng.integers(80, 96)))
    return out


def write_synthetic_folder(out: Path, classes: int = 10, per_class: int = 100, seed: int = 0) -> Path:
    """JPEGs of varied sizes around 120x90 under `out/class_NN/`: per-class gradient palettes with random shapes.

    The input-pipeline benchmark's folder (bench_training.py): small, like a thumbnail set, and
    made in a second without any photo library.
    """
    from PIL import ImageDraw

    rng = np.random.default_rng(seed)
    for c in range(classes):
        folder = out / f"class_{c:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        base = rng.integers(0, 256, (2, 3))  # each class: its own gradient from one colour to another
        for i in range(per_class):
            w, h = int(rng.integers(100, 141)), int(rng.integers(75, 106))
            t = np.linspace(0, 1, w)[None, :, None] * np.linspace(0.6, 1, h)[:, None, None]
            pixels = base[0] * (1 - t) + base[1] * t + rng.normal(0, 12, (h, w, 3))
            image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
            draw = ImageDraw.Draw(image)
            for _ in range(int(rng.integers(2, 6))):
                x0, y0 = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
                x1, y1 = x0 + int(rng.integers(10, 40)), y0 + int(rng.integers(10, 40))
                colour = tuple(int(v) for v in rng.integers(0, 256, 3))
                (draw.ellipse if (c + i) % 2 else draw.rectangle)((x0, y0, x1, y1), fill=colour)
            image.save(folder / f"img_{i:03d}.jpg", quality=90)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--per-class", type=int, default=200)
    args = parser.parse_args()
    print(write_photo_folder(args.out, args.per_class))
