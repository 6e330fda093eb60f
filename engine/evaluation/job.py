"""The `evaluate` job: a run's model on a new folder or zip, or on one of its own splits, saved with the run.

A saved evaluation is `evaluations/<name>.npz` (keys as `predictions.npz`) with `<name>.json` (its
source); `RunFolder.evaluations()` lists them and `RunFolder.predictions(name)` loads one. The only
part of `engine.evaluation` that imports TensorFlow (inside the functions that predict)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from engine import store
from engine.evaluation.predictions import NoPredictions, Predictions, save_predictions
from engine.jobs.context import JobCancelled, JobContext
from engine.jobs.kinds import JobKind
from engine.runfolder import RunFolder

log = logging.getLogger(__name__)


SPLIT_PREFIX = "split:"  # an evaluation source `split:train|val|test` re-predicts one of the run's own splits
SPLITS = ("train", "val", "test")
EVALUATE_JOB = "evaluate"
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


class EvaluationError(ValueError):
    """An evaluation request that cannot run (bad name or source, or one is already running)."""


@dataclass(frozen=True)
class EvaluationRequest:
    """What an `evaluate` job predicts: `source` (a folder, a .zip or `split:NAME`) saved under `name`."""

    source: str
    name: str = ""

    @classmethod
    def from_dict(cls, data: dict) -> EvaluationRequest:
        return cls(source=str(data["source"]), name=str(data.get("name") or ""))

    def to_dict(self) -> dict:
        return {"source": self.source, "name": self.name}


def _predict_batches(model, images: np.ndarray, labels: np.ndarray, indices: np.ndarray, num_classes: int, *,
                     batch_size: int, on_batch: Callable[[int, int], None] | None) -> np.ndarray:
    """The model's `(len(indices), C)` probabilities over `images[indices]`, a batch at a time (flat memory)."""
    import keras

    from engine.data import make_dataset

    dataset = make_dataset(images, labels, indices=indices, batch_size=batch_size, training=False)
    probabilities = np.empty((len(indices), num_classes), np.float32)
    done = 0
    for x, _ in dataset:
        out = keras.ops.convert_to_numpy(model(x, training=False))
        probabilities[done:done + out.shape[0]] = out
        done += out.shape[0]
        if on_batch:
            on_batch(done, len(indices))
    return probabilities


def predict_folder(workspace: store.Workspace, run_id: str, folder: str | Path, *, batch_size: int = 256,
                   on_batch: Callable[[int, int], None] | None = None) -> Predictions:
    """Runs a run's model over an image folder in batches; memory stays flat in the folder's size.

    The folder needs one sub-folder per class, named like the run's classes. Images are decoded
    into the workspace cache (a memmap) and read a batch at a time; only the `(N, C)` probabilities
    are kept.

    Args:
        workspace: the workspace holding the run.
        run_id: a run with a saved model.
        folder: an image folder (or .zip of one).
        batch_size: images per forward pass; default 256.
        on_batch: called with `(done, total)` after each batch (it may raise to stop).

    Returns:
        `Predictions` with labels mapped to the run's class indices.

    Raises:
        NoPredictions: the run has no model yet. DatasetError: the folder is unusable or its
        classes differ from the run's (the message names the missing and extra ones).
    """
    from engine.data import DatasetError, load_images

    run = workspace.get_run(run_id)
    run_folder = RunFolder(workspace, run_id)
    _check_model(run_folder, run.status)
    run_classes = run_folder.class_names()
    images = load_images(str(folder), run.config.data.image_size, cache_dir=workspace.cache_dir)
    missing = sorted(set(run_classes) - set(images.class_names))
    extra = sorted(set(images.class_names) - set(run_classes))
    if missing or extra:
        parts = ([f"missing {', '.join(map(repr, missing))}"] if missing else []) + (
            [f"not known to the model {', '.join(map(repr, extra))}"] if extra else [])
        raise DatasetError(f"the folder's classes do not match the run's ({'; '.join(parts)}); it needs one "
                           f"sub-folder per class named {', '.join(run_classes)}")
    mapping = np.array([run_classes.index(name) for name in images.class_names], dtype=np.int64)
    labels = mapping[np.asarray(images.labels, np.int64)]
    indices = np.arange(len(images), dtype=np.int64)
    from engine.models import load_run_model  # imports TensorFlow

    probabilities = _predict_batches(load_run_model(workspace, run_id), images.images, labels, indices,
                                     len(run_classes), batch_size=batch_size, on_batch=on_batch)
    log.info("predicted %d images of %s with run %s", len(indices), folder, run_id)
    return Predictions(probabilities, labels, np.asarray(images.ids, str), indices, run_classes,
                       images.fingerprint, run_id)


