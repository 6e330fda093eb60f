"""The `export` job: export a run in the requested formats, check each artifact, write the report and metadata."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Callable

import numpy as np

from engine import store
from engine.config import RunConfig
from engine.export.convert import artifact_size, export_artifact
from engine.export.formats import FORMATS
from engine.export.report import (
    EXPORT_JOB,
    ArtifactParity,
    ExportReport,
    ExportRequest,
    check_exportable,
    read_report,
    suggest_fallback,
)
from engine.export.runners import load_runner, measure_parity, predict_batched
from engine.jobs.context import JobCancelled, JobContext
from engine.jobs.kinds import JobKind
from engine.runfolder import RunFolder
from engine.store import Workspace

log = logging.getLogger(__name__)


def run_export_job(context: JobContext, request: ExportRequest) -> ExportReport:
    """The body of an `export` job: exports in the requested formats with progress."""
    return export_run(context.workspace, context.run_id, request, report=context.report,
                      should_stop=context.raise_if_cancelled)


def export_run(workspace: Workspace, run_id: str, request: ExportRequest = ExportRequest(), *,
               report: Callable[[float, str], None] | None = None, should_stop: Callable[[], None] | None = None,
               calibration_images: np.ndarray | None = None) -> ExportReport:
    """Exports a run in the requested formats and writes the parity report, metadata and model card.

    Args:
        workspace: the workspace holding the run.
        run_id: a completed run.
        request: formats, max accuracy drop, calibration size, latency runs.
        report: `report(progress 0..1, message)`, called as the work advances.
        should_stop: called between steps; raises to stop (e.g. `JobCancelled`).
        calibration_images: `(N, H, W, 3)` images to calibrate INT8 with instead of the
            training split (tests use this to break an export on purpose).

    Returns:
        The `ExportReport`, also written to `exports/report.json`.
    """
    request.validate()
    check_exportable(workspace, run_id)
    report = report or (lambda progress, message: None)
    should_stop = should_stop or (lambda: None)
    from engine.models import load_run_model  # imports TensorFlow

    report(0.0, "loading the model and test images")
    folder = RunFolder(workspace, run_id)
    config = workspace.get_run(run_id).config
    model = load_run_model(workspace, run_id)
    data = load_run_split(workspace, run_id)
    if calibration_images is None:
        rng = np.random.default_rng(config.data.seed)
        chosen = rng.choice(data["train_indices"], size=min(request.calibration_size, len(data["train_indices"])),
                            replace=False)
        calibration_images = data["images"][np.sort(chosen)]
    test_x = data["images"][data["test_indices"]].astype(np.float32)
    labels, ids, class_names = data["labels"], data["ids"], data["class_names"]
    reference = predict_batched(lambda x: np.asarray(model(x, training=False)), test_x)
    reference_accuracy = float(np.mean(reference.argmax(1) == labels))

    folder.exports_dir.mkdir(exist_ok=True)
    artifacts: list[ArtifactParity] = []
    steps = len(request.formats)
    for step, fmt in enumerate(request.formats):
        should_stop()
        label = FORMATS[fmt].label
        report(0.05 + 0.95 * step / steps, f"exporting {label} ({step + 1}/{steps})")
        started = time.monotonic()
        path = folder.export_artifact(fmt)
        try:
            export_artifact(model, fmt, path, calibration_images=calibration_images, source=folder.model_file)
            should_stop()
            report(0.05 + 0.95 * (step + 0.5) / steps, f"checking {label} ({step + 1}/{steps})")
            runner = load_runner(path, fmt)
            parity = measure_parity(runner, fmt, test_x, labels, ids, reference, max_drop=request.max_drop,
                                    latency_runs=request.latency_runs, calibration_size=len(calibration_images))
            parity = dataclasses.replace(parity, path=folder.relative(path),
                                         size_bytes=artifact_size(path), quantization=runner.quantization,
                                         seconds=time.monotonic() - started)
        except JobCancelled:
            raise
        except Exception as error:  # noqa: BLE001 - one broken format must not hide the others
            log.exception("exporting %s failed", fmt)
            parity = ArtifactParity(format=fmt, path=folder.relative(path), runtime=FORMATS[fmt].runtime,
                                    size_bytes=artifact_size(path) if path.exists() else 0,
                                    reference_accuracy=reference_accuracy, error=_one_line(error),
                                    suggestion=suggest_fallback(fmt, len(calibration_images)),
                                    seconds=time.monotonic() - started)
        log.info("%s: accuracy %s (reference %.4f), %s bytes, passed=%s", fmt, parity.accuracy, reference_accuracy,
                 parity.size_bytes, parity.passed)
        artifacts.append(parity)

    previous = read_report(workspace, run_id)
    if previous is not None and abs(previous.reference_accuracy - reference_accuracy) < 1e-9:
        kept = [a for a in previous.artifacts if a.format not in request.formats and folder.resolve(a.path).exists()]
        artifacts = sorted(kept + artifacts, key=lambda a: list(FORMATS).index(a.format))
    result = ExportReport(run_id=run_id, created_at=time.time(), reference_accuracy=reference_accuracy,
                          max_drop=float(request.max_drop), calibration_size=len(calibration_images),
                          test_size=len(labels), class_names=list(class_names), artifacts=artifacts)
    store.write_json_atomic(folder.export_report_file, result.to_dict())
    write_metadata(folder.export_metadata_file, run_id, config, class_names, artifacts)
    from engine.model_card import write_model_card

    write_model_card(workspace, run_id)
    passed = sum(a.passed for a in artifacts)
    report(1.0, f"done: {passed}/{len(artifacts)} artifacts within {request.max_drop:g} points")
    return result


def load_run_split(workspace: Workspace, run_id: str) -> dict:
    """The run's images with its train and test indices, as training split them (checked by `RunFolder.dataset`).

    Returns:
        `{"images", "train_indices", "test_indices", "labels" (test), "ids" (test), "class_names"}`.
    """
    folder = RunFolder(workspace, run_id)
    predictions = folder.predictions()
    images = folder.dataset(predictions)
    test = predictions.indices
    return {"images": images.images, "train_indices": np.asarray(folder.split(images).train),
            "test_indices": np.asarray(test), "labels": np.asarray(images.labels)[test],
            "ids": [images.ids[i] for i in test], "class_names": list(images.class_names)}

# -- metadata ---------------------------------------------------------------------------------


def export_metadata(run_id: str, config: RunConfig, class_names: list[str], artifacts: list[ArtifactParity]) -> dict:
    """What a consumer needs to feed an exported model and read its output."""
    size = config.data.image_size
    return {
        "run_id": run_id,
        "model": config.model.name,
        "class_names": list(class_names),
        "input": {
            "name": "image", "shape": [None, size, size, 3], "dtype": "float32", "color": "RGB",
            "range": [0.0, 255.0], "scale": 1.0, "mean": [0.0, 0.0, 0.0],
            "resize": f"bilinear to {size}x{size}, aspect ratio not kept",
            "preprocessing": ("none outside the model: pass raw 0..255 RGB pixels; the model rescales inside "
                              "its graph"),
        },
        "output": {"name": "probabilities", "shape": [None, len(class_names)], "activation": "softmax"},
        "artifacts": {a.format: {"path": a.path, "runtime": a.runtime, **_files(a), **a.quantization}
                      for a in artifacts if not a.error},
        "quantization_note": ("integer inputs: q = round(x / input_scale + input_zero_point); integer outputs: "
                              "p = (q - output_zero_point) * output_scale"),
    }


def write_metadata(path: Path, run_id: str, config: RunConfig, class_names: list[str],
                   artifacts: list[ArtifactParity]) -> dict:
    metadata = export_metadata(run_id, config, class_names, artifacts)
    path.parent.mkdir(parents=True, exist_ok=True)
    store.write_json_atomic(path, metadata)
    return metadata

def _files(artifact: ArtifactParity) -> dict:
    """A folder artifact's files a consumer loads (an OpenVINO IR's .xml and .bin), relative to the run folder."""
    spec = FORMATS.get(artifact.format)
    return {"files": [f"{artifact.path}/{name}" for name in spec.files]} if spec is not None and spec.files else {}


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


KIND = JobKind(EXPORT_JOB, run=run_export_job, request_type=ExportRequest, doing="being exported")
