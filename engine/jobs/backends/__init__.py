"""Where job processes run: one interface, chosen by `APERTURE_BACKEND` (default `local`).

A backend starts a claimed job, tells whether it is still alive, stops it, reads its log
and says why it died. The queue (`engine.jobs.queue`) does everything else through the store.
"""

from __future__ import annotations

import os
from typing import Protocol

from engine.store import Job, Workspace

BACKEND_ENV = "APERTURE_BACKEND"


class Backend(Protocol):
    """The interface every backend implements."""

    default_max_jobs: int  # how many jobs run at once unless APERTURE_MAX_JOBS says (local 1; Ray: no limit)

    def check(self) -> None:
        """Raises OSError naming the problem if jobs cannot be started now (e.g. the Ray cluster is unreachable)."""

    def start(self, workspace: Workspace, job: Job) -> None:
        """Starts the process that runs `job` (already claimed: status running); raises OSError if it cannot."""

    def alive(self, job: Job) -> bool:
        """False once the job's process is gone (True while it may still be starting, or is out of sight)."""

    def placing(self, job: Job) -> bool:
        """True while the backend still looks for a place to run the job (no process yet, so no heartbeat)."""

    def stop(self, job: Job, *, force: bool) -> None:
        """Asks the job's process to end (SIGTERM), or ends it (`force`: SIGKILL)."""

    def logs(self, workspace: Workspace, job: Job, lines: int) -> str:
        """The last `lines` lines of the job's log."""

    def death(self, workspace: Workspace, job: Job) -> str:
        """Why a job whose process is gone never reported its end, e.g. "the job process crashed (SIGABRT)"."""

    def keep_warm(self, workspace: Workspace) -> None:
        """Prepares for the next job (the local backend keeps a standby process with TensorFlow loaded)."""

    def warm(self, workspace: Workspace) -> bool:
        """True if a prepared worker will claim the next queued job by itself."""


def get_backend() -> Backend:
    """The backend named by `APERTURE_BACKEND`.

    Raises:
        ValueError: an unknown name.
    """
    name = os.environ.get(BACKEND_ENV, "local") or "local"
    if name == "local":
        from engine.jobs.backends.local import LOCAL

        return LOCAL
    if name == "ray":
        from engine.jobs.backends.ray import RAY

        return RAY
    raise ValueError(f"{BACKEND_ENV}={name!r}: expected 'local' or 'ray'")


# Backends whose train jobs can spread one model over several worker processes (`train.workers`).
MULTI_WORKER_BACKENDS = ("ray",)


def check_workers(config) -> None:
    """Refuses a `RunConfig` with `train.workers` > 1 unless the configured backend can run it (Ray).

    Called when a run is submitted or resumed, so the error comes before anything is queued.

    Raises:
        ConfigError: naming `train.workers`, the value and the backend that cannot run it.
    """
    from engine.config import ConfigError

    workers = config.train.workers
    name = os.environ.get(BACKEND_ENV, "local") or "local"
    if workers > 1 and name not in MULTI_WORKER_BACKENDS:
        raise ConfigError("train.workers", workers,
                          f"training one model across {workers} workers needs the Ray backend "
                          f"({BACKEND_ENV}=ray with RAY_ADDRESS); the {name!r} backend trains in one process")
