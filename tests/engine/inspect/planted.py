"""Image folders with planted problems, for the inspect tests and `tests/benchmarks/bench_inspect.py`.

`write_planted_folder` writes class folders of distinct textured PNGs (each a random smooth field,
its class visible as a colour tint) and gives a share of them a near-copy: resized, recompressed as
JPEG at quality 70 and brightened by 10 %. It returns which files are copies of which, so a test can
count the planted pairs found and the reported pairs that were not planted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

TINTS = ((1.0, 0.45, 0.45), (0.45, 1.0, 0.45), (0.45, 0.45, 1.0), (1.0, 1.0, 0.4))


@dataclass
class PlantedFolder:
    """What `write_planted_folder` wrote: its root, the planted `(original id, copy id)` pairs, other plants."""

    root: Path
    copies: list[tuple[str, str]]
    exact: list[tuple[str, str]] = field(default_factory=list)
    dark: list[str] = field(default_factory=list)
    blurry: list[str] = field(default_factory=list)
    count: int = 0


def textured_image(rng: np.random.Generator, tint, side: int) -> Image.Image:
    """A distinct image: a random field smoothed at a random scale, with blobs, tinted by its class."""
    coarse = rng.integers(4, 9)
    field_ = rng.random((coarse, coarse, 3))
    base = Image.fromarray((field_ * 255).astype(np.uint8)).resize((side, side), Image.Resampling.BICUBIC)
    pixels = np.asarray(base, np.float32)
    pixels += rng.normal(0, 25, pixels.shape)  # fine texture: each image its own
    for _ in range(3):
        y, x, r = rng.integers(0, side, 2).tolist() + [int(rng.integers(side // 8, side // 3))]
        yy, xx = np.ogrid[:side, :side]
        pixels[(yy - y) ** 2 + (xx - x) ** 2 < r * r] = rng.integers(0, 256, 3)
    pixels = np.clip(pixels * np.asarray(tint, np.float32), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def near_copy(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The issue's planted near-duplicate: resized, JPEG quality 70, 10 % brighter (returned decoded)."""
    import io

    side = image.size[0]
    resized = image.resize((int(side * rng.choice([0.75, 0.875, 1.25])),) * 2, Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    resized.save(buffer, "JPEG", quality=70)
    return ImageEnhance.Brightness(Image.open(io.BytesIO(buffer.getvalue()))).enhance(1.1)


def write_planted_folder(root: Path, *, classes: int = 3, per_class: int = 60, side: int = 48,
                         copy_share: float = 0.05, exact: int = 0, dark: int = 0, blurry: int = 0,
                         seed: int = 0) -> PlantedFolder:
    """Writes `classes` class folders of `per_class` textured images and plants copies and problems among them.

    Args:
        root: the folder to write (created).
        classes: class folders, at most 4.
        per_class: original images per class.
        side: the originals' side in pixels.
        copy_share: share of the originals that get a near copy (`near_copy`), saved as `<name>_copy.jpg`.
        exact: originals that get a byte-identical copy `<name>_same.png`.
        dark: extra nearly black images (`dark_<i>.png`, in the first class).
        blurry: extra heavily blurred images (`blurry_<i>.png`, in the first class).
        seed: seed for everything.
    """
    rng = np.random.default_rng(seed)
    planted = PlantedFolder(Path(root), [])
    names = [f"c{k}" for k in range(classes)]
    originals = []
    for k, name in enumerate(names):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            image = textured_image(rng, TINTS[k], side)
            image.save(root / name / f"{name}_{i:04d}.png")
            originals.append((f"{name}/{name}_{i:04d}", image))
    chosen = rng.choice(len(originals), size=int(round(copy_share * len(originals))), replace=False)
    for j in chosen:
        stem, image = originals[j]
        near_copy(image, rng).save(root / f"{stem}_copy.jpg", quality=95)
        planted.copies.append((f"{stem}.png", f"{stem}_copy.jpg"))
    rest = [j for j in range(len(originals)) if j not in set(chosen.tolist())]
    for j in rng.choice(rest, size=exact, replace=False):
        stem, image = originals[j]
        image.save(root / f"{stem}_same.png")
        planted.exact.append((f"{stem}.png", f"{stem}_same.png"))
    for i in range(dark):
        image = textured_image(rng, TINTS[0], side)
        Image.fromarray((np.asarray(image, np.float32) * 0.04).astype(np.uint8)).save(root / names[0] / f"dark_{i}.png")
        planted.dark.append(f"{names[0]}/dark_{i}.png")
    for i in range(blurry):
        image = textured_image(rng, TINTS[0], side).filter(ImageFilter.GaussianBlur(6))
        image.save(root / names[0] / f"blurry_{i}.png")
        planted.blurry.append(f"{names[0]}/blurry_{i}.png")
    planted.count = sum(1 for _ in root.rglob("*.*"))
    return planted


def tree_digest(root: Path) -> str:
    """One sha256 over every file's relative path, bytes and mtime under `root`: any change shows."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(p for p in Path(root).rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(root)}:{path.stat().st_mtime_ns}:".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def pair_scores(planted: PlantedFolder, reported: list[tuple[str, str]]) -> tuple[float, float]:
    """`(recall, false share)`: planted copy pairs found, and reported pairs that were not planted."""
    truth = {frozenset(p) for p in planted.copies + planted.exact}
    found = {frozenset(p) for p in reported}
    recall = len(truth & found) / max(len(truth), 1)
    false_share = len(found - truth) / max(len(found), 1)
    return recall, false_share
