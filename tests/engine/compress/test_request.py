"""engine.compress requests: bad input gets one line on stderr, exit 2, and nothing queued (real trained runs)."""

from __future__ import annotations

import pytest

from engine import compress
from engine.cli import main
from engine.runfolder import RunFolder
from engine.store import HOME_ENV, Workspace
from tests.helpers.runs import train_tiny_run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A small digits ResNet (the teacher), a LeNet-5 on shapes (other classes) and a run without a model."""
    workspace = Workspace(tmp_path_factory.mktemp("compress-request") / "workspace")
    teacher = train_tiny_run(workspace, model={"name": "resnet", "width": 8}, epochs=1)
    shapes = train_tiny_run(workspace, epochs=1, source="shapes", max_per_class=20)
    no_model = train_tiny_run(workspace, epochs=1)
    RunFolder(workspace, no_model).model_file.unlink()
    return workspace, teacher, shapes, no_model


@pytest.fixture
def cli(runs, monkeypatch, capsys):
    workspace = runs[0]
    monkeypatch.setenv(HOME_ENV, str(workspace.root))

    def run(*args):
        before = {job.id for job in workspace.jobs()}, {run.id for run in workspace.list_runs()}
        code = main(["compress", *map(str, args)])
        after = {job.id for job in workspace.jobs()}, {run.id for run in workspace.list_runs()}
        return code, capsys.readouterr().err, after == before

    return run


@pytest.mark.parametrize("sparsity", ["0", "1", "1.5", "-0.2", "nan"])
def test_sparsity_outside_0_1_is_refused(runs, cli, sparsity):
    code, err, nothing_queued = cli(runs[1], "--method", "prune", "--sparsity", sparsity)
    assert code == 2 and nothing_queued
    assert err.count("\n") == 1 and err.startswith("error: sparsity=") and "between 0 and 1" in err


def test_a_student_larger_than_the_teacher_is_refused(runs, cli):
    code, err, nothing_queued = cli(runs[1], "--method", "distill", "--student", "resnet:width=32")
    assert code == 2 and nothing_queued
    assert err.count("\n") == 1 and "not fewer than the teacher's" in err and "parameters" in err


def test_a_teacher_with_other_classes_is_refused(runs, cli):
    _, teacher, shapes, _ = runs
    code, err, nothing_queued = cli(teacher, "--method", "distill", "--student", "lenet5", "--teacher", shapes)
    assert code == 2 and nothing_queued
    assert err.count("\n") == 1 and "other classes" in err and "circle" in err


def test_distilling_from_a_run_without_a_model_is_refused(runs, cli):
    code, err, nothing_queued = cli(runs[3], "--method", "distill", "--student", "lenet5")
    assert code == 2 and nothing_queued
    assert err.count("\n") == 1 and "has no model.keras" in err


def test_a_run_still_queued_cannot_be_compressed(runs, cli):
    workspace, teacher = runs[0], runs[1]
    queued = workspace.create_run(workspace.get_run(teacher).config)
    try:
        code, err, nothing_queued = cli(queued.id, "--method", "prune", "--sparsity", "0.5")
        assert code == 2 and nothing_queued and "is queued: only a completed run" in err
    finally:
        workspace.delete_run(queued.id)


@pytest.mark.parametrize("args, message", [
    (["--method", "distill"], "needs --student"),
    (["--method", "prune"], "needs --sparsity"),
    (["--method", "distill", "--student", "vgg16"], "architecture must be one of"),
    (["--method", "distill", "--student", "resnet:width=eight"], "student='resnet:width=eight'"),
    (["--method", "distill", "--student", "resnet:colour=3"], "'colour' is not a model setting"),
    (["--method", "distill", "--student", "lenet5", "--temperature", "0"], "temperature=0.0"),
    (["--method", "distill", "--student", "lenet5", "--alpha", "1.5"], "alpha=1.5"),
    (["--method", "prune", "--sparsity", "0.5", "--epochs", "0"], "epochs=0"),
])
def test_bad_options_exit_2_with_a_one_line_reason(runs, cli, args, message):
    code, err, nothing_queued = cli(runs[1], *args)
    assert code == 2 and nothing_queued, err
    assert err.count("\n") == 1 and message in err, err


def test_the_request_round_trips_and_names_itself():
    request = compress.CompressRequest(method="prune", sparsity=0.8, epochs=3)
    assert compress.CompressRequest.from_dict(request.to_dict()) == request
    assert request.describe() == "pruned to 80% (polynomial)"
    assert compress.student_config("resnet:width=8,depth=1").width == 8
    with pytest.raises(compress.CompressError, match="not a compress option"):
        compress.CompressRequest.from_dict({"method": "prune", "rate": 1})


def test_the_child_config_keeps_the_parents_data_and_takes_the_students_model(runs):
    workspace, teacher = runs[0], runs[1]
    parent = workspace.get_run(teacher).config
    child = compress.child_config(parent, compress.CompressRequest(student="lenet5", epochs=2))
    assert child.data == parent.data and child.augment == parent.augment
    assert child.model.name == "lenet5" and child.train.epochs == 2 and "distilled into lenet5" in child.name
