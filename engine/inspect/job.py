"""The `inspect` and `health` jobs: what a run's model sees of its data, and what the data itself looks like.

`inspect` (one per run): penultimate-layer features of every train/val/test image with the model's
predictions (`inspect/embeddings.npz`), their nearest neighbours (`inspect/neighbours.npz`), the 2-D map,
and a report (`inspect/report.json`: duplicates at the threshold, leakage, health counts, label issues).
`health` needs no model: CleanVision over the run's data source, cached by the data's fingerprint.
The bodies import TensorFlow (the model) and umap (which imports TensorFlow); the requests do not.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from engine import store
from engine.inspect.duplicates import (SIGNALS, content_hashes, default_threshold, duplicate_pairs, hash_neighbours,
                                       leakage, nearest_neighbours, perceptual_hashes, save_neighbours)
from engine.inspect.embeddings import Embeddings, save_embeddings
from engine.inspect.health import Health, check_health, read_health, save_health
from engine.inspect.projection import DEFAULT_MAP_METHOD, MAP_METHODS, make_map
from engine.jobs.context import JobCancelled, JobContext
from engine.jobs.kinds import JobKind
from engine.runfolder import RunFolder

log = logging.getLogger(__name__)

INSPECT_JOB = "inspect"
HEALTH_JOB = "health"
FEATURE_LAYER = "logits"  # every model's head (engine.models.layers.add_classifier): its input is the embedding


class InspectError(ValueError):
    """An inspection that cannot run (a bad threshold or method, or one already running)."""


@dataclass(frozen=True)
class InspectRequest:
    """What an `inspect` job computes: the map `method`, and the near-duplicate `signal` and `threshold` of its report.

    Args:
        threshold: similarity from which two images are near duplicates, in (0, 1]; None: the signal's default.
        method: the map, `auto` (default: PCA, or UMAP where PCA folds the neighbourhoods), `umap`, `pca` or `tsne`.
        signal: `hash` (default, perceptual hash) or `embedding` (cosine of the features).
    """

    threshold: float | None = None
    method: str = DEFAULT_MAP_METHOD
    signal: str = "hash"

    def __post_init__(self):
        if self.threshold is not None and (isinstance(self.threshold, bool) or not isinstance(
                self.threshold, (int, float)) or not 0 < self.threshold <= 1):
            raise InspectError(f"threshold={self.threshold!r}: must be a similarity in (0, 1]")
        if self.method not in MAP_METHODS:
            raise InspectError(f"map method {self.method!r}: expected one of {', '.join(MAP_METHODS)}")
        if self.signal not in SIGNALS:
            raise InspectError(f"signal {self.signal!r}: expected one of {', '.join(SIGNALS)}")

    @property
    def effective_threshold(self) -> float:
        return default_threshold(self.signal) if self.threshold is None else float(self.threshold)

    @classmethod
    def from_dict(cls, data: dict) -> InspectRequest:
        threshold = data.get("threshold")
        return cls(threshold=None if threshold is None else float(threshold),
                   method=str(data.get("method", DEFAULT_MAP_METHOD)), signal=str(data.get("signal", "hash")))

    def to_dict(self) -> dict:
        return {"threshold": self.threshold, "method": self.method, "signal": self.signal}


@dataclass(frozen=True)
class HealthRequest:
    """A `health` job needs nothing beyond its run's data source."""

    @classmethod
    def from_dict(cls, data: dict) -> HealthRequest:
        return cls()

    def to_dict(self) -> dict:
        return {}


def request_inspection(workspace: store.Workspace, run_id: str, *, threshold: float | None = None,
                       method: str = DEFAULT_MAP_METHOD, signal: str = "hash"):
    """Queues an `inspect` job of a trained run (`InspectRequest`'s arguments); returns the job.

    Raises:
        InspectError: a bad threshold, method or signal, or the run is already being inspected.
        NoPredictions: the run has no saved model.
    """
    from engine.evaluation import NoPredictions
    from engine.jobs import submit_job

    request = InspectRequest(threshold, method, signal)
    folder = RunFolder(workspace, run_id)
    if not folder.has_model:
        raise NoPredictions(f"run {run_id} has no saved model (status: {workspace.get_run(run_id).status}); "
                            "only a trained run can be inspected")
    return submit_job(workspace, run_id, INSPECT_JOB, request, busy_error=InspectError)


def request_health(workspace: store.Workspace, run_id: str):
    """Queues a `health` job of the run's data source (no model needed); returns the job.

    Raises:
        InspectError: the run's data is already being checked.
    """
    from engine.jobs import submit_job

    workspace.get_run(run_id)
    return submit_job(workspace, run_id, HEALTH_JOB, HealthRequest(), busy_error=InspectError)


def compute_features(model, images: np.ndarray, labels: np.ndarray, indices: np.ndarray, *, batch_size: int = 256,
                     on_batch=None) -> tuple[np.ndarray, np.ndarray]:
    """`(features float16 (N, D), probabilities float32 (N, C))` of `images[indices]`, a batch at a time.

    `indices` must be sorted: `make_dataset` reads a memmap's batch in sorted order.
    """
    import keras

    from engine.data import make_dataset

    head = model.get_layer(FEATURE_LAYER)
    both = keras.Model(model.inputs, [head.input, model.output])
    dataset = make_dataset(images, labels, indices=indices, batch_size=batch_size, training=False)
    features = probabilities = None
    done = 0
    for x, _ in dataset:
        feats, probs = (keras.ops.convert_to_numpy(t) for t in both(x, training=False))
        if features is None:  # sized by the first batch: D and C are the model's
            features = np.empty((len(indices), feats.shape[1]), np.float16)
            probabilities = np.empty((len(indices), probs.shape[1]), np.float32)
        features[done:done + len(feats)] = feats
        probabilities[done:done + len(probs)] = probs
        done += len(feats)
        if on_batch:
            on_batch(done, len(indices))
    return features, probabilities


