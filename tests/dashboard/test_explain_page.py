"""The Explain page in AppTest: empty state, and a run with a real (untrained) model explained by all three methods."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from engine import jobs
from engine.config import ModelConfig, RunConfig
from engine.store import MODEL_FILE

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "dashboard" / "app.py")


@pytest.fixture(autouse=True)
def no_standby(monkeypatch):
    monkeypatch.setenv(jobs.STANDBY_ENV, "0")


def open_explain(**query) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    for key, value in query.items():
        at.query_params[key] = value
    at.run()
    at.switch_page("views/explain.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(elements) -> str:
    return " | ".join(str(e.value) for e in elements)


def test_empty_state(workspace):
    workspace.create_run(RunConfig())  # queued: no model yet
    at = open_explain()
    assert "No finished run to explain yet" in texts(at.info)


@pytest.mark.slow
def test_gradcam_inline_then_shap_and_lime_on_request(workspace):
    from tests.dashboard.test_evaluate_page import completed_run

    from engine.models import make_model

    run_id = completed_run(workspace)
    make_model(ModelConfig(), (16, 16, 3), 10, seed=0).save(workspace.run_file(run_id, MODEL_FILE))
    predictions_ids = __import__("numpy").load(workspace.run_file(run_id, "predictions.npz"))["ids"]
    at = open_explain(run=run_id, image=str(predictions_ids[3]))
    assert at.selectbox(key="explain.run").value == run_id
    assert at.number_input(key="explain.index").value == 3
    captions = texts(at.caption)
    assert "deletion AUC" in captions and "Not run yet" in captions
    assert "beats chance" in texts(at.info) or "caution" in texts(at.info)
    at.button(key="explain.run_slow").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert texts(at.caption).count("deletion AUC") == 3
    at.selectbox(key="explain.class").set_value(2).run()
    assert not at.exception
    assert texts(at.caption).count("deletion AUC") == 3
