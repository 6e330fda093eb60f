"""Stratified, seeded splits and their error messages."""

from __future__ import annotations

import numpy as np
import pytest

import engine.data as data


@pytest.fixture(scope="module")
def digit_labels():
    return data.load_images("digits", 8).labels


def test_split_is_stratified_disjoint_and_complete(digit_labels):
    split = data.split_indices(digit_labels, 0.15, 0.2, seed=0)
    parts = [split.train, split.val, split.test]
    together = np.concatenate(parts)
    assert len(together) == len(digit_labels) == len(set(together.tolist()))
    assert all(np.array_equal(p, np.sort(p)) for p in parts)
    assert abs(len(split.test) - 0.2 * len(digit_labels)) <= 1 and abs(len(split.val) - 0.15 * len(digit_labels)) <= 1
    overall = np.bincount(digit_labels) / len(digit_labels)
    for part in parts:
        share = np.bincount(digit_labels[part], minlength=10) / len(part)
        assert np.abs(share - overall).max() < 0.01


def test_split_is_deterministic_by_seed(digit_labels):
    first, again = data.split_indices(digit_labels, 0.2, 0.2, 7), data.split_indices(digit_labels, 0.2, 0.2, 7)
    other = data.split_indices(digit_labels, 0.2, 0.2, 8)
    assert all(np.array_equal(getattr(first, k), getattr(again, k)) for k in ("train", "val", "test"))
    assert not np.array_equal(first.test, other.test)


def test_tiny_classes_still_get_one_image_per_part():
    labels = np.array([0] * 3 + [1] * 3 + [2] * 40)
    split = data.split_indices(labels, 0.1, 0.1, 0)
    for part in (split.train, split.val, split.test):
        assert set(labels[part].tolist()) == {0, 1, 2}


def test_a_too_small_class_is_named_with_a_fix():
    labels = np.array([0] * 10 + [1] * 2 + [2] * 10)
    with pytest.raises(data.DatasetError) as error:
        data.split_indices(labels, 0.2, 0.2, 0, class_names=["cat", "dog", "emu"])
    message = str(error.value)
    assert "'dog'" in message and "only 2 images" in message and "at least 3" in message and "Add images" in message
    with pytest.raises(data.DatasetError, match="label 1"):
        data.split_indices(labels, 0.2, 0.2, 0)


def test_one_class_and_bad_fractions():
    with pytest.raises(data.DatasetError, match="one class"):
        data.split_indices(np.zeros(10, int), 0.2, 0.2, 0, class_names=["cat"])
    with pytest.raises(data.DatasetError, match="leave images for training"):
        data.split_indices(np.arange(20) % 2, 0.5, 0.5, 0)
