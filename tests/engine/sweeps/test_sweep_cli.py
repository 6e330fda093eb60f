"""Sweeps from the command line, for real: trials are train runs in job processes (tens of seconds each test)."""

import json

import optuna
import pytest

from engine.runfolder import RunFolder
from engine.store.sweeps import SweepStore
from engine.sweeps import dominates, non_dominated
from engine.sweeps.search import storage
from tests.engine.sweeps.helpers import cli, tiny_spec, write_spec

BAD = [
    ({"space": {"train.learnin_rate": {"low": 0.001, "high": 0.01}}}, "train.learnin_rate"),
    ({"space": {"model.width": {"low": 32, "high": 8}}}, "empty range"),
    ({"objectives": {"latency": "minimize"}}, "'latency' is not an objective"),
    ({"trials": 0}, "trials=0"),
]


@pytest.mark.parametrize(("change", "named"), BAD)
def test_bad_input_exits_2_naming_it_and_queues_nothing(workspace, tmp_path, change, named):
    result = cli("sweep", "--config", write_spec(tmp_path, tiny_spec(**change)), "--wait", "--json")
    assert result.returncode == 2, result.stderr
    assert named in result.stderr and result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert workspace.list_runs() == [] and SweepStore(workspace).list() == [] and workspace.jobs() == []


def test_unreadable_files_and_unknown_sweeps_exit_2(workspace, tmp_path):
    (tmp_path / "broken.json").write_text("{not json")
    for args in (["sweep", "--config", tmp_path / "broken.json"], ["sweep", "--config", tmp_path / "missing.json"],
                 ["sweep", "--resume", "no-such-sweep"], ["sweep", "--show", "no-such-sweep"]):
        result = cli(*args)
        assert result.returncode == 2 and result.stderr.startswith("error: "), (args, result.stderr)
    assert workspace.jobs() == []


@pytest.mark.slow
def test_six_trials_two_objectives_from_the_cli(workspace, tmp_path):
    spec = tiny_spec(space={"model.name": {"choices": ["lenet5", "resnet"]},
                            "model.width": {"low": 8, "high": 16, "step": 8},
                            "train.learning_rate": {"low": 0.001, "high": 0.02, "log": True}},
                     objectives={"val_accuracy": "maximize", "params": "minimize"}, trials=6, parallel=2)
    result = cli("sweep", "--config", write_spec(tmp_path, spec), "--wait", "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout)
    trials = out["trials"]
    assert len(trials) == 6 and [t["number"] for t in trials] == list(range(6))
    assert all(t["status"] == "completed" for t in trials), trials
    assert len({t["run_id"] for t in trials}) == 6
    # Each trial is an ordinary run, named after its sweep, with the sampled settings in its config.
    runs = {r.id: r for r in workspace.list_runs()}
    assert set(runs) == {t["run_id"] for t in trials}
    for t in trials:
        config = runs[t["run_id"]].config
        assert config.name == f"{out['sweep_id']} · trial {t['number']}"
        assert config.model.name == t["params"]["model.name"] and config.train.epochs == 1
        assert t["values"]["params"] == runs[t["run_id"]].params
    # The front: non-empty, every point truly non-dominated, and every other trial dominated by one on it.
    points = {t["run_id"]: t["values"] for t in trials}
    front = out["pareto"]
    assert front
    assert set(front) == {trials[i]["run_id"] for i in non_dominated([t["values"] for t in trials], out["objectives"])}
    for run_id in front:
        assert not any(dominates(v, points[run_id], out["objectives"]) for v in points.values())
    for run_id in set(points) - set(front):
        assert any(dominates(points[f], points[run_id], out["objectives"]) for f in front)
    # It agrees with Optuna's own front, read back from the study in the workspace database.
    study = optuna.load_study(study_name=out["sweep_id"], storage=storage(workspace))
    assert {t.user_attrs["run_id"] for t in study.best_trials} == set(front)
    assert study.directions == [optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE]

    listed = cli("sweeps", "--json")
    assert listed.returncode == 0
    assert [(s["sweep_id"], s["done"], s["status"]) for s in json.loads(listed.stdout)] == [
        (out["sweep_id"], 6, "completed")]
    shown = cli("sweep", "--show", out["sweep_id"][-4:])
    assert shown.returncode == 0 and "6/6 trials" in shown.stdout


@pytest.mark.slow
def test_int8_objectives_come_from_the_export_job(workspace, tmp_path):
    spec = tiny_spec(objectives={"val_accuracy": "maximize", "int8_latency_ms": "minimize",
                                 "int8_size_kb": "minimize"}, trials=2)
    result = cli("sweep", "--config", write_spec(tmp_path, spec), "--wait", "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout)
    assert [t["status"] for t in out["trials"]] == ["completed", "completed"], out["trials"]
    for t in out["trials"]:
        artifact = RunFolder(workspace, t["run_id"]).export_report()["artifacts"][0]
        assert artifact["format"] == "int8" and not artifact["error"]
        assert t["values"]["int8_size_kb"] == pytest.approx(artifact["size_bytes"] / 1024)
        assert t["values"]["int8_latency_ms"] == pytest.approx(artifact["latency_ms_median"])
        assert workspace.latest_job(t["run_id"], "export").status == "completed"
    assert out["pareto"]
