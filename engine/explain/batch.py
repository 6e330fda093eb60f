"""Batch mode: explain a run's N most confident test-set mistakes as a job, and store them with the run.

`request_mistakes` checks the request and queues an `explain` job with it; the job (`run_mistakes_job`) explains each mistake with the chosen methods
and writes, under `explanations/<batch>/`, the image (`NN-image.png`) and per method the map
(`NN-<method>.npy`) and an overlay (`NN-<method>.png`). `explanations/mistakes.json` names the
folder of the stored batch and holds a row per mistake and a summary per method; it is
replaced atomically once a batch ends, so readers always see one whole batch (its types are
in `batch_results`).

Reading the stored batch (`load_mistakes`) needs NumPy only, never TensorFlow.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from engine import evaluation as ev
from engine import store
from engine.jobs.context import JobCancelled, JobContext
from engine.jobs.kinds import JobKind
from engine.explain.batch_results import ExplainedMistake, MethodResult, MistakeExplanations, summarize
from engine.explain.methods import METHODS, SIDE_BY_SIDE, explain, method_label
from engine.runfolder import RunFolder

log = logging.getLogger(__name__)

EXPLAIN_JOB = "explain"
DEFAULT_COUNT = 8
MAX_COUNT = 256  # a safety cap: each mistake is a few small files per method


class ExplanationError(ValueError):
    """A batch request that cannot run: bad count or methods, no predictions or mistakes, or one already running."""


@dataclass(frozen=True)
class MistakesRequest:
    """What to explain: the `count` most confident mistakes with `methods`.

    Args:
        count: how many mistakes, most confident first; 1..`MAX_COUNT`, default 8. A run with
            fewer mistakes has all of them explained.
        methods: a non-empty subset of `gradcam`, `shap`, `lime`; default Grad-CAM only.
        params: per-method settings, e.g. `{"shap": {"max_evals": 300}}` (those `Method.tunable` names; the
            rest stay at their `Method.params` defaults).
    """

    count: int = DEFAULT_COUNT
    methods: tuple[str, ...] = ("gradcam",)
    params: dict = field(default_factory=dict)

    def validate(self) -> MistakesRequest:
        """Returns the request with methods in the usual order; raises ExplanationError naming a bad value."""
        if isinstance(self.count, bool) or not isinstance(self.count, (int, np.integer)) or self.count < 1:
            raise ExplanationError(f"count={self.count!r}: explain at least 1 mistake")
        if self.count > MAX_COUNT:
            raise ExplanationError(f"count={self.count}: at most {MAX_COUNT} mistakes per batch")
        methods = tuple(self.methods)
        unknown = [m for m in methods if m not in SIDE_BY_SIDE]
        if not methods or unknown:
            raise ExplanationError(f"methods={list(methods)!r}: expected one or more of {', '.join(SIDE_BY_SIDE)}")
        params = dict(self.params or {})
        for method, values in params.items():
            if method not in methods or not isinstance(values, dict):
                raise ExplanationError(f"params[{method!r}]: settings must be a dict for a requested method")
            tunable = METHODS[method].tunable
            for name, value in values.items():
                if name not in tunable:
                    allowed = ", ".join(tunable) or "none"
                    raise ExplanationError(f"params[{method!r}][{name!r}]: not a setting of {method} ({allowed})")
                least = tunable[name].minimum
                if isinstance(value, bool) or not isinstance(value, int) or value < least:
                    raise ExplanationError(f"params[{method!r}][{name!r}]={value!r}: expected a whole number "
                                           f">= {least}")
        return MistakesRequest(int(self.count), tuple(m for m in SIDE_BY_SIDE if m in methods), params)

    def to_dict(self) -> dict:
        return {"count": int(self.count), "methods": list(self.methods), "params": self.params}

    @classmethod
    def from_dict(cls, values: dict) -> MistakesRequest:
        return cls(count=values.get("count", DEFAULT_COUNT), methods=tuple(values.get("methods", ("gradcam",))),
                   params=dict(values.get("params") or {}))


# -- asking for a batch (no TensorFlow) ----------------------------------------------------------------


def mistakes_to_explain(workspace: store.Workspace, run_id: str) -> tuple[ev.Predictions, np.ndarray]:
    """The run's test predictions and its mistakes' positions, most confident first.

    Raises:
        ExplanationError: the run has no model or no test predictions, or makes no mistakes.
    """
    status = workspace.get_run(run_id).status
    folder = RunFolder(workspace, run_id)
    if not folder.has_model:
        raise ExplanationError(f"run {run_id} has no trained model yet (status: {status})")
    try:
        predictions = folder.predictions()
    except ev.NoPredictions:
        raise ExplanationError(f"run {run_id} has no test predictions (status: {status}); only a completed run "
                               "has mistakes to explain") from None
    positions = ev.ranked_mistakes(predictions)
    if positions.size == 0:
        raise ExplanationError(f"run {run_id} makes no mistakes on its {len(predictions)} test images: "
                               "nothing to explain")
    return predictions, positions


def request_mistakes(workspace: store.Workspace, run_id: str, request: MistakesRequest = MistakesRequest()) -> store.Job:
    """Checks the request and queues an `explain` job with it; returns the job.

    Raises:
        ExplanationError: a bad count, method or setting; the run has no model, predictions or
            mistakes; or a batch of this run is already being explained.
    """
    from engine.jobs import submit_job

    request = request.validate()
    mistakes_to_explain(workspace, run_id)
    return submit_job(workspace, run_id, EXPLAIN_JOB, request, busy_error=ExplanationError)


def load_mistakes(workspace: store.Workspace, run_id: str) -> MistakeExplanations | None:
    """The run's stored batch, or None if it has none (or its record does not load)."""
    record = RunFolder(workspace, run_id).explanations()
    try:
        return None if record is None else MistakeExplanations.from_dict(record)
    except (ValueError, KeyError, TypeError) as error:
        log.warning("the stored batch of run %s does not load: %s", run_id, error)
        return None


