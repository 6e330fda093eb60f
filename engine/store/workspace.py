"""`Workspace`: the index of runs, jobs and per-epoch metrics (SQLite or PostgreSQL), plus a folder per run.

The run folder and these tables are the contract between the dashboard, the CLI and
the job processes; `engine.runfolder.RunFolder` owns what is inside a run folder. All SQL lives in
the store package and stays portable (`engine.store.database` owns what differs between SQLite and
PostgreSQL, `engine.store.schema` the tables); paths in records are relative to the run's folder
(`RunFolder.relative`), so a workspace every node of a cluster mounts reads the same anywhere.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import shutil
import socket
import time
from pathlib import Path
from typing import Any

from engine.config import RunConfig
from engine.store import prediction_log, schema
from engine.store.database import DATABASE_URL_ENV, Connection, Database
from engine.store.records import (CANCELLED, COMPLETED, FAILED, QUEUED, RUNNING, STATUSES, TRAIN_JOB, EpochMetrics,
                                  Job, Run, RunNotFound)

HOME_ENV = "APERTURE_HOME"
DB_FILE = "aperture.db"
RUNS_DIR = "runs"
UPLOADS_DIR = "uploads"
CACHE_DIR = "cache"  # extracted uploads and decoded-image caches, shared by the dashboard and every job
CONFIG_FILE = "config.json"  # in each run's folder, written with its row; `engine.runfolder` names the rest
# The jobs that make a run's model: a run's status is its latest one's (a compressed run's first job is compress).
MODEL_JOBS = (TRAIN_JOB, "compress")


# Kinds that take no slot of the job limit (`APERTURE_MAX_JOBS`): a sweep only waits on its trials (train jobs),
# so with a limit of 1 it would deadlock; a decode (`engine.data.decode_job`) or a weights download
# (`engine.weights_job`) is short work a user waits on, and must not queue behind an hour of training.
DECODE_JOB = "decode"
WEIGHTS_JOB = "weights"
SLOTLESS_JOBS = ("sweep", DECODE_JOB, WEIGHTS_JOB)

_RUN_INFO_COLUMNS = ("epochs_done", "num_classes", "params", "device", "fingerprint", "versions_json",
                     "best_val_accuracy", "test_accuracy", "train_seconds")


def default_root() -> Path:
    return Path(os.environ.get(HOME_ENV) or "workspace").resolve()


def new_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def _dataset_label(source: str) -> str:
    """A short dataset label for tables: a built-in name, or a folder/zip's base name."""
    return Path(source).name if ("/" in source or source.endswith(".zip")) else source


