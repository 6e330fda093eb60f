"""The model server killed with SIGKILL in the middle of a request: the page says so in one line, a new server
answers, and the Streamlit process (here, the AppTest process) is the same one."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from dashboard.components import model_server
from tests.dashboard.apptest import open_app, texts
from tests.dashboard.test_model_server_pages import run_with_model


@pytest.mark.slow
def test_a_killed_model_server_is_restarted_and_the_request_answered(workspace):
    run_id = run_with_model(workspace)
    streamlit_pid = os.getpid()
    at = open_app("explain", timeout=180, run=run_id)
    assert "deletion AUC" in texts(at.caption), texts(at.error)
    first = model_server.pid()
    assert first is not None and first != streamlit_pid

    def kill_soon() -> None:  # SHAP and LIME take seconds: the kill lands while the server works on them
        time.sleep(1.0)
        os.kill(first, signal.SIGKILL)

    killer = threading.Thread(target=kill_soon)
    killer.start()
    at.button(key="explain.run_slow").click().run(timeout=240)
    killer.join()
    assert not at.exception, [e.value for e in at.exception]
    assert "The model server had stopped (killed by SIGKILL" in texts(at.warning), texts(at.warning) + texts(at.error)
    assert texts(at.caption).count("deletion AUC") == 3  # the retried request was answered
    second = model_server.pid()
    assert second is not None and second != first and os.getpid() == streamlit_pid
    at.selectbox(key="explain.class").set_value(2).run(timeout=240)  # and the next request works without a note
    assert not at.exception and texts(at.caption).count("deletion AUC") == 3
    assert "had stopped" not in texts(at.warning)