# -- the work (imports TensorFlow) ----------------------------------------------------------------------


def explain_mistakes(workspace: store.Workspace, run_id: str, request: MistakesRequest = MistakesRequest(), *,
                     report: Callable[[float, str], None] | None = None,
                     should_stop: Callable[[], None] | None = None, job_id: str | None = None
                     ) -> MistakeExplanations:
    """Explains a run's most confident test-set mistakes and stores them as the run's batch.

    Each mistake is explained for the class the model predicted (why it said that), with
    each method's seconds and deletion/insertion AUCs against a random order.

    Args:
        workspace: the workspace holding the run.
        run_id: a completed run with a model and test predictions.
        request: how many mistakes and which methods.
        report: `report(progress 0..1, message)` as the work advances.
        should_stop: called before each map; raises to stop (e.g. `JobCancelled`). The images
            done so far are then stored as an incomplete batch before the exception goes on.
        job_id: the job doing the work, recorded with the batch (and naming its folder).

    Returns:
        The stored `MistakeExplanations` (also in `explanations/mistakes.json`).

    Raises:
        ExplanationError: see `request_mistakes`. DatasetError: the run's images no longer load or match.
    """
    from PIL import Image

    from engine.devices import quiet_cuda_probe
    from engine.explain.single import write_outputs

    request = request.validate()
    report = report or (lambda progress, message: None)
    should_stop = should_stop or (lambda: None)
    started = time.time()
    run, folder = workspace.get_run(run_id), RunFolder(workspace, run_id)
    predictions, ranked = mistakes_to_explain(workspace, run_id)
    positions = ranked[:request.count]
    report(0.0, "loading the model and the test images")
    images = folder.dataset(predictions).images
    model_mtime = folder.model_file.stat().st_mtime
    should_stop()  # before the TensorFlow import (seconds), and again after it
    with quiet_cuda_probe():  # the first model load imports TensorFlow
        from engine.models import last_conv_layer_name, load_run_model

        model = load_run_model(workspace, run_id)
    should_stop()
    names = folder.class_names()
    layer = last_conv_layer_name(run.config.model)

    # A method's first call in a process is slow (Grad-CAM traces its gradient graph, about a second;
    # SHAP compiles, tens of seconds): a small untimed call first keeps that out of the per-image
    # seconds the methods are compared by. LIME needs none.
    warm_up = 0.0
    warming = [m for m in request.methods if METHODS[m].job_warm_up is not None]
    if warming:
        report(0.0, f"warming up {' and '.join(method_label(m) for m in warming)} (once per job)")
        tick = time.perf_counter()
        first = int(positions[0])
        for method in warming:
            spec = METHODS[method]
            params = {**spec.job_warm_up, **({"layer_name": layer} if spec.needs_conv else {})}
            explain(model, np.asarray(images[int(predictions.indices[first])], dtype=np.float32), method,
                    target=int(predictions.predicted[first]), faithfulness=False, **params)
        warm_up = time.perf_counter() - tick
        should_stop()

    batch_dir = folder.explanations_dir / (job_id or store.new_id())
    relative = folder.relative(batch_dir)
    batch_dir.mkdir(parents=True, exist_ok=True)
    rows: list[ExplainedMistake] = []
    total = len(positions) * len(request.methods)

    def keep(complete: bool) -> MistakeExplanations:
        result = MistakeExplanations(
            run_id=run_id, job_id=job_id, folder=relative, created_at=started, seconds=time.time() - started,
            complete=complete, requested=request.count, mistakes=int(ranked.size), test_images=len(predictions),
            methods=list(request.methods), params=request.params, class_names=names, model_mtime=model_mtime,
            rows=rows, summary=summarize(rows, list(request.methods)), warm_up_seconds=warm_up)
        store.write_json_atomic(folder.explanations_record, result.to_dict())
        _remove_other_batches(folder, keep=batch_dir)
        return result

    try:
        for rank, position in enumerate(positions, 1):
            position = int(position)
            image = np.asarray(images[int(predictions.indices[position])], dtype=np.float32)
            true, predicted = int(predictions.labels[position]), int(predictions.predicted[position])
            stem = f"{rank:02d}"
            explanations = []
            for method in request.methods:
                should_stop()
                done = (rank - 1) * len(request.methods) + len(explanations)
                report(done / total, f"image {rank} of {len(positions)}: {method_label(method)}")
                params = dict(request.params.get(method, {}))
                if METHODS[method].needs_conv:
                    params["layer_name"] = layer
                explanations.append(explain(model, image, method, target=predicted, class_names=names, **params))
            written = write_outputs(batch_dir, stem, image, explanations)
            Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(batch_dir / f"{stem}-image.png")
            rows.append(ExplainedMistake(
                rank=rank, position=position, id=str(predictions.ids[position]),
                index=int(predictions.indices[position]), true=true, true_name=names[true], predicted=predicted,
                predicted_name=names[predicted], confidence=float(predictions.probabilities[position, predicted]),
                true_probability=float(predictions.probabilities[position, true]),
                image=f"{relative}/{stem}-image.png", methods={row["method"]: _method_result(row, relative)
                                                                for row in written}))
    except BaseException:
        if rows:  # keep what is done: a cancelled batch of SHAP and LIME may have taken minutes
            keep(complete=False)
            log.info("stored %d of %d explained mistakes of run %s before stopping", len(rows), len(positions),
                     run_id)
        else:
            shutil.rmtree(batch_dir, ignore_errors=True)
        raise
    result = keep(complete=True)
    labels = ", ".join(method_label(m) for m in request.methods)
    report(1.0, f"done: {len(rows)} mistake{'s' * (len(rows) != 1)} explained with {labels} in "
                f"{result.seconds:.0f} s")
    log.info("explained %d mistakes of run %s with %s in %.1f s", len(rows), run_id, labels, result.seconds)
    return result


