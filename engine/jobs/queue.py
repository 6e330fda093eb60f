"""The job queue: submit, dispatch, watch, cancel and reap jobs; it knows job kinds only by name.

The store is the only channel between processes: a job writes its progress and heartbeat
there and reads its cancel flag from there. Dispatch happens here alone (`refresh`), when a
job is submitted, when one ends, and whenever a page or the CLI looks; the backend starts
the processes. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from engine import store
from engine.config import RunConfig
import engine.jobs.kinds as kinds
from engine.jobs.backends import check_workers, get_backend
from engine.jobs.crash_report import crash_excerpt
from engine.runfolder import RunFolder
from engine.store import Job, Run, Workspace

MAX_JOBS_ENV = "APERTURE_MAX_JOBS"
HEARTBEAT_SECONDS = 2.0
STALE_SECONDS = 30.0  # a running job whose heartbeat is older than this is presumed dead
CANCEL_GRACE_SECONDS = 15.0  # how long a cooperative cancel may take before SIGTERM, and then SIGKILL, follow
LOG_TAIL_LINES = 30


def max_jobs() -> int:
    """How many jobs may run at once: `APERTURE_MAX_JOBS`, else the backend's default (local 1; Ray: no limit)."""
    return max(1, int(os.environ.get(MAX_JOBS_ENV) or get_backend().default_max_jobs))


def submit(config: RunConfig, workspace: Workspace | None = None, *, parent_id: str | None = None) -> Run:
    """Records a new run with a queued train job and starts it if a slot is free.

    Args:
        config: the validated run configuration.
        workspace: default `Workspace()` (from `$APERTURE_HOME`).
        parent_id: the run this one was cloned from, if any.

    Returns:
        The run as recorded (status `queued` or `running`).

    Raises:
        ConfigError: `train.workers` > 1 on a backend that trains in one process.
    """
    check_workers(config)  # refused here, not in the job
    get_backend().check()  # e.g. an unreachable Ray cluster: said now, before anything is recorded
    workspace = workspace or Workspace()
    run = workspace.create_run(config, parent_id=parent_id)
    refresh(workspace)
    return workspace.get_run(run.id)


def submit_job(workspace: Workspace, run_id: str, kind: str, request: Any, *, busy_error: type[Exception]) -> Job:
    """Queues a job of another kind (e.g. `export`) for an existing run, and starts it if a slot is free.

    Args:
        workspace: where the run lives.
        run_id: the run the job works on.
        kind: a registered kind other than `train` (a train job comes with `submit` or `resume`).
        request: the kind's request object (stored with the job as JSON, `request.to_dict()`).
        busy_error: raised, as `busy_error("run ID is already DOING (job ID)")`, when a job of this kind
            is already queued or running for the run.

    Returns:
        The job as recorded (status `queued` or `running`).
    """
    job_kind = kinds.resolve(kind)
    get_backend().check()
    current = workspace.latest_job(run_id, kind)
    if current is not None and current.active:
        raise busy_error(f"run {run_id} is already {job_kind.doing} (job {current.id})")
    job = workspace.create_job(run_id, kind, request_json=json.dumps(request.to_dict()))
    refresh(workspace)
    return workspace.get_job(job.id)


def submit_task(workspace: Workspace, task_id: str, kind: str, request: Any) -> Job:
    """Queues a job for a task that is not a run (a decode, a weights download), or returns the active one.

    Like a sweep's job, the job's `run_id` is the task's id, and the folder `workspace.run_dir(task_id)`
    (no row in `runs`) holds its log. A second page session, a reload or the CLI asking for the same task
    gets the job already queued or running instead of a second one. Two submitters racing can both insert:
    the younger job then withdraws in favour of the older.

    Args:
        workspace: the workspace to queue in.
        task_id: names the work, the same for the same work (e.g. `decode-<hash of the request>`).
        kind: a registered kind.
        request: the kind's request object (stored as JSON, `request.to_dict()`).

    Returns:
        The task's job as recorded (status `queued` or `running`), or its older twin.
    """
    kinds.resolve(kind)
    current = workspace.latest_job(task_id, kind)
    if current is not None and current.active:
        return current
    get_backend().check()
    job_id = workspace.create_task_job(task_id, kind, request_json=json.dumps(request.to_dict())).id
    twins = [j for j in workspace.jobs(statuses=store.ACTIVE) if j.run_id == task_id and j.kind == kind]
    if twins and twins[0].id != job_id:
        cancel_job(job_id, workspace)
        return twins[0]
    refresh(workspace)
    return workspace.get_job(job_id)


def can_resume(run: Run, workspace: Workspace) -> bool:
    """True if a failed or cancelled run has a last checkpoint to continue from."""
    folder = RunFolder(workspace, run.id)
    return (run.status in (store.FAILED, store.CANCELLED) and run.epochs_done < run.epochs_total
            and folder.last_checkpoint.exists() and folder.last_checkpoint_info.exists())


