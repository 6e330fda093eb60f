"""`weights list|get|import` and the refusal of a transfer run without pretrained weights, as a user runs them."""

import json
from pathlib import Path

import pytest
from tests.engine.cli.test_cli import cli
from tests.helpers.images import write_image_folder


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    return tmp_path / "keras"


def test_a_transfer_run_without_weights_is_refused_with_the_how_to(workspace, keras_home):
    result = cli("train", "--model", "transfer", "--base", "convnext_tiny", "--image-size", "32")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "weights get convnext_tiny" in result.stderr and "weights import" in result.stderr
    assert workspace.list_runs() == []
    listed = json.loads(cli("weights", "list", "--json").stdout)
    assert {row["base"] for row in listed} >= {"mobilenet_v3_small", "efficientnet_v2s", "convnext_tiny"}
    assert not any(row["present"] for row in listed)


def test_weights_get_and_import_refuse_bad_input_in_one_line(workspace, keras_home, tmp_path, monkeypatch):
    monkeypatch.setenv("APERTURE_WEIGHTS_URL", "http://127.0.0.1:9/")
    result = cli("weights", "get", "mobilenet_v2")
    assert result.returncode == 2 and "cannot download" in result.stderr
    (tmp_path / "junk.h5").write_text("junk")
    result = cli("weights", "import", tmp_path / "junk.h5", "--base", "mobilenet_v2")
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith("error: junk.h5 is not an HDF5")


def test_weights_get_downloads_in_the_job_the_train_page_follows(workspace, keras_home, monkeypatch):
    from tests.helpers.weights_server import weights_server

    with weights_server() as server:
        server.payload = b"weights" * 40_000
        monkeypatch.setenv("APERTURE_WEIGHTS_URL", f"{server.url}/apps/")
        result = cli("weights", "get", "mobilenet_v2")
    assert result.returncode == 0, result.stderr
    path = Path(result.stdout.strip())
    assert path.parent == keras_home / "models" and path.read_bytes() == server.payload
    (job,) = workspace.jobs()
    assert (job.run_id, job.kind, job.status) == ("weights-mobilenet_v2", "weights", "completed")
    assert "checked and saved" in job.message and "100%" in result.stderr


@pytest.mark.slow
def test_imported_weights_start_a_run_that_reports_them(workspace, keras_home, tmp_path):
    import engine  # noqa: F401
    from engine.models.transfer import make_base

    make_base("mobilenet_v3_small", (32, 32, 3), None).save_weights(tmp_path / "small.weights.h5")
    result = cli("weights", "import", tmp_path / "small.weights.h5", "--base", "mobilenet_v3_small")
    assert result.returncode == 0, result.stderr
    listed = {row["base"]: row for row in json.loads(cli("weights", "list", "--json").stdout)}
    assert listed["mobilenet_v3_small"]["present"] and listed["mobilenet_v3_small"]["source"] == "import"
    folder = write_image_folder(tmp_path / "imgs", classes=("a", "b"), per_class=8, size=32)
    result = cli("train", "--data", folder, "--model", "transfer", "--base", "mobilenet_v3_small", "--image-size",
                 "32", "--epochs", "1", "--wait", "--json")
    assert result.returncode == 0, result.stderr
    run_id = json.loads(result.stdout.strip().splitlines()[-1])["run_id"]
    shown = json.loads(cli("show", run_id, "--json").stdout)
    assert shown["weights"] == {"base": "mobilenet_v3_small", "source": "import",
                                "sha256": listed["mobilenet_v3_small"]["sha256"]}