def predict_split(workspace: store.Workspace, run_id: str, split: str, *, batch_size: int = 256,
                  on_batch: Callable[[int, int], None] | None = None) -> Predictions:
    """Re-predicts one of the run's own splits (`train`, `val` or `test`), reloaded with its config and seeds.

    Raises:
        NoPredictions: the run has no model yet. DatasetError: the run's data no longer loads,
        or it changed since training (`RunFolder.dataset`).
    """
    if split not in SPLITS:
        raise EvaluationError(f"split {split!r}: expected one of {', '.join(SPLITS)}")
    folder = RunFolder(workspace, run_id)
    _check_model(folder, workspace.get_run(run_id).status)
    images = folder.dataset()
    run_classes = list(images.class_names)
    indices = np.asarray(getattr(folder.split(images), split), np.int64)
    labels = np.asarray(images.labels, np.int64)
    from engine.models import load_run_model  # imports TensorFlow

    probabilities = _predict_batches(load_run_model(workspace, run_id), images.images, labels, indices,
                                     len(run_classes), batch_size=batch_size, on_batch=on_batch)
    log.info("predicted the %s split (%d images) with run %s", split, len(indices), run_id)
    return Predictions(probabilities, labels[indices], np.asarray([images.ids[i] for i in indices], str), indices,
                       run_classes, images.fingerprint, run_id)


def predict_source(workspace: store.Workspace, run_id: str, source: str, *, batch_size: int = 256,
                   on_batch: Callable[[int, int], None] | None = None) -> Predictions:
    """Predicts `split:<name>` (one of the run's splits) or a folder/.zip path; see `predict_split`/`predict_folder`."""
    if source.startswith(SPLIT_PREFIX):
        return predict_split(workspace, run_id, source[len(SPLIT_PREFIX):], batch_size=batch_size,
                             on_batch=on_batch)
    path = Path(source).expanduser()
    if not path.exists():
        raise EvaluationError(f"{source}: no such folder or .zip")
    return predict_folder(workspace, run_id, path.resolve(), batch_size=batch_size, on_batch=on_batch)


def _check_model(folder: RunFolder, status: str) -> None:
    if not folder.has_model:
        raise NoPredictions(f"run {folder.run_id} has no saved model (status: {status})")


def check_evaluation_name(name: str) -> str:
    if not name or not set(name) <= _NAME_CHARS or name.startswith(".") or name == "request":
        raise EvaluationError(f"evaluation name {name!r}: use letters, digits, '.', '_' or '-'")
    return name


def default_evaluation_name(source: str) -> str:
    """`val-split` for `split:val`, else the folder's or zip's base name (made name-safe)."""
    if source.startswith(SPLIT_PREFIX):
        return f"{source[len(SPLIT_PREFIX):]}-split"
    stem = Path(source.rstrip("/")).stem or "folder"
    return "".join(c if c in _NAME_CHARS else "_" for c in stem).lstrip(".") or "folder"


def request_evaluation(workspace: store.Workspace, run_id: str, source: str, name: str | None = None):
    """Queues an `evaluate` job of the run's model on `source`; returns the job.

    Raises:
        EvaluationError: a bad name, split or path, or an evaluation of this run is already active.
        NoPredictions: the run has no saved model.
    """
    from engine.jobs import submit_job

    name = check_evaluation_name(name or default_evaluation_name(source))
    if source.startswith(SPLIT_PREFIX):
        if source[len(SPLIT_PREFIX):] not in SPLITS:
            raise EvaluationError(f"{source}: expected one of {', '.join(SPLIT_PREFIX + s for s in SPLITS)}")
    elif not Path(source).expanduser().exists():
        raise EvaluationError(f"{source}: no such folder or .zip on the server")
    _check_model(RunFolder(workspace, run_id), workspace.get_run(run_id).status)
    return submit_job(workspace, run_id, EVALUATE_JOB, EvaluationRequest(source=source, name=name),
                      busy_error=EvaluationError)


def run_evaluation_job(context: JobContext, request: EvaluationRequest, *, batch_size: int = 256) -> Predictions:
    """The body of an `evaluate` job: predicts the request's source in batches with progress and cancel
    checks, and saves `evaluations/<name>.npz` (+ `<name>.json` with the source)."""
    source = request.source
    name = check_evaluation_name(request.name or default_evaluation_name(source))
    context.report(0.0, f"loading the model and {source}")

    def on_batch(done: int, total: int) -> None:
        context.report(done / max(total, 1), f"predicted {done:,} of {total:,} images")
        if context.should_stop(max_age=0.5):
            raise JobCancelled()

    predictions = predict_source(context.workspace, context.run_id, source, batch_size=batch_size,
                                 on_batch=on_batch)
    context.raise_if_cancelled()
    folder = RunFolder(context.workspace, context.run_id)
    folder.evaluations_dir.mkdir(exist_ok=True)
    save_predictions(folder.evaluation_file(name), predictions.probabilities, predictions.labels, predictions.ids,
                     predictions.indices, predictions.class_names)
    store.write_json_atomic(folder.evaluation_file(name, ".json"),
                         {"source": source, "fingerprint": predictions.fingerprint, "job_id": context.job.id,
                          "num_samples": len(predictions)})
    accuracy = float(np.mean(predictions.predicted == predictions.labels)) if len(predictions) else 0.0
    context.report(1.0, f"done: {len(predictions):,} images, accuracy {accuracy:.4f}")
    return predictions


KIND = JobKind(EVALUATE_JOB, run=run_evaluation_job, request_type=EvaluationRequest, doing="being evaluated")
