"""Inspect the data the way the model sees it: embeddings and their map, duplicates and leakage, dataset health.

Everything importable from here runs without TensorFlow (numpy, scikit-learn, PIL): the dashboard
loads a run's `Embeddings`, filters its duplicate pairs by a threshold and reads the health counts
directly. The computing happens in the `inspect` and `health` jobs (`engine.inspect.job`; `request_inspection`,
`request_health`), whose bodies import TensorFlow and umap.
"""

from __future__ import annotations

from engine.inspect.duplicates import (DEFAULT_EMBEDDING_THRESHOLD, DEFAULT_HASH_DISTANCE, DEFAULT_NEAR_THRESHOLD,
                                       SIGNALS, DuplicatePair, Leakage, Neighbours, default_threshold, duplicate_pairs,
                                       hash_duplicate_pairs, hash_neighbours, leakage, load_neighbours,
                                       near_duplicate_groups, nearest_neighbours, perceptual_hashes)
from engine.inspect.embeddings import Embeddings, NoEmbeddings, load_embeddings
from engine.inspect.health import HEALTH_ISSUES, Health, check_health, read_health
from engine.inspect.job import (HEALTH_JOB, INSPECT_JOB, HealthRequest, InspectError, InspectRequest, request_health,
                                request_inspection)
from engine.inspect.projection import DEFAULT_MAP_METHOD, MAP_METHODS, FeatureMap, make_map, project
from engine.inspect.stored import has_embeddings, inspect_report, run_embeddings, run_neighbours

__all__ = [
    "DEFAULT_EMBEDDING_THRESHOLD", "SIGNALS", "default_threshold", "hash_neighbours",
    "DEFAULT_HASH_DISTANCE", "DEFAULT_NEAR_THRESHOLD", "DuplicatePair", "Leakage", "Neighbours", "duplicate_pairs",
    "hash_duplicate_pairs", "leakage", "load_neighbours", "near_duplicate_groups", "nearest_neighbours",
    "perceptual_hashes", "Embeddings", "NoEmbeddings", "load_embeddings", "HEALTH_ISSUES", "Health", "check_health",
    "read_health", "HEALTH_JOB", "INSPECT_JOB", "HealthRequest", "InspectError", "InspectRequest", "request_health",
    "request_inspection", "DEFAULT_MAP_METHOD", "MAP_METHODS", "project", "FeatureMap", "make_map",
    "has_embeddings", "inspect_report", "run_embeddings", "run_neighbours",
]
