"""The Monitor page in a real browser after a burst of real traffic through `python -m engine serve`: first the
test set's own mix, then a drifted one (two classes only, darkened); feedback on some. One click opens a logged
input in Explain."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from engine.data import load_images
from engine.serve.client import ServeClient
from tests.e2e.conftest import RUN_TIMEOUT_MS, _free_port
from tests.e2e.helpers import DIGITS_DEMO, ROOT, shot, train, wait_idle

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def send_traffic(home, run_id: str) -> int:
    """Normal then drifted traffic through a real model server; returns how many predictions were sent."""
    port = _free_port()
    env = dict(os.environ, APERTURE_HOME=str(home), TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT))
    process = subprocess.Popen([sys.executable, "-m", "engine", "serve", "--port", str(port)], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        client = ServeClient(f"http://127.0.0.1:{port}")
        deadline = time.time() + 60
        while not client.healthy():
            assert process.poll() is None and time.time() < deadline, "the model server did not start"
            time.sleep(0.2)
        images = load_images("digits", 24, max_per_class=40, seed=1)
        names = images.class_names
        sent = 0
        for image, label in zip(images.images[:200], images.labels[:200]):  # the usual mix
            answer = client.classify_image(run_id, png(image))
            if sent % 4 == 0:
                client.feedback(run_id, answer["log_id"], names[int(label)])
            sent += 1
        drifted = [(img, lab) for img, lab in zip(images.images, images.labels) if lab in (0, 1)]
        for image, label in drifted[:70] * 3:  # only two classes, and darker: a camera moved indoors
            dark = (image.astype(np.float32) * 0.45).astype(np.uint8)
            answer = client.classify_image(run_id, png(dark), fmt="keras")
            if sent % 4 == 0:
                client.feedback(run_id, answer["log_id"], names[int(label)])
            sent += 1
        return sent
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(10)


def test_monitor_after_a_drifted_burst_then_explain_a_logged_input(server, page):
    url, home = server
    run_id = train(home, *DIGITS_DEMO)
    sent = send_traffic(home, run_id)

    page.goto(f"{url}/monitor?run={run_id}", timeout=RUN_TIMEOUT_MS)
    page.get_by_text("Predictions logged").wait_for(timeout=RUN_TIMEOUT_MS)
    wait_idle(page, RUN_TIMEOUT_MS)
    body = page.inner_text("body")
    assert f"{sent:,}" in body
    assert "significant shift" in body or "moderate shift" in body
    assert "Live accuracy" in body and "Least confident recent inputs" in body
    page.locator(".js-plotly-plot").nth(4).wait_for(timeout=RUN_TIMEOUT_MS)  # traffic, latency, mix, confidence, drift
    shot(page, "monitor-after-drift")
    page.get_by_role("button", name="Explain").first.click()
    page.get_by_text("Logged input").wait_for(timeout=RUN_TIMEOUT_MS)
    page.get_by_text("deletion AUC").first.wait_for(timeout=RUN_TIMEOUT_MS)
    wait_idle(page, RUN_TIMEOUT_MS)
    shot(page, "explain-logged-input")