def run_health(workspace: store.Workspace, images) -> Health:
    """The data's health from the cache, or computed now (original files for folder sources) and cached."""
    cached = read_health(workspace, images.fingerprint)
    if cached is not None:
        return cached
    from engine.data import DatasetError, scan_source

    root = None
    if images.layout != "builtin":
        try:  # a folder, zip or manifest: its original files (a dataset version has none of its own)
            root = scan_source(images.source, cache_dir=workspace.cache_dir).root
        except (DatasetError, OSError) as error:
            log.info("checking the decoded images of %s (%s)", images.source, error)
    health = check_health(images, files_root=root)
    save_health(workspace.cache_dir, health)
    return health


def run_inspect_job(context: JobContext, request: InspectRequest, *, batch_size: int = 256) -> dict:
    """The body of an `inspect` job: embeddings, map, neighbours, duplicates, leakage, health, label issues."""
    from engine.evaluation import find_label_issues
    from engine.models import load_run_model  # imports TensorFlow

    folder = context.folder
    context.report(0.0, "loading the data and the model")
    images = folder.dataset()
    split = folder.split(images)
    codes = np.full(len(images), -1, np.int8)
    for code, part in enumerate((split.train, split.val, split.test)):
        codes[np.asarray(part, np.int64)] = code
    rows = np.flatnonzero(codes >= 0)  # in dataset order: the memmap's reads stay sequential (and batches keep it)
    split_codes = codes[rows]
    labels = np.asarray(images.labels, np.int64)

    def on_batch(done: int, total: int) -> None:
        context.report(0.6 * done / max(total, 1), f"embedded {done:,} of {total:,} images")
        if context.should_stop(max_age=0.5):
            raise JobCancelled()

    started = time.perf_counter()
    features, probabilities = compute_features(load_run_model(context.workspace, context.run_id), images.images,
                                               labels, rows, batch_size=batch_size, on_batch=on_batch)
    embed_seconds = time.perf_counter() - started
    context.report(0.6, f"mapping {len(rows):,} points ({request.method})")
    feature_map = make_map(features, request.method)
    context.raise_if_cancelled()
    embeddings = Embeddings(features, feature_map.xy, feature_map.method, np.asarray([images.ids[i] for i in rows], str), rows,
                            split_codes, labels[rows].astype(np.int32), probabilities.argmax(axis=1).astype(np.int32),
                            probabilities.max(axis=1).astype(np.float16), content_hashes(images.images, rows),
                            list(images.class_names))
    context.report(0.75, "finding near duplicates")
    neighbours = {"embedding": nearest_neighbours(features),
                  "hash": hash_neighbours(perceptual_hashes(images.images, rows))}
    save_embeddings(folder.embeddings_file, embeddings)
    save_neighbours(folder.neighbours_file, list(neighbours.values()))
    threshold = request.effective_threshold
    pairs = duplicate_pairs(embeddings, neighbours[request.signal], threshold)
    context.report(0.85, "checking the images' health")
    health = run_health(context.workspace, images)
    context.raise_if_cancelled()
    issues = find_label_issues(folder.predictions()) if folder.has_predictions else []
    report = {"threshold": threshold, "signal": request.signal, "duplicates": [p.to_dict() for p in pairs],
              "leakage": leakage(embeddings, pairs).to_dict(), "health": health.counts(),
              "label_issues": [_issue_dict(rank, issue) for rank, issue in enumerate(issues, 1)],
              "map": {"method": feature_map.method, "asked": request.method, "seconds": round(feature_map.seconds, 2),
                      "trustworthiness": round(feature_map.trustworthiness, 4)},
              "embed_seconds": round(embed_seconds, 2), "num_images": len(rows), "fingerprint": images.fingerprint,
              "created_at": time.time(), "job_id": context.job.id}
    store.write_json_atomic(folder.inspect_report_file, report)
    context.report(1.0, f"done: {len(rows):,} images, {len(pairs):,} duplicate pairs, "
                        f"{report['leakage']['test_with_train_duplicate']} test images with a train duplicate")
    return report


def run_health_job(context: JobContext, request: HealthRequest) -> dict:
    """The body of a `health` job: CleanVision over the run's data, into the workspace cache."""
    context.report(0.0, "loading the data")
    images = context.folder.dataset()
    context.report(0.2, f"checking {len(images):,} images")
    health = run_health(context.workspace, images)
    context.report(1.0, "done: " + ", ".join(f"{n} {issue}" for issue, n in health.counts().items() if n))
    return health.counts()


def _issue_dict(rank: int, issue) -> dict:
    return {"rank": rank, "id": issue.id, "index": issue.index, "given": issue.given, "suggested": issue.suggested,
            "self_confidence": round(issue.self_confidence, 6), "margin": round(issue.margin, 6)}


INSPECT_KIND = JobKind(INSPECT_JOB, run=run_inspect_job, request_type=InspectRequest, doing="being inspected")
HEALTH_KIND = JobKind(HEALTH_JOB, run=run_health_job, request_type=HealthRequest, doing="having its data checked")
