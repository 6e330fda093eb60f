"""`train.class_weight=balanced`: rare classes weigh more, as scikit-learn's `balanced` does."""

import numpy as np
from sklearn.utils.class_weight import compute_class_weight

import engine  # noqa: F401  (the oneDNN setting before TensorFlow)
from engine.training import class_weights


def test_balanced_matches_scikit_learn_and_none_is_none():
    labels = np.array([0] * 30 + [1] * 6 + [2] * 3)
    weights = class_weights("balanced", labels, 3)
    expected = compute_class_weight("balanced", classes=np.arange(3), y=labels)
    assert np.allclose([weights[c] for c in range(3)], expected)
    assert abs(weights[2] / weights[0] - 10) < 1e-9
    assert class_weights("none", labels, 3) is None
    assert class_weights("balanced", np.array([0, 0, 1]), 3)[2] == 1.0  # a class without images
