"""Background jobs: a queue in the store, a registry of job kinds, and backends that run them.

Modules: `context` (what a running job sees), `kinds` (the registry), `queue` (submit,
dispatch, cancel, reap), `worker` (inside the job process), `backends` (where processes run),
`crash_report` (why a process died). The names below are the queue's public face.
"""

from engine.jobs.context import JobCancelled, JobContext
from engine.jobs.backends import check_workers
from engine.jobs.backends.local import STANDBY_ENV, STANDBY_FILE, standby_pid
from engine.jobs.kinds import JobKind
from engine.jobs.queue import (MAX_JOBS_ENV, can_resume, cancel, cancel_job, delete,
                               max_jobs, read_log_tail, refresh, resume, submit, submit_job, wait)
from engine.jobs.worker import run_job, run_standby

__all__ = ["JobCancelled", "JobContext", "JobKind", "MAX_JOBS_ENV", "STANDBY_ENV",
           "STANDBY_FILE", "can_resume", "cancel", "cancel_job", "check_workers", "delete", "max_jobs", "read_log_tail",
           "refresh",
           "resume", "run_job", "run_standby", "standby_pid", "submit", "submit_job", "wait"]