class Workspace:
    """The index (SQLite in the folder, or PostgreSQL by URL) plus run folders under one root directory.

    Args:
        root: the workspace folder; default `$APERTURE_HOME` or `./workspace`. Created if missing.
        database_url: `postgresql://user@host:port/name` for a PostgreSQL index; default
            `$APERTURE_DATABASE_URL`, and when that is unset too the SQLite file `aperture.db` in `root`.
            The schema is migrated on opening.
    """

    def __init__(self, root: str | os.PathLike | None = None, *, database_url: str | None = None):
        self.root = Path(root).resolve() if root else default_root()
        (self.root / RUNS_DIR).mkdir(parents=True, exist_ok=True)
        self.database = Database(self.root / DB_FILE, database_url or os.environ.get(DATABASE_URL_ENV) or None)
        self.db_path = self.database.path  # the SQLite file; None on PostgreSQL
        schema.migrate(self.database)

    # -- plumbing -----------------------------------------------------------------

    def _connect(self, *, immediate: bool = False) -> contextlib.AbstractContextManager[Connection]:
        """A short-lived connection; one transaction, committed on success."""
        return self.database.connect(immediate=immediate)

    def run_dir(self, run_id: str) -> Path:
        """Where a run's folder is; `engine.runfolder.RunFolder` knows what is in it."""
        return self.root / RUNS_DIR / run_id

    @property
    def cache_dir(self) -> Path:
        """Where decoded images and extracted uploads are cached (everything in it can be rebuilt)."""
        return self.root / CACHE_DIR

    # -- runs -----------------------------------------------------------------------

    def new_folder(self, prefix: str = "") -> str:
        """A fresh id (`prefix` + `new_id()`) whose folder this call created. Ids made in the same second differ
        only in 16 random bits, so two processes can draw the same one: `mkdir` (atomic, also on a shared
        filesystem) decides, and the loser draws again."""
        for _ in range(20):
            folder_id = prefix + new_id()
            try:
                self.run_dir(folder_id).mkdir(parents=True)
            except FileExistsError:
                continue
            return folder_id
        raise RuntimeError(f"could not make a new folder under {self.root}: every id drawn was taken")

    def create_run(self, config: RunConfig, *, parent_id: str | None = None, kind: str = TRAIN_JOB,
                   request_json: str | None = None) -> Run:
        """Writes a new run (row, folder, config.json) with its first job queued: train, or `kind`
        (one of `MODEL_JOBS`, e.g. compress, with its request as JSON)."""
        run_id = self.new_folder()
        (self.run_dir(run_id) / CONFIG_FILE).write_text(config.to_json())
        now = time.time()
        with self._connect() as db:
            db.execute(
                "INSERT INTO runs (id, name, created_at, dataset, model, config_json, parent_id, epochs_total)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, config.name, now, _dataset_label(config.data.source), config.model.name,
                 config.to_json(), parent_id, config.train.epochs))
            self._insert_job(db, run_id, kind, now, request_json)
        return self.get_run(run_id)

    def get_run(self, run_id: str) -> Run:
        with self._connect() as db:
            row = db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                raise RunNotFound(f"no run with id {run_id!r}")
            return self._run_from_row(db, row)

    def resolve_run_id(self, prefix: str) -> str:
        """The full id of the one run whose id starts with `prefix` (or ends with it)."""
        with self._connect() as db:
            ids = [r["id"] for r in db.execute("SELECT id FROM runs")]
        matches = [i for i in ids if i == prefix] or [i for i in ids if i.startswith(prefix) or i.endswith(prefix)]
        if not prefix or not matches:
            raise RunNotFound(f"no run with id {prefix!r}")
        if len(matches) > 1:
            raise RunNotFound(f"{prefix!r} matches {len(matches)} runs: {', '.join(sorted(matches)[:5])}")
        return matches[0]

    def list_runs(self) -> list[Run]:
        """All runs, newest first."""
        with self._connect() as db:
            rows = db.execute("SELECT * FROM runs ORDER BY created_at DESC, id DESC").fetchall()
            latest = {}
            for job in db.execute("SELECT * FROM jobs WHERE kind IN (?, ?) ORDER BY created_at, id", MODEL_JOBS):
                latest[job["run_id"]] = job
            return [self._make_run(row, latest.get(row["id"])) for row in rows]

    def update_run(self, run_id: str, **values: Any) -> None:
        """Records facts about a run, e.g. `update_run(id, device="CPU", params=61706)`."""
        bad = set(values) - set(_RUN_INFO_COLUMNS)
        if bad:
            raise ValueError(f"unknown run columns: {sorted(bad)}")
        if not values:
            return
        columns = ", ".join(f"{name} = ?" for name in values)
        with self._connect() as db:
            db.execute(f"UPDATE runs SET {columns} WHERE id = ?", (*values.values(), run_id))

    def delete_run(self, run_id: str) -> None:
        """Removes a run's rows and folder. Cancel its active job first."""
        with self._connect() as db:
            db.execute("DELETE FROM metrics WHERE run_id = ?", (run_id,))
            db.execute("DELETE FROM jobs WHERE run_id = ?", (run_id,))
            db.execute("DELETE FROM runs WHERE id = ?", (run_id,))
            prediction_log.forget_run(db, run_id)
        shutil.rmtree(self.run_dir(run_id), ignore_errors=True)

    def _run_from_row(self, db: Connection, row) -> Run:
        job = db.execute("SELECT * FROM jobs WHERE run_id = ? AND kind IN (?, ?) ORDER BY created_at DESC, id DESC",
                         (row["id"], *MODEL_JOBS)).fetchone()
        return self._make_run(row, job)

    @staticmethod
    def _make_run(row, job_row) -> Run:
        return Run(**dict(row), job=Job(**dict(job_row)) if job_row else None)

    # -- metrics --------------------------------------------------------------------

    def add_epoch(self, run_id: str, metrics: EpochMetrics) -> None:
        values = dataclasses.asdict(metrics)
        names = list(values)
        updates = ", ".join(f"{n} = excluded.{n}" for n in names if n != "epoch")
        with self._connect() as db:
            db.execute(
                f"INSERT INTO metrics (run_id, {', '.join(names)}) VALUES (?, {', '.join('?' * len(names))})"
                f" ON CONFLICT (run_id, epoch) DO UPDATE SET {updates}",
                (run_id, *values.values()))
            db.execute("UPDATE runs SET epochs_done = ? WHERE id = ?", (metrics.epoch, run_id))

    def truncate_epochs(self, run_id: str, epochs: int) -> None:
        """Drops metrics after epoch `epochs` (a resumed run continues from its last checkpoint)."""
        with self._connect() as db:
            db.execute("DELETE FROM metrics WHERE run_id = ? AND epoch > ?", (run_id, epochs))
            db.execute("UPDATE runs SET epochs_done = ? WHERE id = ?", (epochs, run_id))

    def epochs(self, run_id: str) -> list[EpochMetrics]:
        with self._connect() as db:
            rows = db.execute("SELECT * FROM metrics WHERE run_id = ? ORDER BY epoch", (run_id,)).fetchall()
        return [EpochMetrics(**{k: row[k] for k in row.keys() if k != "run_id"}) for row in rows]

    # -- jobs -----------------------------------------------------------------------

    @staticmethod
    def _insert_job(db: Connection, run_id: str, kind: str, now: float, request_json: str | None = None) -> str:
        job_id = new_id()
        db.execute("INSERT INTO jobs (id, run_id, kind, status, created_at, request_json) VALUES (?, ?, ?, ?, ?, ?)",
                   (job_id, run_id, kind, QUEUED, now, request_json))
        return job_id

    def create_job(self, run_id: str, kind: str, *, request_json: str | None = None) -> Job:
        """Queues another job (e.g. `export`) for an existing run, with its request as JSON."""
        self.get_run(run_id)
        with self._connect() as db:
            job_id = self._insert_job(db, run_id, kind, time.time(), request_json)
        return self.get_job(job_id)

    def create_task_job(self, task_id: str, kind: str, *, request_json: str | None = None) -> Job:
        """Queues a job for work that is not a run (a decode, a weights download): its `run_id` is `task_id`,
        with no row in `runs`, and the folder `run_dir(task_id)` (made here) holds its log."""
        self.run_dir(task_id).mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            job_id = self._insert_job(db, task_id, kind, time.time(), request_json)
        return self.get_job(job_id)

    def latest_job(self, run_id: str, kind: str) -> Job | None:
        """The newest job of `kind` for a run, or None."""
        with self._connect() as db:
            row = db.execute("SELECT * FROM jobs WHERE run_id = ? AND kind = ? ORDER BY created_at DESC, id DESC",
                             (run_id, kind)).fetchone()
        return Job(**dict(row)) if row else None

    def get_job(self, job_id: str) -> Job:
        with self._connect() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise LookupError(f"no job with id {job_id!r}")
        return Job(**dict(row))

    def jobs(self, *, statuses: tuple[str, ...] = STATUSES) -> list[Job]:
        """Jobs with one of `statuses`, oldest first (queue order)."""
        marks = ", ".join("?" * len(statuses))
        with self._connect() as db:
            rows = db.execute(f"SELECT * FROM jobs WHERE status IN ({marks}) ORDER BY created_at, id",
                              statuses).fetchall()
        return [Job(**dict(r)) for r in rows]

    def claim_next_job(self, limit: int) -> Job | None:
        """Atomically moves the oldest claimable queued job to running: a job of a `SLOTLESS_JOBS` kind always,
        any other while fewer than `limit` of those run.

        A slotless job queued behind a job that waits for a slot is claimed all the same (the queue is not
        strictly first in, first out). Safe with many claimers in many processes: on SQLite `BEGIN IMMEDIATE`
        lets one in at a time; on PostgreSQL an advisory lock does (so the limit holds), and the queued row is
        taken `FOR UPDATE SKIP LOCKED`, so a row another transaction is finishing or deleting is passed over
        instead of waited on.
        """
        slotless = ", ".join("?" * len(SLOTLESS_JOBS))
        with self._connect(immediate=True) as db:
            self.database.lock(db, "aperture.store.claim")
            now = time.time()
            # One statement, so the lock is held for one round trip.
            rows = db.execute(
                "UPDATE jobs SET status = ?, started_at = ?, heartbeat_at = ?, host = ?, message = ?"
                " WHERE id = (SELECT id FROM jobs WHERE status = ?"
                f" AND (kind IN ({slotless}) OR (SELECT COUNT(*) FROM jobs AS slot WHERE slot.status = ?"
                f" AND slot.kind NOT IN ({slotless})) < ?)"
                f" ORDER BY created_at, id LIMIT 1{self.database.skip_locked}) RETURNING *",
                (RUNNING, now, now, socket.gethostname(), "starting", QUEUED, *SLOTLESS_JOBS, RUNNING,
                 *SLOTLESS_JOBS, limit)).fetchall()
            return Job(**dict(rows[0])) if rows else None

    def set_job_process(self, job_id: str, pid: int, *, host: str | None = None) -> None:
        """Records the job's process: its pid and host (default this host's name), and marks it alive."""
        with self._connect() as db:
            db.execute("UPDATE jobs SET pid = ?, host = ?, heartbeat_at = ? WHERE id = ?",
                       (pid, host or socket.gethostname(), time.time(), job_id))

    def heartbeat(self, job_id: str, *, progress: float | None = None, message: str | None = None) -> None:
        """Marks the job alive, optionally with its progress (0..1) and a status line."""
        sets, values = ["heartbeat_at = ?"], [time.time()]
        if progress is not None:
            sets.append("progress = ?")
            values.append(min(max(float(progress), 0.0), 1.0))
        if message is not None:
            sets.append("message = ?")
            values.append(message)
        with self._connect() as db:
            db.execute(f"UPDATE jobs SET {', '.join(sets)} WHERE id = ?", (*values, job_id))

    def finish_job(self, job_id: str, status: str, *, error: str | None = None,
                   traceback: str | None = None, only_if_active: bool = True, only_if_queued: bool = False) -> bool:
        """Ends a job with a final status; returns False if it had already ended (or, with `only_if_queued`,
        had already started)."""
        if status not in (COMPLETED, FAILED, CANCELLED):
            raise ValueError(f"not a final status: {status!r}")
        guard = (" AND status = 'queued'" if only_if_queued
                 else " AND status IN ('queued', 'running')" if only_if_active else "")
        with self._connect() as db:
            cursor = db.execute(
                f"UPDATE jobs SET status = ?, finished_at = ?, error = ?, traceback = ? WHERE id = ?{guard}",
                (status, time.time(), error, traceback, job_id))
            return cursor.rowcount > 0

    def request_cancel(self, job_id: str) -> None:
        with self._connect() as db:
            db.execute("UPDATE jobs SET cancel_requested_at = ? WHERE id = ? AND cancel_requested_at IS NULL",
                       (time.time(), job_id))

    def cancel_requested(self, job_id: str) -> bool:
        with self._connect() as db:
            row = db.execute("SELECT cancel_requested_at FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return row is None or row["cancel_requested_at"] is not None


def write_json_atomic(path: Path, value: Any) -> None:
    """Writes JSON through a temporary file and a rename, so readers never see half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2))
    os.replace(tmp, path)
