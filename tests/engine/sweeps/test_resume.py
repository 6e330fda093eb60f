"""A sweep survives its process: killed with SIGKILL mid-way, resumed, it uses exactly the remaining budget;
and cancel stops its queued and running trials."""

import json
import os
import signal

import optuna
import pytest

from engine import jobs
from engine.store.sweeps import SweepStore
from engine.sweeps import SweepSpec, cancel_sweep, submit_sweep
from engine.sweeps.search import storage
from tests.engine.jobs.test_job_processes import wait_until
from tests.engine.sweeps.helpers import cli, tiny_spec


@pytest.mark.slow
def test_kill_the_sweep_process_then_resume(workspace):
    spec = SweepSpec.from_dict(tiny_spec(trials=4, base={**tiny_spec()["base"], "train": {"epochs": 2}}))
    sweep = submit_sweep(spec, workspace)
    sweeps = SweepStore(workspace)

    def second_trial_running():
        trials = sweeps.trials(sweep.id)
        return len(trials) == 2 and trials[1].state == "running" and trials[0].finished and trials

    before = wait_until(second_trial_running, what="the second trial to be running")
    job = sweeps.get(sweep.id).job
    assert job.pid and job.status == "running"
    os.kill(job.pid, signal.SIGKILL)  # the sweep process only: its trial's train job keeps going
    wait_until(lambda: (jobs.refresh(workspace), sweeps.get(sweep.id).job.status)[1] == "failed",
              what="the killed sweep job to be reaped")
    in_flight = before[1].run_id
    assert workspace.get_run(in_flight).status in ("queued", "running", "completed")  # not lost with the sweep

    result = cli("sweep", "--resume", sweep.id[-4:], "--wait", "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout)
    trials = out["trials"]
    assert [t["number"] for t in trials] == [0, 1, 2, 3]  # none lost, none counted twice
    assert trials[0]["run_id"] == before[0].run_id and trials[1]["run_id"] == in_flight  # the running one adopted
    assert len({t["run_id"] for t in trials}) == 4 and len(workspace.list_runs()) == 4
    assert all(t["status"] in ("completed", "pruned") for t in trials), trials
    assert out["status"] == "completed" and out["done"] == 4
    study = optuna.load_study(study_name=sweep.id, storage=storage(workspace))
    finished = [t for t in study.trials if t.state.is_finished()]
    assert sorted(t.user_attrs["run_id"] for t in finished) == sorted(t["run_id"] for t in trials)
    assert [j.status for j in workspace.jobs() if j.kind == "sweep"] == ["failed", "completed"]
    again = cli("sweep", "--resume", sweep.id)
    assert again.returncode == 2 and "complete" in again.stderr


@pytest.mark.slow
def test_cancel_stops_queued_and_running_trials(workspace):
    spec = SweepSpec.from_dict(tiny_spec(trials=4, parallel=2, base={**tiny_spec()["base"], "train": {"epochs": 30}}))
    sweep = submit_sweep(spec, workspace)
    sweeps = SweepStore(workspace)
    wait_until(lambda: any(workspace.get_run(t.run_id).epochs_done >= 1 for t in sweeps.trials(sweep.id)),
              what="a trial to be training")
    assert cancel_sweep(sweep.id, workspace) is not None
    wait_until(lambda: (jobs.refresh(workspace), sweeps.get(sweep.id).status)[1] == "cancelled", timeout=60,
              what="the sweep to stop")
    trials = sweeps.trials(sweep.id)
    assert len(trials) == 2 and all(t.state == "cancelled" for t in trials)  # no new trial after the cancel
    wait_until(lambda: all((jobs.refresh(workspace), workspace.get_run(t.run_id).status)[1] == "cancelled"
                          for t in trials), timeout=60, what="its trials' runs to stop")
    running = max(trials, key=lambda t: workspace.get_run(t.run_id).epochs_done)
    assert 1 <= workspace.get_run(running.run_id).epochs_done < 30  # stopped cooperatively, mid-training
