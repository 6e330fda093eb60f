"""A run's saved predictions (`predictions.npz` or a fresh evaluation's `.npz`): the type, its file format.

`RunFolder.predictions(name)` finds and loads a run's; this module knows nothing of run folders.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class NoPredictions(LookupError):
    """A run has no saved test predictions (it has not completed); the message says why."""


@dataclass(frozen=True, eq=False)
class Predictions:
    """One run's predictions on its test split (or on a folder), as stored in `predictions.npz`.

    Args:
        probabilities: `(N, C)` float32 class probabilities.
        labels: `(N,)` int given labels (indices into `class_names`).
        ids: `(N,)` stable image ids, e.g. `digits/17`.
        indices: `(N,)` row indices into the run's dataset (`load_images` with its data config).
        class_names: the C class names in label order.
        fingerprint: the dataset fingerprint from the run's data report, if known.
        run_id: the run the predictions came from, if any.
    """

    probabilities: np.ndarray
    labels: np.ndarray
    ids: np.ndarray
    indices: np.ndarray
    class_names: list[str]
    fingerprint: str | None = None
    run_id: str | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def predicted(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1)

    @property
    def confidence(self) -> np.ndarray:
        """The probability of the predicted class, per sample."""
        return self.probabilities.max(axis=1)

    @property
    def given_probability(self) -> np.ndarray:
        """The probability the model gives the labelled class (the self-confidence)."""
        return self.probabilities[np.arange(len(self)), self.labels]

    @classmethod
    def load(cls, path: Path, *, fingerprint: str | None = None, run_id: str | None = None) -> Predictions:
        with np.load(path, allow_pickle=False) as data:
            return cls(probabilities=np.asarray(data["probabilities"], np.float32),
                       labels=np.asarray(data["labels"], np.int64), ids=np.asarray(data["ids"], str),
                       indices=np.asarray(data["indices"], np.int64),
                       class_names=[str(c) for c in data["class_names"]], fingerprint=fingerprint, run_id=run_id)


def save_predictions(path: Path, probabilities, labels, ids, indices, class_names) -> None:
    """Writes predictions as `predictions.npz` holds them, atomically (temp file, then rename)."""
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez_compressed(tmp, probabilities=np.asarray(probabilities, np.float32),
                        labels=np.asarray(labels, np.int32), ids=np.asarray(ids, dtype=str),
                        indices=np.asarray(indices, np.int64), class_names=np.asarray(class_names, dtype=str))
    os.replace(tmp, path)
