"""Inside a job process: run one job to its end, reporting to the store; or wait warm as the standby.

`python -m engine job ID` runs `run_job`; `python -m engine standby` runs `run_standby`, which
imports TensorFlow ahead of time and then takes the next queued job itself.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import threading
import time
import traceback
from pathlib import Path

from engine import store
from engine.cpu import log_onednn_setting
import engine.jobs.kinds as kinds
from engine.jobs.backends.local import STANDBY_FILE, standby_pid
from engine.jobs.backends.ray import process_host
from engine.jobs.context import JobCancelled, JobContext
from engine.jobs.queue import HEARTBEAT_SECONDS, max_jobs, refresh
from engine.runfolder import RunFolder
from engine.store import Workspace

STANDBY_IDLE_SECONDS = 600.0  # an unused standby exits after this long
STANDBY_POLL_SECONDS = 0.25
JOB_NICENESS = 5

log = logging.getLogger(__name__)


def run_job(job_id: str, workspace: Workspace | None = None) -> int:
    """Runs one job to its end in this process; returns the process exit code."""
    workspace = workspace or Workspace()
    job = workspace.get_job(job_id)
    workspace.set_job_process(job_id, os.getpid(), host=process_host(job_id))
    faulthandler.enable()  # a native crash leaves its signal and Python stack in the log, for the reaper
    _lower_priority()
    log.info("job %s (%s) for run %s started (process %d)", job_id, job.kind, job.run_id, os.getpid())
    log_onednn_setting()
    context = JobContext(workspace, job, RunFolder(workspace, job.run_id))
    signal.signal(signal.SIGTERM, lambda *_: context.terminated.set())
    stop_beating = threading.Event()
    threading.Thread(target=_beat, args=(workspace, job_id, stop_beating), daemon=True).start()
    code = 0
    try:
        context.raise_if_cancelled()
        kind = _load_kind(job.kind)
        request = kind.parse_request(job.request)
        context.raise_if_cancelled()
        kind.run(context, request)
        workspace.finish_job(job_id, store.COMPLETED)
    except JobCancelled:
        log.info("job %s cancelled", job_id)
        workspace.finish_job(job_id, store.CANCELLED, error="cancelled by the user")
    except Exception as error:  # noqa: BLE001 - any failure must end up in the store
        log.exception("job %s failed", job_id)
        code = 1
        workspace.finish_job(job_id, store.FAILED, error=_one_line(error), traceback=traceback.format_exc())
    finally:
        stop_beating.set()
        refresh(workspace)  # start the next queued job
    return code


def run_standby(workspace: Workspace | None = None) -> int:
    """Imports TensorFlow ahead of time, then runs the next queued job as soon as it appears.

    One standby per workspace (its pid in `standby.pid`). It runs exactly one job, so every
    job still gets a fresh process; it exits when idle too long or when its pid file goes.
    """
    workspace = workspace or Workspace()
    pid_file = workspace.root / STANDBY_FILE
    if standby_pid(workspace) is not None:
        return 0
    pid_file.write_text(str(os.getpid()))
    _lower_priority()
    _load_kind(kinds.TRAIN)  # the slow import (TensorFlow), done before any job is waiting

    if _owns(pid_file):
        pid_file.write_text(f"{os.getpid()} ready")

    idle_until = time.monotonic() + STANDBY_IDLE_SECONDS
    job = None
    while time.monotonic() < idle_until and _owns(pid_file):
        job = workspace.claim_next_job(max_jobs())
        if job is not None:
            break
        time.sleep(STANDBY_POLL_SECONDS)
    if _owns(pid_file):
        pid_file.unlink(missing_ok=True)
    if job is None:
        return 0
    workspace.set_job_process(job.id, os.getpid())
    refresh(workspace)  # no standby now: start what else is queued, up to the job limit
    log_file = os.open(RunFolder(workspace, job.run_id).log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(log_file, 1)
    os.dup2(log_file, 2)
    return run_job(job.id, workspace)


def _load_kind(name: str) -> kinds.JobKind:
    """Resolves a kind, hiding TensorFlow's start-up noise about CUDA on GPU-less machines."""
    from engine.devices import quiet_cuda_probe

    with quiet_cuda_probe():
        return kinds.resolve(name)


def _owns(pid_file: Path) -> bool:
    try:
        return pid_file.read_text().split()[0] == str(os.getpid())
    except OSError:
        return False


def _lower_priority() -> None:
    """Trains at a lower CPU priority, so the dashboard stays quick on a machine it shares."""
    try:
        if os.nice(0) < JOB_NICENESS:
            os.nice(JOB_NICENESS - os.nice(0))
    except OSError:
        pass


def _beat(workspace: Workspace, job_id: str, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_SECONDS):
        try:
            workspace.heartbeat(job_id)
        except Exception:  # noqa: BLE001 - a missed beat is not worth killing the job for
            log.warning("heartbeat failed", exc_info=True)


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
