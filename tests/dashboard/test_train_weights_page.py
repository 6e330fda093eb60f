"""The Train page's weights status of the chosen base: missing (Get, Import, Start refused) or here."""

from __future__ import annotations

import time

import pytest

from engine import zoo
from tests.dashboard.apptest import texts
from tests.dashboard.test_pages import open_page
from tests.engine.models.test_weights import server  # noqa: F401 - the local HTTP server fixture


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    return tmp_path / "keras"


def test_missing_weights_are_shown_got_and_a_start_without_them_refused(workspace, keras_home, server,  # noqa: F811
                                                                         monkeypatch):
    server.payload = b"weights" * 50_000
    monkeypatch.setenv(zoo.WEIGHTS_URL_ENV, f"http://127.0.0.1:{server.server_address[1]}/")
    at = open_page("train")
    at.selectbox(key="cfg.model.name").set_value("transfer").run()
    assert "No ImageNet weights for mobilenet_v2 on this machine" in texts(at.warning)
    at.button(key="train.start").click().run()
    assert "weights get mobilenet_v2" in texts(at.error) and workspace.list_runs() == []

    at.button(key="train.weights.get_button.mobilenet_v2").click().run()
    job = workspace.latest_job("weights-mobilenet_v2", "weights")
    assert job is not None, "Get queues a weights job"
    deadline = time.monotonic() + 60
    while not zoo.status("mobilenet_v2").present and time.monotonic() < deadline:
        time.sleep(0.25)
        at.run()  # the page polls the job; a fragment's timer does not tick under AppTest
    at.run()
    assert not at.exception
    assert "ImageNet weights for mobilenet_v2 are here" in texts(at.success)
    assert (keras_home / "models" / zoo.get_base("mobilenet_v2").file).read_bytes() == server.payload


def test_random_weights_are_said_and_another_base_is_checked(workspace, keras_home):
    at = open_page("train")
    at.selectbox(key="cfg.model.name").set_value("transfer").run()
    at.selectbox(key="cfg.model.base").set_value("convnext_tiny").run()
    assert "No ImageNet weights for convnext_tiny" in texts(at.warning)
    assert at.get_by_key("train.weights.upload.convnext_tiny") is not None
    at.text_input(key="cfg.model.weights").input("random").run()
    assert "starts from random weights and trains whole" in texts(at.info)