def _method_result(row: dict, relative: str) -> MethodResult:
    """A `write_outputs` row as stored: plain numbers, and file paths relative to the run folder."""
    return MethodResult(method=row["method"], seconds=float(row["seconds"]), deletion_auc=float(row["deletion_auc"]),
                        insertion_auc=float(row["insertion_auc"]),
                        random_deletion_auc=float(row["random_deletion_auc"]),
                        random_insertion_auc=float(row["random_insertion_auc"]),
                        map=f"{relative}/{Path(row['map_path']).name}",
                        overlay=f"{relative}/{Path(row['overlay_path']).name}",
                        params={k: v for k, v in row["params"].items() if isinstance(v, (int, float, str))})


def _remove_other_batches(folder: RunFolder, keep: Path) -> None:
    """Deletes the folders of older (or abandoned) batches once a new one is recorded."""
    for path in folder.explanations_dir.iterdir():
        if path.is_dir() and path != keep:
            shutil.rmtree(path, ignore_errors=True)


def run_mistakes_job(context: JobContext, request: MistakesRequest) -> MistakeExplanations:
    """The body of an `explain` job: explains the run's most confident mistakes with progress and cancel."""

    def should_stop() -> None:
        if context.should_stop(max_age=0.5):
            raise JobCancelled()

    return explain_mistakes(context.workspace, context.run_id, request, report=context.report,
                            should_stop=should_stop, job_id=context.job.id)


KIND = JobKind(EXPLAIN_JOB, run=run_mistakes_job, request_type=MistakesRequest, doing="explaining a batch")
