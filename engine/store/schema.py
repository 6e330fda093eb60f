"""The store's tables and their migrations, numbered in `schema_version`, run when a workspace opens.

Every process that opens a workspace calls `migrate`: one read when the database is up to date; otherwise
the pending steps run in one transaction that only one process at a time gets into (SQLite's write lock,
PostgreSQL's advisory lock), so several processes starting at once migrate once. A workspace made before
`schema_version` existed is version 0; its steps find what is already there (`IF NOT EXISTS`, the columns).
The DDL is portable: SQLite and PostgreSQL accept all of it.
"""

from __future__ import annotations

import time
from typing import Callable

from engine.store.database import Connection, Database
from engine.store.records import FAILED, QUEUED, RUNNING, TRAIN_JOB

VERSION_TABLE = "schema_version"
_MIGRATION_LOCK = "aperture.store.migrate"

RUNS_JOBS_METRICS = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    dataset TEXT NOT NULL,
    model TEXT NOT NULL,
    config_json TEXT NOT NULL,
    parent_id TEXT,
    epochs_total INTEGER NOT NULL,
    epochs_done INTEGER NOT NULL DEFAULT 0,
    num_classes INTEGER,
    params INTEGER,
    device TEXT,
    fingerprint TEXT,
    versions_json TEXT,
    best_val_accuracy DOUBLE PRECISION,
    test_accuracy DOUBLE PRECISION,
    train_seconds DOUBLE PRECISION
);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    started_at DOUBLE PRECISION,
    finished_at DOUBLE PRECISION,
    heartbeat_at DOUBLE PRECISION,
    host TEXT,
    pid INTEGER,
    cancel_requested_at DOUBLE PRECISION,
    progress DOUBLE PRECISION NOT NULL DEFAULT 0,
    message TEXT NOT NULL DEFAULT '',
    error TEXT,
    traceback TEXT,
    request_json TEXT
);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, created_at);
CREATE INDEX IF NOT EXISTS jobs_by_run ON jobs (run_id, created_at);
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    loss DOUBLE PRECISION,
    accuracy DOUBLE PRECISION,
    val_loss DOUBLE PRECISION,
    val_accuracy DOUBLE PRECISION,
    learning_rate DOUBLE PRECISION,
    seconds DOUBLE PRECISION,
    images_per_second DOUBLE PRECISION,
    PRIMARY KEY (run_id, epoch)
);
"""

PREDICTION_LOG = """
CREATE TABLE IF NOT EXISTS prediction_log (
    id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    format TEXT NOT NULL,
    source TEXT NOT NULL,
    latency_ms DOUBLE PRECISION NOT NULL,
    batch_size INTEGER NOT NULL,
    top1 INTEGER NOT NULL,
    top1_probability DOUBLE PRECISION NOT NULL,
    entropy DOUBLE PRECISION NOT NULL,
    pixel_mean DOUBLE PRECISION NOT NULL,
    pixel_std DOUBLE PRECISION NOT NULL,
    feedback_label INTEGER,
    feedback_at DOUBLE PRECISION,
    image BYTEA
);
CREATE INDEX IF NOT EXISTS prediction_log_by_run ON prediction_log (run_id, created_at);
"""

SWEEPS = """
CREATE TABLE IF NOT EXISTS sweeps (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    spec_json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sweep_trials (
    sweep_id TEXT NOT NULL,
    number INTEGER NOT NULL,
    run_id TEXT,
    state TEXT NOT NULL,
    params_json TEXT NOT NULL,
    values_json TEXT NOT NULL DEFAULT '{}',
    pareto INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    updated_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (sweep_id, number)
);
CREATE INDEX IF NOT EXISTS sweep_trials_by_run ON sweep_trials (run_id);
"""


def _create(*scripts: str) -> Callable[[Database, Connection], None]:
    def step(database: Database, db: Connection) -> None:
        for script in scripts:
            for statement in filter(str.strip, script.split(";")):
                db.execute(statement)
    return step


def _add_request_column(database: Database, db: Connection) -> None:
    """Job requests moved from files into the index; the non-train jobs queued before that are failed with a
    reason (their options were in a file the jobs no longer read: better said than run with defaults)."""
    if "request_json" in database.columns(db, "jobs"):
        return  # made with the column (migration 1 of a new workspace)
    db.execute("ALTER TABLE jobs ADD COLUMN request_json TEXT")
    db.execute("UPDATE jobs SET status = ?, finished_at = ?, error = ? WHERE kind != ? AND status IN (?, ?)",
               (FAILED, time.time(), "queued before an upgrade of Aperture: submit it again", TRAIN_JOB,
                QUEUED, RUNNING))


# (version, what it does, the step); append only: a released step never changes.
MIGRATIONS: tuple[tuple[int, str, Callable[[Database, Connection], None]], ...] = (
    (1, "runs, jobs, metrics and the prediction log", _create(RUNS_JOBS_METRICS, PREDICTION_LOG)),
    (2, "jobs.request_json (job requests in the index)", _add_request_column),
    (3, "sweeps and sweep_trials", _create(SWEEPS)),
)
LATEST = MIGRATIONS[-1][0]


def current_version(database: Database, db: Connection) -> int:
    """The highest migration applied to the database (0 for one made before `schema_version`)."""
    if not database.has_table(db, VERSION_TABLE):
        return 0
    return int(db.execute(f"SELECT COALESCE(MAX(version), 0) AS v FROM {VERSION_TABLE}").fetchone()["v"])


def migrate(database: Database) -> int:
    """Brings the database up to `LATEST` (once, however many processes start at once); returns the version.

    Raises:
        RuntimeError: the database was migrated by a newer Aperture than this one.
    """
    with database.connect() as db:
        version = current_version(database, db)
    if version < LATEST:
        with database.connect(immediate=True) as db:
            database.lock(db, _MIGRATION_LOCK)
            version = current_version(database, db)  # another process may have migrated while we waited
            db.execute(f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} (version INTEGER PRIMARY KEY, "
                       "description TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)")
            for number, description, step in MIGRATIONS:
                if number > version:
                    step(database, db)
                    db.execute(f"INSERT INTO {VERSION_TABLE} (version, description, applied_at) VALUES (?, ?, ?)",
                               (number, description, time.time()))
            version = LATEST
    if version > LATEST:
        raise RuntimeError(f"the store at {database.label} has schema version {version}, newer than this "
                           f"Aperture's {LATEST}: upgrade Aperture")
    return version
