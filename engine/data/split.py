"""Stratified, seeded train/validation/test splits."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from engine.data.imageset import DatasetError

MIN_PER_CLASS = 3  # one image each for train, validation and test
SPLITS = ("train", "val", "test")
SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
               "dev": "val", "test": "test", "testing": "test", "eval": "test"}


def split_of(name: str) -> str | None:
    """The split (`train`, `val`, `test`) a folder name or manifest value names, or None (`Validation` -> `val`)."""
    return SPLIT_NAMES.get(name.strip().lower())


@dataclass(frozen=True)
class Split:
    """Index arrays into an `ImageSet`, one per part; each sorted and disjoint from the others."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def split_indices(labels, val_fraction: float, test_fraction: float, seed: int, *,
                  class_names: list[str] | None = None) -> Split:
    """Splits image indices into train, validation and test parts with the same class mix.

    Args:
        labels: `(N,)` class indices.
        val_fraction: share for validation, in (0, 1).
        test_fraction: share for test, in (0, 1); the two together below 1.
        seed: seed for the split; the same seed always gives the same split.
        class_names: names for error messages (label i is `class_names[i]`); optional.

    Returns:
        A `Split` of sorted int64 index arrays.

    Raises:
        DatasetError: a class has fewer than 3 images, or the set is too small for the fractions.
    """
    from sklearn.model_selection import train_test_split  # slow import: only when splitting

    labels = np.asarray(labels).reshape(-1)
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise DatasetError(f"val_fraction={val_fraction} and test_fraction={test_fraction} must each be between "
                           "0 and 1 and leave images for training.")
    classes, counts = np.unique(labels, return_counts=True)

    def name(label) -> str:
        if class_names is not None and 0 <= int(label) < len(class_names):
            return repr(class_names[int(label)])
        return f"with label {int(label)}"

    if classes.size < 2:
        raise DatasetError(f"all {labels.size} images are in one class ({name(classes[0]) if classes.size else '-'});"
                           " a classifier needs at least two classes.")
    small = [(c, n) for c, n in zip(classes, counts) if n < MIN_PER_CLASS]
    if small:
        label, count = min(small, key=lambda item: item[1])
        count = int(count)
        others = f" ({len(small) - 1} other classes too)" if len(small) > 1 else ""
        raise DatasetError(f"class {name(label)} has only {count} image{'s' * (count != 1)}{others}; splitting into "
                           f"train, validation and test needs at least {MIN_PER_CLASS} per class. Add images "
                           "to it, or remove that class.")
    total, k = labels.size, classes.size
    n_test = max(math.ceil(test_fraction * total), k)
    n_val = max(math.ceil(val_fraction * total), k)
    if total - n_test - n_val < k:
        raise DatasetError(f"{total} images in {k} classes are too few for validation and test parts of at least "
                           f"one image per class each. Add images, or lower the validation/test fractions.")
    everything = np.arange(total)
    try:
        rest, test = train_test_split(everything, test_size=n_test, random_state=seed, stratify=labels)
        train, val = train_test_split(rest, test_size=n_val, random_state=seed, stratify=labels[rest])
    except ValueError as error:
        raise DatasetError(f"cannot split {total} images in {k} classes with val_fraction={val_fraction} and "
                           f"test_fraction={test_fraction} ({error}). Add images to the smallest classes, "
                           "or lower the fractions.") from None
    parts = _ensure_every_class(labels, [train.tolist(), val.tolist(), test.tolist()])
    return Split(*(np.sort(np.array(part, dtype=np.int64)) for part in parts))


def _ensure_every_class(labels: np.ndarray, parts: list[list[int]]) -> list[list[int]]:
    """Moves single images so every class appears in every part (stratified rounding can leave one out)."""
    num_classes = int(labels.max()) + 1
    counts = np.stack([np.bincount(labels[np.array(p, dtype=np.int64)], minlength=num_classes) for p in parts])
    present = np.flatnonzero(counts.sum(axis=0))
    for label in present[(counts[:, present] == 0).any(axis=0)]:
        for empty in np.flatnonzero(counts[:, label] == 0):
            donor = int(counts[:, label].argmax())
            moved = max(i for i in parts[donor] if labels[i] == label)  # deterministic choice
            parts[donor].remove(moved)
            parts[empty].append(moved)
            counts[donor, label] -= 1
            counts[empty, label] += 1
    return parts


def split_dataset(images, val_fraction: float, test_fraction: float, seed: int, *,
                  group_near_duplicates: bool = False) -> Split:
    """The split of an `ImageSet`: the splits its data gives (a missing one carved from train), else made here.

    Args:
        images: the `ImageSet`; `images.splits` holds the given splits (or is None).
        val_fraction: share for validation when it is carved (of the whole set without given splits, of
            the training images when only the validation split is missing).
        test_fraction: the same for test.
        seed: seed for what is carved.
        group_near_duplicates: keep each group of near duplicates (by perceptual hash; there is no model
            yet) in one split: the split most of the group is in. Default False.

    Returns:
        A `Split` of sorted int64 index arrays.
    """
    split = _split_dataset(images, val_fraction, test_fraction, seed)
    return _group_near_duplicates(images, split) if group_near_duplicates else split


def _group_near_duplicates(images, split: Split) -> Split:
    """Moves every near-duplicate group whose images are in several splits into its majority's split (ties: train)."""
    from engine.inspect.duplicates import near_duplicate_groups

    groups = near_duplicate_groups(images.images)
    part = np.zeros(len(groups), np.int64)
    part[split.val], part[split.test] = 1, 2
    values, counts = np.unique(groups, return_counts=True)
    for group in values[counts > 1]:
        members = np.flatnonzero(groups == group)
        part[members] = int(np.bincount(part[members], minlength=3).argmax())
    return Split(*(np.flatnonzero(part == code).astype(np.int64) for code in range(3)))


def _split_dataset(images, val_fraction: float, test_fraction: float, seed: int) -> Split:
    labels = np.asarray(images.labels).reshape(-1)
    given = getattr(images, "splits", None)
    if given is None:
        return split_indices(labels, val_fraction, test_fraction, seed, class_names=images.class_names)
    given = np.asarray(given)
    train, val, test = (np.flatnonzero(given == code) for code in range(3))
    if val.size == 0 and test.size == 0:
        inner = split_indices(labels[train], val_fraction, test_fraction, seed, class_names=images.class_names)
        return Split(train[inner.train], train[inner.val], train[inner.test])
    if test.size == 0:
        train, test = _carve(labels, train, test_fraction, seed, "test")
    if val.size == 0:
        train, val = _carve(labels, train, val_fraction, seed, "validation")
    return Split(np.sort(train), np.sort(val), np.sort(test))


def _carve(labels: np.ndarray, pool: np.ndarray, fraction: float, seed: int, what: str) -> tuple[np.ndarray, ...]:
    """Holds `fraction` of `pool` out (stratified when every class has two images there); returns (rest, held)."""
    from sklearn.model_selection import train_test_split

    if pool.size < 2:
        raise DatasetError(f"only {pool.size} training image{'s' * (pool.size != 1)}: too few to carve a {what} "
                           "split from; add images, or give the split.")
    counts = np.bincount(labels[pool])
    count = min(max(1, math.ceil(fraction * pool.size)), pool.size - 1)
    classes = np.count_nonzero(counts)
    stratify = labels[pool] if counts[counts > 0].min() >= 2 and min(count, pool.size - count) >= classes else None
    rest, held = train_test_split(pool, test_size=count, random_state=seed, stratify=stratify)
    return np.sort(rest), np.sort(held)
