"""The `train` job (`KIND`): trains the run from its `config.json`, in this process or across workers.

`train.workers` 1 trains here with `model.fit` (`engine.training`); more trains one model across
that many worker processes with Ray Train (`engine.training_distributed`), which needs the Ray backend.
"""

from __future__ import annotations

from engine import store
from engine.jobs.context import JobContext
from engine.jobs.kinds import JobKind
from engine.training import TrainResult, train


def run_train_job(context: JobContext, request: None) -> TrainResult:
    """The body of a `train` job: trains the run from its `config.json` (resuming from `last.keras` if there)."""
    config = context.folder.config()
    if config.train.workers > 1:
        from engine.training_distributed import train_across_workers

        return train_across_workers(config, context)
    return train(config, context.folder, report=context.report, should_stop=context.should_stop)


KIND = JobKind(store.TRAIN_JOB, run=run_train_job, doing="training")
