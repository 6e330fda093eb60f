"""`PredictionLog`: every prediction the model server answered, bounded per run, with the feedback label when it comes.

One row per image: when, which run and format, the request's latency and the server-side batch it
ran in, the top-1 class and its probability, the entropy of the probabilities, simple pixel
statistics, where it came from (`demo`, `explain`, `api`), and the feedback label. The input image
itself (a PNG at the model's resolution) is kept only for the newest `KEEP_IMAGES` rows of a run,
so the Monitor page can show the least confident recent inputs and Explain can open them. The SQL
is portable (SQLite and PostgreSQL); the table is `engine.store.schema.PREDICTION_LOG`.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Iterable

from engine.store.database import Connection

Workspace = Any  # engine.store.workspace.Workspace, which imports this module for its schema

KEEP_ROWS = 20_000  # per run; the oldest rows are dropped beyond it
KEEP_IMAGES = 500  # per run; older rows keep their figures but lose their image

_FIGURES = ("id", "run_id", "created_at", "format", "source", "latency_ms", "batch_size", "top1",
            "top1_probability", "entropy", "pixel_mean", "pixel_std", "feedback_label", "feedback_at")


@dataclasses.dataclass(frozen=True)
class LoggedPrediction:
    """One logged prediction (without its image; `PredictionLog.image` reads that)."""

    id: str
    run_id: str
    created_at: float
    format: str
    source: str
    latency_ms: float
    batch_size: int
    top1: int
    top1_probability: float
    entropy: float
    pixel_mean: float
    pixel_std: float
    feedback_label: int | None = None
    feedback_at: float | None = None
    image: bytes | None = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def correct(self) -> bool | None:
        """Whether the top-1 class matched the feedback label (None without feedback)."""
        return None if self.feedback_label is None else self.feedback_label == self.top1


class LogNotFound(KeyError):
    """No logged prediction has that id."""

    def __str__(self) -> str:
        return f"no logged prediction {self.args[0]!r}"


class PredictionLog:
    """The prediction log of a workspace (the table lives in the workspace's database).

    Args:
        workspace: whose database.
        hold_open: keep one idle connection open for this object's life (the model server's; see
            `Database.keep_warm`: it spares SQLite a WAL checkpoint and sync after every batch).
    """

    def __init__(self, workspace: Workspace, *, hold_open: bool = False):
        self.workspace = workspace
        self._keeper = workspace.database.keep_warm() if hold_open else None

    def add(self, rows: Iterable[LoggedPrediction]) -> None:
        """Records predictions (one transaction), then drops what is beyond the per-run bounds."""
        rows = list(rows)
        if not rows:
            return
        columns = (*_FIGURES, "image")
        marks = ", ".join("?" for _ in columns)
        with self.workspace._connect() as db:
            db.executemany(f"INSERT INTO prediction_log ({', '.join(columns)}) VALUES ({marks})",
                           [tuple(getattr(r, c) for c in columns) for r in rows])
            for run_id in {r.run_id for r in rows}:
                _trim(db, run_id)

    def recent(self, run_id: str, *, limit: int = KEEP_ROWS, since: float | None = None) -> list[LoggedPrediction]:
        """A run's logged predictions, oldest first (the newest `limit`; only after `since` when given)."""
        query = f"SELECT {', '.join(_FIGURES)} FROM prediction_log WHERE run_id = ?"
        args: list = [run_id]
        if since is not None:
            query += " AND created_at > ?"
            args.append(since)
        with self.workspace._connect() as db:
            rows = db.execute(query + " ORDER BY created_at DESC, id DESC LIMIT ?", (*args, int(limit))).fetchall()
        return [LoggedPrediction(**dict(r)) for r in reversed(rows)]

    def count(self, run_id: str) -> int:
        """How many predictions of the run are logged."""
        with self.workspace._connect() as db:
            return int(db.execute("SELECT COUNT(*) AS n FROM prediction_log WHERE run_id = ?",
                                  (run_id,)).fetchone()["n"])

    def get(self, log_id: str) -> LoggedPrediction:
        """One logged prediction, with its image if it still has one; LogNotFound otherwise."""
        with self.workspace._connect() as db:
            row = db.execute("SELECT * FROM prediction_log WHERE id = ?", (log_id,)).fetchone()
        if row is None:
            raise LogNotFound(log_id)
        return LoggedPrediction(**dict(row))

    def least_confident(self, run_id: str, limit: int = 12) -> list[LoggedPrediction]:
        """The least confident of the run's predictions that still have their image, with it."""
        with self.workspace._connect() as db:
            rows = db.execute("SELECT * FROM prediction_log WHERE run_id = ? AND image IS NOT NULL "
                              "ORDER BY top1_probability, created_at DESC LIMIT ?", (run_id, int(limit))).fetchall()
        return [LoggedPrediction(**dict(r)) for r in rows]

    def set_feedback(self, log_id: str, label: int) -> LoggedPrediction:
        """Records the true label of a logged prediction (a later call replaces it); LogNotFound if unknown."""
        with self.workspace._connect() as db:
            changed = db.execute("UPDATE prediction_log SET feedback_label = ?, feedback_at = ? WHERE id = ?",
                                 (int(label), time.time(), log_id)).rowcount
        if not changed:
            raise LogNotFound(log_id)
        return self.get(log_id)

    def forget(self, run_id: str) -> None:
        """Drops a run's log (the run is being deleted)."""
        with self.workspace._connect() as db:
            forget_run(db, run_id)


def forget_run(db: Connection, run_id: str) -> None:
    """Deletes a run's rows inside the caller's transaction (`Workspace.delete_run`)."""
    db.execute("DELETE FROM prediction_log WHERE run_id = ?", (run_id,))


def _trim(db: Connection, run_id: str) -> None:
    for keep, statement in ((KEEP_ROWS, "DELETE FROM prediction_log"),
                            (KEEP_IMAGES, "UPDATE prediction_log SET image = NULL")):
        cutoff = db.execute("SELECT created_at FROM prediction_log WHERE run_id = ? ORDER BY created_at DESC "
                            "LIMIT 1 OFFSET ?", (run_id, keep)).fetchone()
        if cutoff is not None:
            extra = " AND image IS NOT NULL" if statement.startswith("UPDATE") else ""
            db.execute(f"{statement} WHERE run_id = ? AND created_at <= ?{extra}", (run_id, cutoff["created_at"]))
