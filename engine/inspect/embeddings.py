"""`Embeddings`: a run's penultimate-layer features of every train/val/test image, with its predictions and map.

Stored as `inspect/embeddings.npz` (`RunFolder.embeddings_file`); the `inspect` job writes it
(`engine.inspect.job`), `RunFolder.embeddings()` loads it. This module only reads and writes the file
(numpy only): the Streamlit process can load it without TensorFlow.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.data.imageset import SPLIT_CODES

SPLIT_NAMES = np.array(sorted(SPLIT_CODES, key=SPLIT_CODES.get))  # code -> name: train, val, test


class NoEmbeddings(LookupError):
    """A run has no stored embeddings yet (its `inspect` job has not run); the message says what to do."""


@dataclass(frozen=True, eq=False)
class Embeddings:
    """One run's view of its own images: features, the 2-D map and its predictions, one row per image.

    Args:
        features: `(N, D)` float16 penultimate-layer features (the input of the `logits` layer).
        xy: `(N, 2)` float32 map coordinates (`engine.inspect.projection.project`).
        map_method: what made `xy`: `umap`, `pca` or `tsne`.
        ids: `(N,)` str image ids (as `Predictions.ids`).
        indices: `(N,)` int64 rows of the run's dataset (`RunFolder.dataset()`): the image of row i is
            `images.images[indices[i]]`.
        splits: `(N,)` int8 split codes (`engine.data.SPLIT_CODES`: 0 train, 1 val, 2 test).
        labels: `(N,)` int32 given labels.
        predicted: `(N,)` int32 predicted classes.
        confidence: `(N,)` float16 probability of the predicted class.
        content_hashes: `(N,)` str hex digest of each decoded image's pixels (equal = exact duplicates).
        class_names: the class names in label order.
    """

    features: np.ndarray
    xy: np.ndarray
    map_method: str
    ids: np.ndarray
    indices: np.ndarray
    splits: np.ndarray
    labels: np.ndarray
    predicted: np.ndarray
    confidence: np.ndarray
    content_hashes: np.ndarray
    class_names: list[str]

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @property
    def split_names(self) -> np.ndarray:
        """`(N,)` str: `train`, `val` or `test` per row."""
        return SPLIT_NAMES[np.asarray(self.splits, np.int64)]

    @property
    def correct(self) -> np.ndarray:
        """`(N,)` bool: the prediction equals the given label."""
        return self.predicted == self.labels


def save_embeddings(path: Path, embeddings: Embeddings) -> None:
    """Writes `embeddings` as `inspect/embeddings.npz` holds them, atomically (temp file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, features=np.asarray(embeddings.features, np.float16), xy=np.asarray(embeddings.xy, np.float32),
             map_method=np.asarray(embeddings.map_method), ids=np.asarray(embeddings.ids, str),
             indices=np.asarray(embeddings.indices, np.int64), splits=np.asarray(embeddings.splits, np.int8),
             labels=np.asarray(embeddings.labels, np.int32), predicted=np.asarray(embeddings.predicted, np.int32),
             confidence=np.asarray(embeddings.confidence, np.float16),
             content_hashes=np.asarray(embeddings.content_hashes, str),
             class_names=np.asarray(embeddings.class_names, str))
    os.replace(tmp, path)


def load_embeddings(path: Path) -> Embeddings:
    """Reads an `embeddings.npz`.

    Raises:
        NoEmbeddings: there is no such file.
    """
    if not Path(path).is_file():
        raise NoEmbeddings(f"{path} does not exist: run `python -m engine inspect RUN` (or the Map tab's "
                           "Compute button) first")
    with np.load(path, allow_pickle=False) as data:
        return Embeddings(features=data["features"], xy=data["xy"], map_method=str(data["map_method"]),
                          ids=data["ids"], indices=data["indices"].astype(np.int64), splits=data["splits"],
                          labels=data["labels"], predicted=data["predicted"], confidence=data["confidence"],
                          content_hashes=data["content_hashes"], class_names=[str(c) for c in data["class_names"]])
