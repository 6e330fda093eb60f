"""What the index holds: a run, its jobs and its epochs, as plain frozen records, and the job statuses."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from engine.config import RunConfig

TRAIN_JOB = "train"  # the kind of job every run starts with; a run's status is its latest train job's
QUEUED, RUNNING, COMPLETED, FAILED, CANCELLED = "queued", "running", "completed", "failed", "cancelled"
STATUSES = (QUEUED, RUNNING, COMPLETED, FAILED, CANCELLED)
ACTIVE = (QUEUED, RUNNING)


class RunNotFound(LookupError):
    """No run matches the given id or prefix."""


@dataclass(frozen=True)
class Job:
    """One execution of work for a run (a kind in `engine.jobs.kinds`) in its own OS process."""

    id: str
    run_id: str
    kind: str
    status: str
    created_at: float
    started_at: float | None
    finished_at: float | None
    heartbeat_at: float | None
    host: str | None
    pid: int | None
    cancel_requested_at: float | None
    progress: float
    message: str
    error: str | None
    traceback: str | None
    request_json: str | None = None

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    @property
    def request(self) -> dict[str, Any]:
        """The options the job was submitted with (empty for a job without any)."""
        return json.loads(self.request_json) if self.request_json else {}


@dataclass(frozen=True)
class Run:
    """A training run as the index knows it, with the status of its latest train job."""

    id: str
    name: str
    created_at: float
    dataset: str
    model: str
    config_json: str
    parent_id: str | None
    epochs_total: int
    epochs_done: int
    num_classes: int | None
    params: int | None
    device: str | None
    fingerprint: str | None
    versions_json: str | None
    best_val_accuracy: float | None
    test_accuracy: float | None
    train_seconds: float | None
    job: Job | None

    @property
    def status(self) -> str:
        return self.job.status if self.job else QUEUED

    @property
    def config(self) -> RunConfig:
        return RunConfig.from_json(self.config_json)

    @property
    def versions(self) -> dict[str, str]:
        return json.loads(self.versions_json) if self.versions_json else {}

    @property
    def label(self) -> str:
        """A short human label: the name if given, else `model on dataset`."""
        return self.name or f"{self.model} on {self.dataset}"


@dataclass(frozen=True)
class EpochMetrics:
    """What one epoch measured; `epoch` counts from 1."""

    epoch: int
    loss: float | None = None
    accuracy: float | None = None
    val_loss: float | None = None
    val_accuracy: float | None = None
    learning_rate: float | None = None
    seconds: float | None = None
    images_per_second: float | None = None
