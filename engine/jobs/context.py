"""What a running job's code sees: its workspace and run, progress reporting, and whether to stop.

Imports nothing of the engine, so every stage can import it without depending on the queue.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.runfolder import RunFolder
    from engine.store import Job, Workspace


REPORT_SECONDS = 0.3  # `report_often` writes to the store at most this often


class JobCancelled(Exception):
    """Raised inside a job when the user asked it to stop."""


class JobContext:
    """A running job's handle on the store.

    Args:
        workspace: the workspace the job belongs to.
        job: the job being run.
        folder: the run's folder (what the job reads and writes).
    """

    def __init__(self, workspace: Workspace, job: Job, folder: RunFolder):
        self.workspace = workspace
        self.job = job
        self.run_id = job.run_id
        self.folder = folder
        self._reported_at = 0.0
        self._report_lock = threading.Lock()
        self.terminated = threading.Event()  # set by SIGTERM
        self._checked_at = 0.0
        self._cancelled = False

    def should_stop(self, *, max_age: float = 0.5) -> bool:
        """True once a cancel was requested; reads the store at most every `max_age` seconds."""
        if self.terminated.is_set() or self._cancelled:
            return True
        now = time.monotonic()
        if now - self._checked_at >= max_age:
            self._checked_at = now
            self._cancelled = self.workspace.cancel_requested(self.job.id)
        return self._cancelled

    def raise_if_cancelled(self) -> None:
        """Raises `JobCancelled` if a cancel was requested (reads the store now)."""
        if self.should_stop(max_age=0):
            raise JobCancelled()

    def report(self, progress: float | None = None, message: str | None = None) -> None:
        """Writes the job's progress (0..1) and a status line, and marks it alive."""
        self.workspace.heartbeat(self.job.id, progress=progress, message=message)

    def report_often(self, progress: float, message: str, *, final: bool = False) -> None:
        """`report`, for callbacks that fire per image or per chunk (from any thread): written at most every
        `REPORT_SECONDS`, since each report is a write to the store; a `final` one always is."""
        now = time.monotonic()
        with self._report_lock:
            if not final and now - self._reported_at < REPORT_SECONDS:
                return
            self._reported_at = now
        self.report(progress, message)
