"""The store: the index of runs, jobs and per-epoch metrics that every process shares.

`records` holds what the index returns (plain frozen dataclasses and the job statuses);
`workspace` holds `Workspace`, the index plus one folder per run, and its SQL; `database` connects to
the index (SQLite in the workspace, or PostgreSQL with `APERTURE_DATABASE_URL`); `schema` holds the
tables and their migrations.
Import from here: `from engine import store`, `store.Workspace()`.
"""

from engine.store.database import DATABASE_URL_ENV, StoreUnavailable
from engine.store.prediction_log import KEEP_IMAGES, KEEP_ROWS, LoggedPrediction, LogNotFound, PredictionLog
from engine.store.records import (ACTIVE, CANCELLED, COMPLETED, FAILED, QUEUED, RUNNING, STATUSES, TRAIN_JOB,
                                  EpochMetrics, Job, Run, RunNotFound)
from engine.store.workspace import (CACHE_DIR, CONFIG_FILE, HOME_ENV, UPLOADS_DIR, Workspace,
                                    default_root, new_id, write_json_atomic)

__all__ = ["ACTIVE", "CACHE_DIR", "DATABASE_URL_ENV", "StoreUnavailable", "KEEP_IMAGES", "KEEP_ROWS", "LogNotFound", "LoggedPrediction", "PredictionLog", "CANCELLED", "COMPLETED", "CONFIG_FILE", "EpochMetrics", "FAILED",
           "HOME_ENV", "Job", "QUEUED", "RUNNING", "Run", "RunNotFound", "STATUSES", "TRAIN_JOB",
           "UPLOADS_DIR", "Workspace", "default_root", "new_id", "write_json_atomic"]