def resume(run_id: str, workspace: Workspace) -> Job:
    """Queues a new train job for the same run that continues from its last checkpoint.

    The job loads `last.keras` (weights and optimizer state, so a schedule continues where
    it was) and trains epochs k+1..N; the run's metrics continue from epoch k+1. The rest of
    the state carries over too: each epoch's shuffle and augmentation depend on (seed, epoch)
    only, dropout's seed state is saved in `last.json`, and early stopping and the best
    checkpoint resume from the stored metrics; so with `train.deterministic` the resumed run
    ends exactly where the uninterrupted run would (tests/engine/training/test_resume.py).

    Raises:
        ValueError: the run is active or finished, or has no last checkpoint (the message says which);
            `ConfigError` (a ValueError) for `train.workers` > 1 on a backend that trains in one process.
    """
    run = workspace.get_run(run_id)
    if run.status not in (store.FAILED, store.CANCELLED):
        raise ValueError(f"run {run_id} is {run.status}: only a failed or cancelled run can be resumed")
    check_workers(run.config)
    if not can_resume(run, workspace):
        raise ValueError(f"run {run_id} has no last checkpoint to resume from (it stopped before finishing "
                         "an epoch, or all its epochs are done); start it again with Clone")
    get_backend().check()
    job = workspace.create_job(run_id, kinds.TRAIN)
    refresh(workspace)
    return workspace.get_job(job.id)


def cancel_job(job_id: str, workspace: Workspace) -> Job:
    """Asks one job to stop (a queued one is cancelled at once); returns it as it stands."""
    job = workspace.get_job(job_id)
    if job.active:
        workspace.request_cancel(job.id)
        if job.status == store.QUEUED:  # unless claimed meanwhile: then it stops cooperatively
            workspace.finish_job(job.id, store.CANCELLED, error="cancelled before it started", only_if_queued=True)
    return workspace.get_job(job_id)


def cancel(run_id: str, workspace: Workspace) -> Job | None:
    """Asks a run's active train job to stop; a queued job is cancelled at once.

    Returns:
        The job as it stands now, or None if the run had no active job.
    """
    job = workspace.get_run(run_id).job
    if job is None or not job.active:
        return None
    return cancel_job(job.id, workspace)


def delete(run_id: str, workspace: Workspace, *, timeout: float = 2 * CANCEL_GRACE_SECONDS) -> None:
    """Deletes a run, first stopping its jobs of every kind (killing those that do not stop in `timeout`)."""
    running = [cancel_job(job.id, workspace) for job in workspace.jobs(statuses=store.ACTIVE) if job.run_id == run_id]
    deadline = time.time() + timeout
    for job in running:
        while time.time() < deadline and workspace.get_job(job.id).status == store.RUNNING:
            time.sleep(0.2)
        if workspace.get_job(job.id).status == store.RUNNING:
            get_backend().stop(job, force=True)
            workspace.finish_job(job.id, store.CANCELLED, error="killed to delete the run")
    workspace.delete_run(run_id)
    refresh(workspace)


def wait(run_id: str, workspace: Workspace, *, poll_seconds: float = 1.0, on_poll=None) -> Run:
    """Blocks until the run's train job ends, calling `on_poll(run)` after each poll."""
    while True:
        refresh(workspace)
        run = workspace.get_run(run_id)
        if on_poll:
            on_poll(run)
        if run.status not in store.ACTIVE:
            return run
        time.sleep(poll_seconds)


def read_log_tail(workspace: Workspace, run_id: str, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of the log of a run's latest job."""
    job = workspace.get_run(run_id).job
    return get_backend().logs(workspace, job, lines) if job is not None else ""


def refresh(workspace: Workspace, *, keep_warm: bool = False) -> None:
    """Reaps dead jobs, escalates stuck cancels and starts queued jobs. Cheap; call often.

    Args:
        workspace: the workspace to look after.
        keep_warm: also keep a worker ready (the local backend's standby process with TensorFlow
            imported), so the next submitted run starts training within a second or two; the
            dashboard asks for this while it is open; `APERTURE_STANDBY=0` turns it off.
    """
    backend = get_backend()
    now = time.time()
    for job in workspace.jobs(statuses=(store.RUNNING,)):
        alive = backend.alive(job)
        if job.cancel_requested_at and alive:
            waited = now - job.cancel_requested_at
            if waited > 2 * CANCEL_GRACE_SECONDS:
                backend.stop(job, force=True)
                workspace.finish_job(job.id, store.CANCELLED, error="cancelled (killed after not stopping in time)")
            elif waited > CANCEL_GRACE_SECONDS:
                backend.stop(job, force=False)
            continue
        stale = (job.heartbeat_at is not None and now - job.heartbeat_at > STALE_SECONDS
                 and not backend.placing(job))  # e.g. Ray waiting for a free node: no process to beat yet
        if alive and not stale:
            continue
        if alive:
            backend.stop(job, force=True)
            reason = f"no heartbeat for {now - job.heartbeat_at:.0f} s"
        else:
            reason = backend.death(workspace, job)
        status = store.CANCELLED if job.cancel_requested_at else store.FAILED
        workspace.finish_job(job.id, status, error=reason,
                             traceback=crash_excerpt(backend.logs(workspace, job, 400), LOG_TAIL_LINES))
    _dispatch(workspace, backend, keep_warm)


def _dispatch(workspace: Workspace, backend, keep_warm: bool) -> None:
    if backend.warm(workspace):
        return  # the prepared worker claims the next queued job itself, within a fraction of a second
    while (job := workspace.claim_next_job(max_jobs())) is not None:
        try:
            backend.start(workspace, job)
        except OSError as error:
            workspace.finish_job(job.id, store.FAILED, error=f"could not start the job process: {error}")
    if keep_warm and not workspace.jobs(statuses=store.ACTIVE):
        backend.keep_warm(workspace)
