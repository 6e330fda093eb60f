"""Server safety: the password gate, data roots and the upload limit, through the real entry points."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from engine import store
from engine.config import RunConfig
from engine.runfolder import RunFolder
from engine.data import DATA_ROOTS_ENV, DatasetError, archive, check_source_allowed, load_images
from tests.conftest import write_image_folder

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "dashboard" / "app.py")
PASSWORD = "correct horse <b>battery</b>"


def texts(elements) -> str:
    return " | ".join(str(e.value) for e in elements)


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=60)


@pytest.fixture
def roots(tmp_path, monkeypatch):
    """One allowed data root holding a dataset, and a dataset outside it."""
    inside = write_image_folder(tmp_path / "allowed" / "shapes", per_class=4)
    outside = write_image_folder(tmp_path / "private" / "secret", per_class=4)
    monkeypatch.setenv(DATA_ROOTS_ENV, str(tmp_path / "allowed"))
    return inside, outside


# -- password gate ---------------------------------------------------------------------


def test_password_gate_shows_nothing_until_the_password_is_typed(workspace, untouched_outside, monkeypatch):
    monkeypatch.setenv("APERTURE_PASSWORD", PASSWORD)
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert len(at.text_input) == 1 and at.text_input[0].label == "Password"
    assert not at.metric and not at.dataframe, "a page ran behind the gate"
    at.text_input[0].input("wrong")  # in a form: typed, then submitted in one run
    at.button[0].click().run()
    assert "Wrong password." in texts(at.error) and not at.metric
    at.text_input[0].input(PASSWORD)
    at.button[0].click().run()
    assert not at.exception
    assert {m.label for m in at.metric} >= {"Images", "Classes"}  # the Data page, after the gate
    at.switch_page("views/runs.py").run()
    assert not at.exception and not any(t.label == "Password" for t in at.text_input)  # once per session


def test_no_password_set_means_no_gate(workspace, monkeypatch):
    monkeypatch.delenv("APERTURE_PASSWORD", raising=False)
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not any(t.label == "Password" for t in at.text_input) and at.metric


def _gate_script():
    import streamlit as st

    from dashboard.components import gate

    if gate.require_password(shared_demo=True):
        st.write("demo shown")


@pytest.mark.parametrize("published", [True, False])
def test_only_a_published_run_demo_link_skips_the_gate(workspace, monkeypatch, published):
    monkeypatch.setenv("APERTURE_PASSWORD", PASSWORD)
    run = workspace.create_run(RunConfig())
    if published:
        assert subprocess.run([sys.executable, "-m", "engine", "publish", run.id[-6:]], cwd=ROOT,
                              capture_output=True, text=True).returncode == 0
    assert RunFolder(workspace, run.id).published is published
    at = AppTest.from_function(_gate_script, default_timeout=30)
    at.query_params["run"] = run.id
    at.run()
    assert ("demo shown" in texts(at.markdown)) is published
    assert any(t.label == "Password" for t in at.text_input) is not published


def test_published_marker_cannot_be_reached_by_a_crafted_run_id(workspace):
    (workspace.root / "published").write_text("x")  # a run's marker name, one level up from runs/
    for crafted in ("..", "../..", "", "a/../..", "..%2f"):
        assert not RunFolder(workspace, crafted).published


# -- data roots ------------------------------------------------------------------------


def test_engine_refuses_a_folder_outside_the_data_roots(workspace, roots, untouched_outside):
    inside, outside = roots
    assert len(load_images(str(inside), 8)) == 12
    with pytest.raises(DatasetError, match="outside the allowed data folders"):
        load_images(str(outside), 8)
    with pytest.raises(DatasetError, match="outside the allowed data folders"):
        load_images(str(inside / ".." / ".." / "private" / "secret"), 8)  # `..` is resolved first


def test_a_symlink_inside_a_root_pointing_outside_is_refused(workspace, roots, tmp_path):
    inside, outside = roots
    link = inside.parent / "link"
    link.symlink_to(outside)
    with pytest.raises(DatasetError, match="outside the allowed data folders"):
        check_source_allowed(str(link))
    link.unlink()


def test_a_missing_path_outside_the_roots_is_refused_before_its_existence_is_told(workspace, roots, tmp_path):
    with pytest.raises(DatasetError, match="outside the allowed data folders"):
        load_images(str(tmp_path / "private" / "nope"), 8)


def test_cli_refuses_a_folder_outside_the_data_roots(workspace, roots, untouched_outside):
    inside, outside = roots
    result = cli("train", "--data", str(outside), "--epochs", "1", env={DATA_ROOTS_ENV: os.environ[DATA_ROOTS_ENV]})
    assert result.returncode == 2
    assert "outside the allowed data folders" in result.stderr and "Traceback" not in result.stderr
    assert workspace.list_runs() == []


def test_data_page_refuses_a_folder_outside_the_data_roots(workspace, roots, untouched_outside):
    inside, outside = roots
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.segmented_control(key="data.kind").set_value("Folder on the server").run()
    at.text_input(key="data.folder").input(str(outside)).run()
    assert not at.exception
    assert "outside the allowed data folders" in texts(at.error)
    assert not at.image, "no image from outside the roots may be shown"
    at.text_input(key="data.folder").input(str(inside)).run()
    assert {m.label: m.value for m in at.metric}["Classes"] == "3"


def test_train_page_refuses_a_folder_outside_the_data_roots(workspace, roots, untouched_outside):
    inside, outside = roots
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.switch_page("views/train.py").run()
    at.radio(key="cfg.data.kind").set_value("Folder or zip on the server").run()
    at.text_input(key="cfg.data.path").input(str(outside)).run()
    at.button(key="train.start").click().run()
    assert not at.exception
    assert "outside the allowed data folders" in texts(at.error)
    assert workspace.list_runs() == []


# -- upload size -----------------------------------------------------------------------


def test_upload_size_is_checked_again_in_the_engine(workspace, untouched_outside, monkeypatch):
    with pytest.raises(DatasetError, match="the limit is"):
        archive.check_upload_size(archive.MAX_UPLOAD_BYTES + 1)
    limit_mb = int(next(line for line in (ROOT / ".streamlit" / "config.toml").read_text().splitlines()
                        if line.startswith("maxUploadSize")).split("=")[1].split("#")[0])
    assert archive.MAX_UPLOAD_BYTES == limit_mb * 1024**2, "the engine limit should match .streamlit/config.toml"
    monkeypatch.setattr(archive, "MAX_UPLOAD_BYTES", 1000)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("a/x.png", os.urandom(5000))
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.segmented_control(key="data.kind").set_value("Upload a zip").run()
    at.file_uploader(key="data.upload").upload("big.zip", buffer.getvalue(), "application/zip").run()
    assert not at.exception
    assert "big.zip" in texts(at.error) and "the limit is" in texts(at.error)
    assert not (workspace.root / store.UPLOADS_DIR).exists() or not any((workspace.root / store.UPLOADS_DIR).iterdir())
