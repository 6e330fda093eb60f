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

    def start(self, workspace: Workspace, job: Job) -> None:
        """Starts the process that runs `job` (already claimed: status running); raises OSError if it cannot."""

    def alive(self, job: Job) -> bool:
        """False once the job's process is gone (True while it may still be starting, or is out of sight)."""

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
    raise ValueError(f"{BACKEND_ENV}={name!r}: expected 'local'")
