"""Running a sweep: Optuna asks for trials, each trial is an ordinary train run, its outcome is told back.

Optuna does the sampling (TPE for one objective, NSGA-II for several), the pruning (median or
successive halving, fed each trial's per-epoch validation accuracy from the store) and the study's
storage: its RDB tables sit in the workspace's own database (the SQLite file, or PostgreSQL), so a sweep whose process was killed
is resumed by a new sweep job with nothing lost or counted twice. The budget counts the trials that
have a row in `sweep_trials` (written right after the trial's run is submitted); a trial Optuna
handed out whose run never got a row is found by its run's name on resume, or failed and not counted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import optuna

from engine import jobs
from engine import store
from engine.config import ConfigError
from engine.export import EXPORT_JOB, ExportError, ExportRequest, read_report, request_export
from engine.store.sweeps import SweepStore
from engine.sweeps.spec import SweepSpec

log = logging.getLogger(__name__)
POLL_SECONDS = 1.0
LATENCY_RUNS = 30  # timed single-image INT8 predictions per trial
_STATE = optuna.trial.TrialState


def storage(workspace: store.Workspace) -> optuna.storages.RDBStorage:
    """Optuna's storage in the workspace's database (its tables beside the store's; SQLite's WAL is kept)."""
    database = workspace.database
    return optuna.storages.RDBStorage(database.sqlalchemy_url,
                                      engine_kwargs={"connect_args": database.sqlalchemy_connect_args})


def open_study(workspace: store.Workspace, sweep_id: str, spec: SweepSpec) -> optuna.Study:
    """Creates the sweep's study, or loads it to resume; the sampler's seed moves on with the trials done."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rdb = storage(workspace)
    try:
        done = len(optuna.load_study(study_name=sweep_id, storage=rdb).trials)
    except KeyError:
        done = 0
    seed = spec.seed + done
    if spec.sampler_name == "tpe":
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(3, min(10, spec.trials // 3)))
    elif spec.sampler_name == "nsga2":
        sampler = optuna.samplers.NSGAIISampler(seed=seed, population_size=max(2, min(50, spec.trials // 2)))
    else:
        sampler = optuna.samplers.RandomSampler(seed=seed)
    if not spec.prunes:
        pruner = optuna.pruners.NopPruner()
    elif spec.pruner == "median":
        pruner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    else:
        pruner = optuna.pruners.SuccessiveHalvingPruner()
    return optuna.create_study(study_name=sweep_id, storage=rdb, sampler=sampler, pruner=pruner,
                               directions=list(spec.objectives.values()), load_if_exists=True)


def suggest(trial: optuna.Trial, spec: SweepSpec) -> dict:
    """The trial's values for every searched setting."""
    params = {}
    for key, p in spec.space.items():
        if p.choices is not None:
            params[key] = trial.suggest_categorical(key, list(p.choices))
        elif p.kind == "int":
            params[key] = trial.suggest_int(key, p.low, p.high, step=p.step or 1, log=p.log)
        else:
            params[key] = trial.suggest_float(key, p.low, p.high, step=p.step, log=p.log)
    return params


def trial_name(sweep_id: str, number: int) -> str:
    """The name of a trial's run: how the Runs table shows it, and how a resumed sweep finds its run."""
    return f"{sweep_id} · trial {number}"


@dataclass
class _Flight:
    """A trial whose run (and maybe its INT8 export) is still going."""

    trial: optuna.Trial
    run_id: str
    params: dict
    pruned: bool = False
    reported: set[int] = field(default_factory=set)  # epochs already told to the pruner


class SweepRunner:
    """Keeps up to `parallel` trials going until the budget is used; see the module docstring.

    Args:
        workspace: the workspace of the sweep.
        sweep_id: the sweep (its spec in the store).
        spec: the validated sweep.
        report: `report(progress 0..1, message)`.
        should_stop: True once the sweep was asked to stop.
        poll_seconds: how often runs are looked at.
    """

    def __init__(self, workspace: store.Workspace, sweep_id: str, spec: SweepSpec, *,
                 report: Callable[[float, str], None], should_stop: Callable[[], bool],
                 poll_seconds: float = POLL_SECONDS):
        self.workspace, self.sweep_id, self.spec = workspace, sweep_id, spec
        self.sweeps = SweepStore(workspace)
        self.report, self.should_stop, self.poll_seconds = report, should_stop, poll_seconds
        self.study = open_study(workspace, sweep_id, spec)
        self.flights: dict[int, _Flight] = {}

    def run(self) -> bool:
        """Runs the sweep to the end of its budget; False if it was stopped (its trials are cancelled)."""
        self._adopt()
        while True:
            if self.should_stop():
                self._cancel_all()
                return False
            while len(self.flights) < self.spec.parallel and len(self.sweeps.trials(self.sweep_id)) < self.spec.trials:
                self._start()
            for number in list(self.flights):
                self._advance(self.flights[number])
            rows = self.sweeps.trials(self.sweep_id)
            done = sum(t.finished for t in rows)
            self.report(done / self.spec.trials, f"{done}/{self.spec.trials} trials done, {len(self.flights)} running")
            if not self.flights and len(rows) >= self.spec.trials:
                self._mark_pareto()
                return True
            time.sleep(self.poll_seconds)
            jobs.refresh(self.workspace)  # reaps trial processes that died, starts queued ones

    # -- trials -----------------------------------------------------------------------

    def _adopt(self) -> None:
        """Takes over the trials a killed sweep process left running (their runs kept going)."""
        rows = {t.number: t for t in self.sweeps.trials(self.sweep_id)}
        names = {r.name: r.id for r in self.workspace.list_runs()}
        for frozen in self.study.get_trials(deepcopy=False, states=(_STATE.RUNNING,)):
            trial = optuna.Trial(self.study, frozen._trial_id)
            row = rows.get(frozen.number)
            run_id = row.run_id if row else names.get(trial_name(self.sweep_id, frozen.number))
            if run_id is None:  # handed out, but the process died before the trial's run was submitted
                self.study.tell(trial, state=_STATE.FAIL)
                continue
            if row is None:
                self.sweeps.record_trial(self.sweep_id, frozen.number, run_id=run_id, state="running",
                                         params=frozen.params)
            log.info("resuming trial %d (run %s)", frozen.number, run_id)
            self.flights[frozen.number] = _Flight(trial, run_id, frozen.params,
                                                  pruned=bool(frozen.user_attrs.get("pruned")),
                                                  reported=set(frozen.intermediate_values))

    def _start(self) -> None:
        trial = self.study.ask()
        params = suggest(trial, self.spec)
        try:
            config = self.spec.config_for(params, name=trial_name(self.sweep_id, trial.number))
        except ConfigError as error:  # a combination the config refuses (e.g. a transfer base on tiny images)
            self._finish(trial, None, params, "failed", error=str(error))
            return
        run = jobs.submit(config, self.workspace)
        self.sweeps.record_trial(self.sweep_id, trial.number, run_id=run.id, state="running", params=params)
        trial.set_user_attr("run_id", run.id)
        log.info("trial %d: run %s with %s", trial.number, run.id, params)
        self.flights[trial.number] = _Flight(trial, run.id, params)

    def _advance(self, flight: _Flight) -> None:
        try:
            run = self.workspace.get_run(flight.run_id)
        except store.RunNotFound:  # deleted on Runs while the sweep followed it
            self._finish(flight.trial, flight, flight.params, "failed", error=f"run {flight.run_id} was deleted")
            return
        if self.spec.prunes and not flight.pruned:
            self._report_epochs(flight, run)
        if run.status in store.ACTIVE:
            return
        if flight.pruned:
            self._finish(flight.trial, flight, flight.params, "pruned")
        elif run.status != store.COMPLETED:
            error = run.job.error if run.job else None
            self._finish(flight.trial, flight, flight.params, "cancelled" if run.status == store.CANCELLED else "failed",
                         error=error or f"the run {run.status}")
        elif not self.spec.exports:
            self._complete(flight, run, {})
        else:
            self._advance_export(flight, run)

    def _report_epochs(self, flight: _Flight, run: store.Run) -> None:
        for epoch in self.workspace.epochs(run.id):
            if epoch.val_accuracy is not None and epoch.epoch not in flight.reported:
                flight.trial.report(epoch.val_accuracy, epoch.epoch)
                flight.reported.add(epoch.epoch)
        if run.status in store.ACTIVE and flight.trial.should_prune():
            log.info("trial %d pruned (run %s)", flight.trial.number, run.id)
            flight.trial.set_user_attr("pruned", True)
            flight.pruned = True
            jobs.cancel(run.id, self.workspace)

    def _advance_export(self, flight: _Flight, run: store.Run) -> None:
        """Exports the trial's INT8 file through the export job, then reads its size and latency from the report."""
        job = self.workspace.latest_job(run.id, EXPORT_JOB)
        if job is not None and job.active:
            return
        report = read_report(self.workspace, run.id)
        artifact = report.artifact("int8") if report else None
        if artifact is None and job is None:
            try:
                request_export(self.workspace, run.id, ExportRequest(formats=("int8",), latency_runs=LATENCY_RUNS))
            except ExportError as error:
                self._finish(flight.trial, flight, flight.params, "failed", error=str(error))
            return
        if artifact is None or artifact.error or artifact.latency_ms_median is None:
            reason = (artifact.error if artifact else None) or (job.error if job else None) or "no INT8 artifact"
            self._finish(flight.trial, flight, flight.params, "failed", error=f"INT8 export: {reason}")
            return
        self._complete(flight, run, {"int8_size_kb": artifact.size_bytes / 1024,
                                     "int8_latency_ms": artifact.latency_ms_median})

    def _complete(self, flight: _Flight, run: store.Run, measured: dict) -> None:
        best_val = run.best_val_accuracy
        if best_val is None:
            best_val = max((e.val_accuracy for e in self.workspace.epochs(run.id) if e.val_accuracy is not None),
                           default=None)
        known = {"val_accuracy": best_val, "test_accuracy": run.test_accuracy,
                 "params": None if run.params is None else float(run.params), **measured}
        values = {name: known.get(name) for name in self.spec.objectives}
        missing = [name for name, value in values.items() if value is None]
        if missing:
            self._finish(flight.trial, flight, flight.params, "failed", error=f"run {run.id} has no {missing[0]}")
            return
        self._finish(flight.trial, flight, flight.params, "completed", values=values)

    def _finish(self, trial: optuna.Trial, flight: _Flight | None, params: dict, state: str, *,
                values: dict | None = None, error: str | None = None) -> None:
        run_id = flight.run_id if flight else None
        self.sweeps.record_trial(self.sweep_id, trial.number, run_id=run_id, state=state, params=params,
                                 values=values, error=error)
        if state == "completed":
            self.study.tell(trial, [values[name] for name in self.spec.objectives])
        else:
            self.study.tell(trial, state=_STATE.PRUNED if state == "pruned" else _STATE.FAIL)
        self.flights.pop(trial.number, None)
        log.info("trial %d %s%s", trial.number, state, f": {values or error}" if values or error else "")
        self._mark_pareto()

    def _mark_pareto(self) -> None:
        best = {t.number for t in self.study.best_trials} if self.study.get_trials(states=(_STATE.COMPLETE,)) else set()
        self.sweeps.set_pareto(self.sweep_id, best)

    def _cancel_all(self) -> None:
        """Stops every trial still going: queued ones at once, running ones cooperatively."""
        for flight in list(self.flights.values()):
            jobs.cancel(flight.run_id, self.workspace)
            export = self.workspace.latest_job(flight.run_id, EXPORT_JOB)
            if export is not None and export.active:
                jobs.cancel_job(export.id, self.workspace)
            self._finish(flight.trial, flight, flight.params, "cancelled", error="the sweep was cancelled")
