"""The sweeps tables: a sweep with its job, its trials, the run -> sweep tag, and the JSON result (on SQLite and
on PostgreSQL), and Optuna's study in the same database."""

import pytest

from engine.jobs import kinds
from engine.store.sweeps import SWEEP_JOB, SweepNotFound, SweepStore
from engine.sweeps import SweepSpec, sweep_result
from tests.engine.sweeps.helpers import tiny_spec


@pytest.fixture
def workspace(store_workspace):
    return store_workspace


def test_a_sweep_its_job_and_its_trials(workspace):
    sweeps = SweepStore(workspace)
    spec = SweepSpec.from_dict(tiny_spec(objectives={"val_accuracy": "maximize", "params": "minimize"}))
    sweep = sweeps.create("first", spec.to_dict())
    assert sweep.job.kind == SWEEP_JOB and sweep.job.status == "queued" and sweep.job.run_id == sweep.id
    assert SweepSpec.from_dict(sweep.job.request) == spec  # the job's request is the sweep file
    assert kinds.resolve(SWEEP_JOB).parse_request(sweep.job.request) == spec
    assert workspace.run_dir(sweep.id).is_dir()  # where the job's log goes
    assert workspace.list_runs() == []  # a sweep is not a run

    run = workspace.create_run(spec.config_for({}, name="t0"))
    sweeps.record_trial(sweep.id, 0, run_id=run.id, state="running", params={"train.learning_rate": 0.001})
    sweeps.record_trial(sweep.id, 0, run_id=run.id, state="completed", params={"train.learning_rate": 0.001},
                        values={"val_accuracy": 0.9, "params": 100.0})
    sweeps.record_trial(sweep.id, 1, run_id=None, state="failed", params={}, error="bad combination")
    sweeps.set_pareto(sweep.id, {0})
    assert [(t.number, t.state, t.pareto) for t in sweeps.trials(sweep.id)] == [(0, "completed", True),
                                                                                (1, "failed", False)]
    assert sweeps.trial_of_run(run.id).sweep_id == sweep.id
    result = sweep_result(sweep.id, workspace)
    assert result["pareto"] == [run.id] and result["done"] == 2 and result["budget"] == 3
    assert result["trials"][0] == {"number": 0, "run_id": run.id, "status": "completed",
                                   "params": {"train.learning_rate": 0.001},
                                   "values": {"val_accuracy": 0.9, "params": 100.0}}
    assert list(result["objectives"]) == ["val_accuracy", "params"]  # the order the file gave
    assert sweeps.resolve(sweep.id[-4:]) == sweep.id
    with pytest.raises(SweepNotFound):
        sweeps.resolve("nope")
    with pytest.raises(ValueError, match="state="):
        sweeps.record_trial(sweep.id, 2, run_id=None, state="done", params={})
    with pytest.raises(ValueError, match="already queued"):
        sweeps.queue_job(sweep.id)


def test_a_queued_sweep_takes_no_job_slot(workspace):
    """A running sweep only waits on its trials: with one slot its trial must still start."""
    sweeps = SweepStore(workspace)
    sweep = sweeps.create("", SweepSpec.from_dict(tiny_spec()).to_dict())
    claimed = workspace.claim_next_job(1)
    assert claimed.id == sweep.job.id
    run = workspace.create_run(SweepSpec.from_dict(tiny_spec()).config_for({}))
    assert workspace.claim_next_job(1).id == run.job.id
    assert workspace.claim_next_job(1) is None  # the train job holds the one slot


def test_optunas_study_shares_the_workspace_database(workspace):
    from engine.sweeps.search import open_study

    spec = SweepSpec.from_dict(tiny_spec())
    sweep = SweepStore(workspace).create("", spec.to_dict())
    study = open_study(workspace, sweep.id, spec)
    trial = study.ask()
    study.tell(trial, 0.5)
    with workspace.database.connect() as db:
        for table in ("runs", "jobs", "metrics", "sweeps", "sweep_trials", "studies", "trials", "trial_values"):
            assert workspace.database.has_table(db, table), table
    workspace.create_run(spec.config_for({}))  # the store still writes beside Optuna's tables
    assert len(open_study(workspace, sweep.id, spec).trials) == 1  # and the study loads back (resume)


@pytest.mark.parametrize("store_workspace", ["sqlite"], indirect=True)
def test_optuna_keeps_the_sqlite_files_wal(workspace):
    import sqlite3

    from engine.sweeps.search import open_study

    spec = SweepSpec.from_dict(tiny_spec())
    open_study(workspace, SweepStore(workspace).create("", spec.to_dict()).id, spec).ask()
    db = sqlite3.connect(workspace.db_path)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        db.close()
