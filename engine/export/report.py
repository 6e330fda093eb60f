"""Export requests and parity reports, and queueing an export job (no TensorFlow)."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine import store
from engine.export.formats import DEFAULT_FORMATS, FORMATS, format_label
from engine.jobs import submit_job
from engine.runfolder import RunFolder
from engine.store import Job, Workspace


# Derived for engine.model_card, which still imports it; everything else reads `FORMATS`.
DEFAULT_MAX_DROP = 1.0  # accuracy points
DEFAULT_CALIBRATION_SIZE = 200
DEFAULT_LATENCY_RUNS = 50
BATCH_SIZE = 32
ONNX_OPSET = 17
EXPORT_JOB = "export"


class ExportError(ValueError):
    """The run cannot be exported (not finished, no model, bad options); the message says why."""


@dataclass(frozen=True)
class ExportRequest:
    """What to export and how strictly to check it.

    Args:
        formats: any of `FORMATS`; default `DEFAULT_FORMATS` (all but `uint8`).
        max_drop: the largest accepted test-accuracy loss against the Keras model, in
            percentage points, 0 to 100. Default 1.0.
        calibration_size: training images used to calibrate INT8 ranges, 1 to 10,000.
            Default 200.
        latency_runs: timed single-image predictions per artifact, 5 to 1,000. Default 50.
    """

    formats: tuple[str, ...] = DEFAULT_FORMATS
    max_drop: float = DEFAULT_MAX_DROP
    calibration_size: int = DEFAULT_CALIBRATION_SIZE
    latency_runs: int = DEFAULT_LATENCY_RUNS

    def __post_init__(self):
        object.__setattr__(self, "formats", tuple(self.formats))  # a list, or `FORMATS` itself, as a tuple

    def validate(self) -> ExportRequest:
        unknown = [f for f in self.formats if f not in FORMATS]
        if not self.formats or unknown:
            raise ExportError(f"formats={list(self.formats)!r}: choose from {', '.join(FORMATS)}")
        if not 0 <= float(self.max_drop) <= 100:
            raise ExportError(f"max_drop={self.max_drop!r}: expected accuracy points between 0 and 100")
        if not 1 <= int(self.calibration_size) <= 10_000:
            raise ExportError(f"calibration_size={self.calibration_size!r}: expected 1 to 10,000 images")
        if not 5 <= int(self.latency_runs) <= 1000:
            raise ExportError(f"latency_runs={self.latency_runs!r}: expected 5 to 1,000")
        return self

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "formats": list(self.formats)}

    @classmethod
    def from_dict(cls, values: dict) -> ExportRequest:
        return cls(**values).validate()


@dataclass(frozen=True)
class ArtifactParity:
    """One exported artifact, loaded back in its own runtime and compared with the Keras model.

    Accuracies are fractions (0..1); `accuracy_drop` and `per_class_delta` are in
    percentage points (positive = the artifact is worse). Latencies are milliseconds on
    this CPU: single image (median, p95) and one batch of `batch_size` (median).
    """

    format: str
    path: str  # relative to the run folder
    size_bytes: int
    runtime: str
    accuracy: float | None = None
    reference_accuracy: float | None = None
    accuracy_drop: float | None = None
    per_class_delta: list[float] = field(default_factory=list)
    flipped: list[str] = field(default_factory=list)  # test image ids whose top-1 changed
    mean_abs_prob_diff: float | None = None
    latency_ms_median: float | None = None
    latency_ms_p95: float | None = None
    batch_latency_ms_median: float | None = None
    batch_size: int = BATCH_SIZE
    passed: bool = False
    suggestion: str | None = None
    error: str | None = None
    quantization: dict = field(default_factory=dict)
    seconds: float | None = None  # conversion + check

    @property
    def label(self) -> str:
        return format_label(self.format)


@dataclass(frozen=True)
class ExportReport:
    """The parity report of a run's exports (`exports/report.json`)."""

    run_id: str
    created_at: float
    reference_accuracy: float
    max_drop: float
    calibration_size: int
    test_size: int
    class_names: list[str]
    artifacts: list[ArtifactParity]

    @property
    def passed(self) -> bool:
        return all(a.passed for a in self.artifacts)

    def artifact(self, fmt: str) -> ArtifactParity | None:
        return next((a for a in self.artifacts if a.format == fmt), None)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> ExportReport:
        values = dict(values)
        values["artifacts"] = [ArtifactParity(**a) for a in values.get("artifacts", [])]
        return cls(**values)


def read_report(workspace: Workspace, run_id: str) -> ExportReport | None:
    """The run's latest parity report, or None if it was never exported."""
    saved = RunFolder(workspace, run_id).export_report()
    return None if saved is None else ExportReport.from_dict(saved)


def read_metadata(path: str | os.PathLike) -> dict:
    """Reads an export metadata JSON (class names, input spec, quantization per artifact)."""
    return json.loads(Path(path).read_text())


def check_exportable(workspace: Workspace, run_id: str) -> None:
    """Raises ExportError unless the run finished training and has its model and test predictions."""
    run, folder = workspace.get_run(run_id), RunFolder(workspace, run_id)
    if run.status != store.COMPLETED:
        raise ExportError(f"run {run_id} is {run.status}: only a completed run can be exported")
    for path in (folder.model_file, folder.predictions_file):
        if not path.is_file():
            raise ExportError(f"run {run_id} has no {path.name}")


def request_export(workspace: Workspace, run_id: str, request: ExportRequest) -> Job:
    """Queues an export job with these options (stored with the job).

    Returns:
        The job (queued or running). Raises ExportError for a run that cannot be
        exported or when an export of this run is already active.
    """
    request.validate()
    check_exportable(workspace, run_id)
    return submit_job(workspace, run_id, EXPORT_JOB, request, busy_error=ExportError)


def suggest_fallback(fmt: str, calibration_size: int) -> str:
    """What to try when `fmt` loses too much accuracy."""
    spec = FORMATS.get(fmt)
    if spec is not None and spec.calibrated:
        return (f"use float16 or dynamic-range instead, or calibrate INT8 on more training images "
                f"(now {calibration_size})")
    if spec is not None and spec.quantized:
        return "use float32 TFLite (no quantization)"
    return "the conversion changed the model: use the Keras or SavedModel artifact and report the problem"


def summary(report: ExportReport, artifact: ArtifactParity, workspace: Workspace) -> dict[str, Any]:
    """The CLI's JSON for one artifact."""
    return {"run_id": report.run_id, "format": artifact.format,
            "path": str(RunFolder(workspace, report.run_id).resolve(artifact.path)), "size_bytes": artifact.size_bytes,
            "accuracy": artifact.accuracy, "reference_accuracy": report.reference_accuracy,
            "accuracy_drop_points": artifact.accuracy_drop, "flipped": len(artifact.flipped),
            "flipped_ids": artifact.flipped, "mean_abs_prob_diff": artifact.mean_abs_prob_diff,
            "latency_ms_median": artifact.latency_ms_median, "latency_ms_p95": artifact.latency_ms_p95,
            "batch_latency_ms_median": artifact.batch_latency_ms_median, "passed": artifact.passed,
            "max_drop": report.max_drop, "suggestion": artifact.suggestion, "error": artifact.error}
