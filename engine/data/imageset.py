"""What every dataset source returns: an `ImageSet` of uint8 RGB images and int labels."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np


# How `ImageSet.splits` codes the split a dataset gives each image.
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}


class DatasetError(ValueError):
    """A dataset cannot be used; the message says what is wrong and what to do about it."""


@dataclass(frozen=True)
class SkippedFile:
    """A file that was left out of a dataset, with a short reason.

    Args:
        path: the file's path relative to the source folder (forward slashes).
        reason: why it was skipped, e.g. `empty file` or `not an image`.
    """

    path: str
    reason: str


@dataclass(frozen=True)
class SourceInfo:
    """A built-in dataset as `list_sources` reports it.

    Args:
        name: the source name to pass to `load_images`, e.g. `mnist`.
        description: one line about the data.
        available: whether it loads without the internet right now.
        detail: where it is cached, or what to do to make it available.
    """

    name: str
    description: str
    available: bool
    detail: str


@dataclass(frozen=True, eq=False)
class ImageSet:
    """Images with their labels, ready to split and feed to a model.

    Args:
        images: `(N, S, S, 3)` uint8 RGB array; may be a read-only `np.memmap` (folders).
        labels: `(N,)` int32 class indices into `class_names`.
        class_names: the class names in label order.
        ids: a stable id per image, e.g. `digits/17` or `cats/img_001.jpg`.
        source: the source the set was loaded from (a built-in name or a path).
        fingerprint: sha256 hex identifying the content (for reproducibility records).
        skipped: files that were left out, with reasons.
        masks: `(N, S, S)` bool object masks (only the `shapes` source has them).
        splits: `(N,)` int8 split given by the data per image (`SPLIT_CODES`: 0 train, 1 val, 2 test), or None
            when the data names no splits (they are then made by `split_indices`).
        layout: `builtin`, `class_folders`, `split_folders` or `manifest`.
        notes: what the layout scan found worth saying (a split carved from train, a class missing...).
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    ids: list[str]
    source: str
    fingerprint: str
    skipped: tuple[SkippedFile, ...] = ()
    masks: np.ndarray | None = None
    splits: np.ndarray | None = None
    layout: str = "class_folders"
    notes: tuple[str, ...] = ()

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def image_size(self) -> int:
        """The side of the square images, in pixels."""
        return int(self.images.shape[1])

    def class_counts(self) -> dict[str, int]:
        """Returns the number of images per class, in label order."""
        counts = np.bincount(np.asarray(self.labels), minlength=len(self.class_names))
        return {name: int(count) for name, count in zip(self.class_names, counts)}


def fingerprint_arrays(images: np.ndarray, labels: np.ndarray, class_names: list[str]) -> str:
    """Returns the sha256 hex digest of the image bytes, labels and class names."""
    digest = hashlib.sha256()
    digest.update(repr((images.shape, list(class_names))).encode())
    # Chunked so a big memmap is hashed without loading it whole.
    for start in range(0, images.shape[0], 4096):
        digest.update(np.ascontiguousarray(images[start:start + 4096]).tobytes())
    digest.update(np.asarray(labels, dtype=np.int32).tobytes())
    return digest.hexdigest()


def cap_per_class(labels: np.ndarray, max_per_class: int, seed: int) -> np.ndarray:
    """Picks at most `max_per_class` indices of each class at random (seeded), in original order.

    Args:
        labels: `(N,)` class indices.
        max_per_class: the cap; 0 keeps everything.
        seed: seed for which images are kept.

    Returns:
        A sorted int64 index array.
    """
    labels = np.asarray(labels)
    if max_per_class <= 0:
        return np.arange(labels.shape[0], dtype=np.int64)
    rng = np.random.default_rng(seed)
    keep = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if members.size > max_per_class:
            members = rng.choice(members, size=max_per_class, replace=False)
        keep.append(members)
    return np.sort(np.concatenate(keep)).astype(np.int64) if keep else np.zeros(0, dtype=np.int64)
