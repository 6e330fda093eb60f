"""The CLI as users run it: a real `python -m engine` process per call."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.config import RunConfig

ROOT = Path(__file__).resolve().parents[3]


def cli(*args, timeout=300):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "engine", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_datasets_lists_the_embedded_default(workspace):
    result = cli("datasets", "--json")
    assert result.returncode == 0, result.stderr
    sources = {s["name"]: s for s in json.loads(result.stdout)}
    assert sources["digits"]["available"] is True
    assert {"mnist", "fashion_mnist", "cifar10", "shapes"} <= set(sources)


@pytest.mark.parametrize(("args", "message"), [
    (["train", "--lr", "nan"], "train.learning_rate"),
    (["train", "--epochs", "0"], "train.epochs"),
    (["train", "--model", "transfer", "--image-size", "16"], "data.image_size"),
    (["train", "--data", "/no/such/folder"], "/no/such/folder"),
    (["train", "--augment", "spin=3"], "spin"),
    (["train", "--set", "train.epoch=3"], "train.epoch"),
    (["train", "--set", "nonsense"], "SECTION.KEY=VALUE"),
    (["show", "does-not-exist"], "does-not-exist"),
    (["cancel", "does-not-exist"], "does-not-exist"),
])
def test_bad_input_exits_2_with_a_one_line_reason(workspace, args, message):
    result = cli(*args)
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert workspace.list_runs() == [], "nothing may be recorded for bad input"


def test_bad_config_file_is_reported(workspace, tmp_path):
    bad = tmp_path / "run.json"
    bad.write_text("{oops")
    result = cli("train", "--config", bad)
    assert result.returncode == 2 and "run.json" in result.stderr


def test_config_file_round_trip_and_flags_override(workspace, tmp_path):
    path = tmp_path / "run.json"
    path.write_text(RunConfig(name="from-file").replace(train={"epochs": 7}).to_json())
    result = cli("train", "--config", path, "--batch-size", "16", "--augment", "flip,rotation=10", "--json")
    assert result.returncode == 0, result.stderr
    run_id = json.loads(result.stdout)["run_id"]
    config = workspace.get_run(run_id).config
    assert (config.name, config.train.epochs, config.train.batch_size) == ("from-file", 7, 16)
    assert config.augment.flip and config.augment.rotation == 10
    assert cli("cancel", run_id, "--wait").returncode == 0
    cancelled = json.loads(cli("show", run_id, "--json").stdout)
    assert cancelled["status"] == "cancelled"
    assert cli("cancel", run_id).returncode == 2  # nothing left to cancel
    assert cli("delete", run_id).returncode == 0
    assert json.loads(cli("runs", "--json").stdout) == []


@pytest.mark.slow
def test_train_wait_json_on_an_image_folder(workspace, image_folder):
    result = cli("train", "--data", image_folder, "--model", "lenet5", "--epochs", "3", "--image-size", "16",
                 "--wait", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["status"] == "completed" and summary["epochs"] == 3
    assert {"run_id", "test_accuracy", "train_seconds"} <= set(summary)
    listed = cli("runs")
    assert summary["run_id"] in listed.stdout and "images" in listed.stdout


def test_doctor_names_the_cpu_and_the_onednn_setting(workspace):
    result = cli("doctor", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["cpu"]["cores"] >= 1 and report["versions"]["tensorflow"]
    has_avx512 = "avx512f" in report["cpu"]["features"]
    assert report["onednn"]["value"] == ("AVX2" if has_avx512 else os.environ.get("DNNL_MAX_CPU_ISA"))
    text = cli("doctor")
    assert text.returncode == 0 and "oneDNN" in text.stdout and "GPUs" in text.stdout


@pytest.mark.slow
def test_a_width_8_resnet_trains_and_explains_from_a_plain_shell(workspace, tmp_path):
    """The run that died with free(): invalid pointer on an AVX-512 CPU, in processes with no oneDNN variable set."""
    from engine.cpu import CHOICE_ENV, ISA_ENV, ONEDNN_ENV
    from tests.helpers.images import write_digit_folder

    plain = {k: v for k, v in os.environ.items() if k not in (ISA_ENV, ONEDNN_ENV, CHOICE_ENV)}
    run_cli = lambda *args: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "engine", *map(str, args)], cwd=ROOT, env=dict(plain, PYTHONPATH=str(ROOT)),
        capture_output=True, text=True, timeout=300)
    trained = run_cli("train", "--data", "digits", "--model", "resnet", "--set", "model.width=8",
                      "--set", "model.depth=1", "--epochs", "2", "--wait", "--json")
    assert trained.returncode == 0, trained.stderr[-2000:]
    run_id = json.loads(trained.stdout)["run_id"]
    write_digit_folder(tmp_path / "digits", 1)
    png = next((tmp_path / "digits").rglob("*.png"))
    explained = run_cli("explain", run_id, "--image", png, "--method", "gradcam", "--out", tmp_path / "maps", "--json")
    assert explained.returncode == 0, explained.stderr[-2000:]
    assert json.loads(explained.stdout)
