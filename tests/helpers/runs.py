"""A tiny real trained run for the export, model-card and demo tests (trained in-process, no job process)."""

from __future__ import annotations

from engine.config import RunConfig
from engine.runfolder import RunFolder
from engine.store import COMPLETED, Workspace


def train_tiny_run(workspace: Workspace, *, model: dict | None = None, epochs: int = 3, image_size: int = 16,
                   source: str = "digits", max_per_class: int = 0) -> str:
    """Trains a small model on digits (or `source`) inside this process; returns the completed run's id."""
    from engine.training import train

    config = RunConfig.from_dict({
        "name": "tiny", "data": {"source": source, "image_size": image_size, "max_per_class": max_per_class},
        "model": model or {"name": "lenet5"}, "augment": {"rotation": 0, "shift": 0, "zoom": 0},
        "train": {"epochs": epochs, "batch_size": 32, "learning_rate": 0.003, "early_stopping": 0}})
    run = workspace.create_run(config)
    job = workspace.claim_next_job(limit=10)
    train(config, RunFolder(workspace, run.id))
    workspace.finish_job(job.id, COMPLETED)
    return run.id
