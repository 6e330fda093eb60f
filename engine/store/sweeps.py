"""The index of sweeps: each sweep's spec and, per trial, its run (the run -> sweep tag) and outcome.

Optuna keeps its own study tables in the same database (`engine.sweeps.search`); these two
tables (`engine.store.schema.SWEEPS`) are what the CLI, the pages and the Runs tag read without importing Optuna. A sweep's
job is an ordinary row in `jobs` whose `run_id` is the sweep's id (its log lives in the folder
`runs/<sweep id>/`, which has no row in `runs`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from engine.store.records import ACTIVE, Job, RunNotFound
from engine.store.workspace import Workspace

SWEEP_JOB = "sweep"
ID_PREFIX = "sweep-"
TRIAL_STATES = ("running", "completed", "pruned", "failed", "cancelled")
class SweepNotFound(RunNotFound):
    """No sweep matches the given id or prefix."""


@dataclass(frozen=True)
class SweepTrial:
    """One trial of a sweep: its number, its run (None if it never got one), state, params and objective values."""

    sweep_id: str
    number: int
    run_id: str | None
    state: str
    params: dict[str, Any]
    values: dict[str, float]
    pareto: bool
    error: str | None
    updated_at: float

    @property
    def finished(self) -> bool:
        return self.state != "running"


@dataclass(frozen=True)
class Sweep:
    """A sweep as the index knows it, with its latest sweep job."""

    id: str
    name: str
    created_at: float
    spec_json: str
    job: Job | None

    @property
    def spec(self) -> dict[str, Any]:
        return json.loads(self.spec_json)

    @property
    def status(self) -> str:
        return self.job.status if self.job else "queued"

    @property
    def label(self) -> str:
        return self.name or self.id


class SweepStore:
    """The sweeps tables of one workspace (made by its schema's migrations).

    Args:
        workspace: the workspace whose database holds the tables.
    """

    def __init__(self, workspace: Workspace):
        self.workspace = workspace

    def create(self, name: str, spec: dict[str, Any]) -> Sweep:
        """Records a new sweep with a queued sweep job (its folder holds the job's log)."""
        sweep_id = self.workspace.new_folder(ID_PREFIX)
        now = time.time()
        spec_json = json.dumps(spec)
        with self.workspace._connect() as db:
            db.execute("INSERT INTO sweeps (id, name, created_at, spec_json) VALUES (?, ?, ?, ?)",
                       (sweep_id, name, now, spec_json))
            self.workspace._insert_job(db, sweep_id, SWEEP_JOB, now, spec_json)
        return self.get(sweep_id)

    def queue_job(self, sweep_id: str) -> Job:
        """Queues another job for a sweep (to resume it); raises ValueError while one is active."""
        sweep = self.get(sweep_id)
        if sweep.job is not None and sweep.job.active:
            raise ValueError(f"sweep {sweep_id} is already {sweep.job.status} (job {sweep.job.id})")
        self.workspace.run_dir(sweep_id).mkdir(parents=True, exist_ok=True)
        with self.workspace._connect() as db:
            job_id = self.workspace._insert_job(db, sweep_id, SWEEP_JOB, time.time(), sweep.spec_json)
        return self.workspace.get_job(job_id)

    def get(self, sweep_id: str) -> Sweep:
        with self.workspace._connect() as db:
            row = db.execute("SELECT * FROM sweeps WHERE id = ?", (sweep_id,)).fetchone()
        if row is None:
            raise SweepNotFound(f"no sweep with id {sweep_id!r}")
        return Sweep(**dict(row), job=self.workspace.latest_job(sweep_id, SWEEP_JOB))

    def list(self) -> list[Sweep]:
        """All sweeps, newest first."""
        with self.workspace._connect() as db:
            rows = db.execute("SELECT * FROM sweeps ORDER BY created_at DESC, id DESC").fetchall()
            jobs = {}
            for job in db.execute("SELECT * FROM jobs WHERE kind = ? ORDER BY created_at, id", (SWEEP_JOB,)):
                jobs[job["run_id"]] = Job(**dict(job))
        return [Sweep(**dict(row), job=jobs.get(row["id"])) for row in rows]

    def resolve(self, prefix: str) -> str:
        """The full id of the one sweep whose id is `prefix`, or starts or ends with it."""
        ids = [s.id for s in self.list()]
        matches = [i for i in ids if i == prefix] or [i for i in ids if prefix and (
            i.startswith(prefix) or i.endswith(prefix) or i.startswith(ID_PREFIX + prefix))]
        if not prefix or not matches:
            raise SweepNotFound(f"no sweep with id {prefix!r}")
        if len(matches) > 1:
            raise SweepNotFound(f"{prefix!r} matches {len(matches)} sweeps: {', '.join(sorted(matches)[:5])}")
        return matches[0]

    def active_jobs(self) -> list[Job]:
        return [s.job for s in self.list() if s.job is not None and s.job.status in ACTIVE]

    # -- trials -------------------------------------------------------------------------

    def record_trial(self, sweep_id: str, number: int, *, run_id: str | None, state: str,
                     params: dict[str, Any], values: dict[str, float] | None = None, error: str | None = None) -> None:
        """Writes (or updates) one trial's row."""
        if state not in TRIAL_STATES:
            raise ValueError(f"state={state!r}: expected one of {', '.join(TRIAL_STATES)}")
        with self.workspace._connect() as db:
            db.execute(
                "INSERT INTO sweep_trials (sweep_id, number, run_id, state, params_json, values_json, error, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (sweep_id, number) DO UPDATE SET"
                " run_id = excluded.run_id, state = excluded.state, params_json = excluded.params_json,"
                " values_json = excluded.values_json, error = excluded.error, updated_at = excluded.updated_at",
                (sweep_id, number, run_id, state, json.dumps(params), json.dumps(values or {}), error, time.time()))

    def set_pareto(self, sweep_id: str, numbers: set[int]) -> None:
        """Marks exactly the trials `numbers` as the sweep's non-dominated ones."""
        with self.workspace._connect() as db:
            db.execute("UPDATE sweep_trials SET pareto = 0 WHERE sweep_id = ?", (sweep_id,))
            for number in sorted(numbers):
                db.execute("UPDATE sweep_trials SET pareto = 1 WHERE sweep_id = ? AND number = ?", (sweep_id, number))

    def trials(self, sweep_id: str) -> list[SweepTrial]:
        """A sweep's trials in order."""
        with self.workspace._connect() as db:
            rows = db.execute("SELECT * FROM sweep_trials WHERE sweep_id = ? ORDER BY number", (sweep_id,)).fetchall()
        return [_trial(row) for row in rows]

    def trial_of_run(self, run_id: str) -> SweepTrial | None:
        """The sweep trial a run was (the run -> sweep tag), or None."""
        with self.workspace._connect() as db:
            row = db.execute("SELECT * FROM sweep_trials WHERE run_id = ?", (run_id,)).fetchone()
        return _trial(row) if row else None


def _trial(row) -> SweepTrial:
    values = dict(row)
    return SweepTrial(sweep_id=values["sweep_id"], number=values["number"], run_id=values["run_id"],
                      state=values["state"], params=json.loads(values["params_json"]),
                      values=json.loads(values["values_json"]), pareto=bool(values["pareto"]),
                      error=values["error"], updated_at=values["updated_at"])
