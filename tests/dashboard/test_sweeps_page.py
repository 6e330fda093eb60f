"""The Sweeps page in AppTest: its form (validated, submitted as a real sweep job), and a sweep's figures
and links, read from a real store."""

from __future__ import annotations

import json
import time

import pytest

from engine import jobs
from engine.store import ACTIVE, HOME_ENV, Workspace
from engine.store.sweeps import SweepStore
from engine.sweeps import SweepSpec
from tests.dashboard.apptest import HEAVY_LOADED, in_fresh_interpreter, open_app, texts

OBJECTIVES = {"val_accuracy": "maximize", "int8_latency_ms": "minimize"}
# (val accuracy, latency ms): the front is trials 0, 1 and 3; 2 and 4 are dominated.
POINTS = [(0.90, 0.20), (0.95, 0.40), (0.85, 0.35), (0.80, 0.10), (0.92, 0.50)]


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "workspace"))
    return Workspace(tmp_path / "workspace")


def _finished_sweep(workspace: Workspace) -> tuple[str, list[str]]:
    """A sweep whose five trials are recorded as the sweep job records them (runs only queued, not trained)."""
    spec = SweepSpec.from_dict({"name": "small and fast", "base": {"model": {"name": "lenet5"}},
                                "space": {"train.learning_rate": {"low": 0.0003, "high": 0.01, "log": True},
                                          "model.activation": {"choices": ["tanh", "relu"]}},
                                "objectives": OBJECTIVES, "trials": 5})
    sweeps = SweepStore(workspace)
    sweep = sweeps.create(spec.name, spec.to_dict())
    workspace.finish_job(sweep.job.id, "completed")
    run_ids = []
    for number, (accuracy, latency) in enumerate(POINTS):
        params = {"train.learning_rate": 0.001 * (number + 1), "model.activation": "tanh"}
        run = workspace.create_run(spec.config_for(params, name=f"{sweep.id} · trial {number}"))
        workspace.finish_job(run.job.id, "completed")
        sweeps.record_trial(sweep.id, number, run_id=run.id, state="completed", params=params,
                            values={"val_accuracy": accuracy, "int8_latency_ms": latency})
        run_ids.append(run.id)
    sweeps.set_pareto(sweep.id, {0, 1, 3})
    return sweep.id, run_ids


def test_an_empty_workspace_opens_the_form(home):
    at = open_app("sweeps")
    assert "No sweeps yet" in texts(at.info)
    assert at.multiselect(key="sweep.form.space").value == ["train.learning_rate", "model.width", "model.name"]
    assert at.multiselect(key="sweep.form.objectives").value == ["val_accuracy", "int8_latency_ms"]
    assert at.number_input(key="sweep.form.trials").value == 6


def test_the_form_refuses_bad_input_in_one_line_and_queues_nothing(home):
    at = open_app("sweeps")
    at.multiselect(key="sweep.form.objectives").set_value([]).run()
    at.button(key="sweeps.start").click().run()
    assert "objectives: give at least one" in texts(at.error)
    at.multiselect(key="sweep.form.objectives").set_value(["val_accuracy"]).run()
    at.number_input(key="sweep.form.high.train.learning_rate").set_value(0.0001).run()
    at.button(key="sweeps.start").click().run()
    assert "space.train.learning_rate: empty range" in texts(at.error)
    assert SweepStore(home).list() == [] and home.jobs() == []


def test_the_form_starts_a_sweep_job_with_the_file_it_shows(home):
    at = open_app("sweeps")
    at.multiselect(key="sweep.form.space").set_value(["train.learning_rate", "model.activation"]).run()
    at.multiselect(key="sweep.form.objectives").set_value(["val_accuracy", "params"]).run()
    at.number_input(key="sweep.form.trials").set_value(3).run()
    at.button(key="sweeps.start").click().run()
    assert not at.exception and not at.error
    sweeps = SweepStore(home)
    try:
        [sweep] = sweeps.list()
        spec = SweepSpec.from_dict(sweep.spec)
        assert set(spec.space) == {"train.learning_rate", "model.activation"} and spec.trials == 3
        assert spec.objectives == {"val_accuracy": "maximize", "params": "minimize"}
        assert spec.base["train"]["epochs"] == 4 and spec.base["data"]["source"] == "digits"
        assert sweep.job.kind == "sweep" and sweep.job.active
        assert at.query_params["sweep"] == [sweep.id] or at.query_params["sweep"] == sweep.id
    finally:
        for s in sweeps.list():
            jobs.cancel_job(s.job.id, home)
        deadline = time.time() + 60
        while time.time() < deadline and [j for j in home.jobs() if j.status in ACTIVE]:
            jobs.refresh(home)
            for run in home.list_runs():
                jobs.cancel(run.id, home)
            time.sleep(0.5)


def test_a_sweep_shows_its_front_history_and_links(home):
    sweep_id, run_ids = _finished_sweep(home)
    at = open_app("sweeps", sweep=sweep_id)
    assert not at.exception
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    front = next(c for c in charts if c["layout"]["title"]["text"].startswith("Pareto front"))
    traces = {t["name"]: t for t in front["data"]}
    assert traces["Pareto front"]["customdata"] == [run_ids[3], run_ids[0], run_ids[1]]  # joined along the x axis
    assert traces["Pareto front"]["text"] == ["#3", "#0", "#1"]
    assert set(traces["dominated"]["customdata"]) == {run_ids[2], run_ids[4]}
    assert traces["dominated"]["marker"]["opacity"] < 0.5
    assert front["layout"]["xaxis"]["title"]["text"].startswith("Validation accuracy (%)")
    assert front["layout"]["yaxis"]["title"]["text"].startswith("INT8 latency (ms per image)")
    titles = {c["layout"].get("title", {}).get("text", "") for c in charts}
    assert any(t.startswith("Validation accuracy by trial") for t in titles)
    assert any(t.startswith("Completed trials") for t in titles)  # the parallel coordinates
    assert at.selectbox(key="sweeps.chosen").value == run_ids[0]  # the first trial on the front
    at.selectbox(key="sweeps.chosen").set_value(run_ids[1]).run()
    links = {link.proto.label: link.proto for link in at.get("page_link")}
    assert (links["Export the chosen one"].page, links["Export the chosen one"].query_string) == (
        "export", f"run={run_ids[1]}")
    assert (links["Open its run"].page, links["Open its run"].query_string) == ("runs", f"run={run_ids[1]}")


def test_the_page_never_imports_tensorflow_or_optuna(home):
    sweep_id, _ = _finished_sweep(home)
    loaded = in_fresh_interpreter(f"""
        at.switch_page("views/sweeps.py").run()
        assert not at.exception, [e.value for e in at.exception]
        print(json.dumps([{HEAVY_LOADED}, "optuna" in sys.modules]))
    """, sweep=sweep_id)
    assert loaded == [False, False]


def test_a_trials_run_is_tagged_with_its_sweep_on_runs(home):
    sweep_id, run_ids = _finished_sweep(home)
    at = open_app("runs", run=run_ids[3])
    links = [link.proto for link in at.get("page_link") if link.proto.label.startswith("Trial ")]
    assert [(link.label, link.page, link.query_string) for link in links] == [
        (f"Trial 3 of sweep {sweep_id} (completed)", "sweeps", f"sweep={sweep_id}")]
