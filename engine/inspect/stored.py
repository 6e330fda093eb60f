"""A run's stored inspection, read from its folder: embeddings, neighbours, the report (no TensorFlow)."""

from __future__ import annotations

import json

from engine.inspect.duplicates import Neighbours, load_neighbours
from engine.inspect.embeddings import Embeddings, load_embeddings


def has_embeddings(folder) -> bool:
    """True once the run's `inspect` job has stored its embeddings and their neighbours."""
    return folder.embeddings_file.is_file() and folder.neighbours_file.is_file()


def run_embeddings(folder) -> Embeddings:
    """The run's stored `Embeddings` (`folder` a `RunFolder`). Raises `NoEmbeddings` before its `inspect` job."""
    return load_embeddings(folder.embeddings_file)


def run_neighbours(folder, signal: str = "hash") -> Neighbours:
    """The run's stored `Neighbours` by `signal` (`hash` or `embedding`). Raises `NoEmbeddings` before its `inspect` job."""
    return load_neighbours(folder.neighbours_file, signal)


def inspect_report(folder) -> dict | None:
    """The latest `inspect` job's report as saved (keys: threshold, signal, duplicates, leakage, health, label_issues,
    map, num_images, fingerprint, created_at), or None."""
    try:
        return json.loads(folder.inspect_report_file.read_text())
    except (OSError, ValueError):
        return None
