"""`train.workers` > 1: one model trained across worker processes on a Ray cluster, with Ray Train.

The train job (a `python -m engine job ID` process the Ray backend started on the cluster) loads
and records the data, then hands the training to `ray.train.tensorflow.TensorflowTrainer`: it
starts `train.workers` worker actors (a GPU each where the cluster has GPUs), sets `TF_CONFIG`
in each, and runs `_train_loop_per_worker`, which trains with `engine.training_loop` under
`MultiWorkerMirroredStrategy`. The chief writes progress, metrics and checkpoints into the run
folder and the store as a single-process run does, so Evaluate, Export and Resume work unchanged;
Ray Train's own checkpoints are not used (its `storage_path` is `RunFolder.ray_train_dir`).
Afterwards this job tests the best checkpoint, as the single-process path does.

Each worker reads the store's cancel flag itself; a SIGTERM to this job (Ray's stop) is passed on
to them as a cancel request. A worker that dies fails the run: Ray Train reports its actor's death,
and the others' next collective gives up after the collective timeout (`engine.devices`).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from pathlib import Path

from engine import cpu
from engine.config import RunConfig
from engine.jobs.context import JobCancelled, JobContext
from engine.runfolder import RunFolder
from engine.store import Workspace
from engine.training import TrainingFailed, TrainResult, load_run_data, test_and_record

log = logging.getLogger(__name__)
# Passed on to the worker actors, which do not inherit this process's environment.
_WORKER_ENV_PREFIXES = ("APERTURE_", "TF_CPP_", "RAY_USAGE_STATS")
_WORKER_ENV_NAMES = (cpu.ISA_ENV, cpu.ONEDNN_ENV)


def train_across_workers(config: RunConfig, context: JobContext) -> TrainResult:
    """Trains the job's run across `config.train.workers` Ray Train workers, then tests it here.

    Args:
        config: the run's configuration (`train.workers` > 1).
        context: the train job's context (its folder, progress reporting and cancel flag).

    Returns:
        The `TrainResult`. Raises `JobCancelled` when cancelled (the checkpoints are kept) and
        `TrainingFailed` when the loss diverged or a worker failed (the message says which).
    """
    import keras

    folder, workspace = context.folder, context.folder.workspace
    images, split = load_run_data(folder, context.report)
    context.raise_if_cancelled()
    workers = config.train.workers
    trainer = _make_trainer(config, context, workers)
    context.report(None, f"starting {workers} workers")
    forward = threading.Event()
    threading.Thread(target=_forward_termination, args=(context, forward), daemon=True).start()
    try:
        trainer.fit()
    except Exception as error:  # noqa: BLE001 - Ray wraps the workers' errors; each is told apart below
        if context.should_stop(max_age=0):
            raise JobCancelled() from error
        raise _failure(error, workers) from error
    finally:
        forward.set()
    if context.should_stop(max_age=0):
        raise JobCancelled()
    run = workspace.get_run(folder.run_id)
    best = folder.model_file if folder.model_file.exists() else folder.last_checkpoint
    model = keras.models.load_model(best, safe_mode=True)
    test_accuracy = test_and_record(model, folder, images, split, batch_size=config.train.batch_size,
                                    report=context.report, train_seconds=run.train_seconds or 0.0,
                                    epochs_done=run.epochs_done)
    return TrainResult(test_accuracy, run.best_val_accuracy, run.epochs_done, run.train_seconds or 0.0)


def worker_environment(environ=None) -> dict[str, str]:
    """The variables the worker actors need from this process: Aperture's, oneDNN's, and where `engine` is."""
    environ = os.environ if environ is None else environ
    env = {k: v for k, v in environ.items() if k.startswith(_WORKER_ENV_PREFIXES) or k in _WORKER_ENV_NAMES}
    source_root = str(Path(__file__).resolve().parents[1])
    paths = [p for p in environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([source_root, *[p for p in paths if p != source_root]])
    return env


def _make_trainer(config: RunConfig, context: JobContext, workers: int):
    import ray
    from ray.train import FailureConfig, ScalingConfig
    from ray.train import RunConfig as TrainRunConfig
    from ray.train.tensorflow import TensorflowTrainer

    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS") or "auto", log_to_driver=True)
    use_gpu = ray.cluster_resources().get("GPU", 0) > 0
    folder = context.folder
    folder.ray_train_dir.mkdir(parents=True, exist_ok=True)
    log.info("training across %d Ray Train workers (%s)", workers, "a GPU each" if use_gpu else "CPU")
    return TensorflowTrainer(
        _train_loop_per_worker,
        train_loop_config={"root": str(folder.workspace.root), "job_id": context.job.id, "workers": workers},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu),
        run_config=TrainRunConfig(name=f"{folder.run_id}-{context.job.id}", storage_path=str(folder.ray_train_dir),
                                  failure_config=FailureConfig(max_failures=0),
                                  worker_runtime_env={"env_vars": worker_environment()}))


def _train_loop_per_worker(loop_config: dict) -> None:
    """One Ray Train worker: trains its part of the run with `engine.training_loop` (TF_CONFIG is set)."""
    import ray.train

    rank = ray.train.get_context().get_world_rank()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s worker {rank} %(levelname)s %(name)s: %(message)s")
    from engine.training_loop import train_worker

    workspace = Workspace(loop_config["root"])
    job = workspace.get_job(loop_config["job_id"])
    context = JobContext(workspace, job, RunFolder(workspace, job.run_id))
    outcome = train_worker(context.folder.config(), context.folder, workers=int(loop_config["workers"]),
                           should_stop=context.should_stop, report=context.report)
    log.info("worker %d done: %d epochs%s", rank, outcome["epochs_done"], ", cancelled" if outcome["cancelled"] else "")


def _forward_termination(context: JobContext, done: threading.Event) -> None:
    """Turns a SIGTERM to this job into the store's cancel flag, which every worker reads."""
    while not done.wait(0.2):
        if context.terminated.is_set():
            context.workspace.request_cancel(context.job.id)
            return


def _failure(error: Exception, workers: int) -> TrainingFailed:
    """A `TrainingFailed` saying why Ray Train failed: a worker's own `TrainingFailed` message, or the error."""
    failures = getattr(error, "worker_failures", None) or {}
    for rank in sorted(failures):
        cause = failures[rank]
        while cause is not None and not isinstance(cause, TrainingFailed):
            cause = getattr(cause, "cause", None) or cause.__cause__
        if isinstance(cause, TrainingFailed):
            return cause
    first = next(iter(failures.items()), None)
    detail = f"worker {first[0]}: {_one_line(first[1])}" if first else _one_line(error)
    return TrainingFailed(f"training across {workers} workers failed ({detail})")


def _one_line(error: BaseException) -> str:
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[-1] if lines else ''}"
