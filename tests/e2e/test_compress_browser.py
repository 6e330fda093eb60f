"""Compression and the Pareto view in a real browser: a run and its pruned child, both exported through the CLI
against the server's workspace; the Export page shows every artifact as a point with the front joined and
labelled, a table beside it, and starts (and cancels) a distillation from its panel.

Screenshots go to test-artifacts/screenshots/compress-*.png (and $APERTURE_SHOTS16, default /tmp/shots16).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.helpers import DIGITS_DEMO, ROOT, SHOTS, shot, train, wait_idle

pytestmark = pytest.mark.e2e
EXTRA_SHOTS = Path(os.environ.get("APERTURE_SHOTS16", "/tmp/shots16"))
FORMATS = "float32,int8,onnx,openvino,openvino_int8,keras"


def engine_cli(home: Path, *args: str, timeout: float = 400) -> dict:
    env = dict(os.environ, APERTURE_HOME=str(home), APERTURE_STANDBY="0", TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-m", "engine", *args, "--json"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=timeout)
    assert out.returncode in (0, 1), out.stderr[-2000:]  # 1: an artifact over the drop limit is still a point
    return json.loads(out.stdout)


def keep(name: str) -> None:
    EXTRA_SHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(SHOTS / f"{name}.png", EXTRA_SHOTS / f"{name}.png")


def test_the_pareto_view_of_a_run_and_its_pruned_child_and_the_compress_panel(server, page):
    url, home = server
    run_id = train(home, *DIGITS_DEMO)
    engine_cli(home, "export", run_id, "--format", FORMATS)
    child = engine_cli(home, "compress", run_id, "--method", "prune", "--sparsity", "0.75", "--epochs", "3",
                       "--wait")
    assert child["status"] == "completed" and child["sparsity"] == pytest.approx(0.75, abs=0.01)
    engine_cli(home, "export", child["run_id"], "--format", FORMATS)

    page.goto(f"{url}/export?run={run_id}")
    page.locator("h1").filter(has_text="Export").wait_for()
    heading = page.get_by_text("Accuracy, latency and size across this run and its compressed runs")
    heading.wait_for(timeout=60_000)
    wait_idle(page)
    page.get_by_text("Accuracy vs latency (marker area: file size)").first.wait_for()
    heading.scroll_into_view_if_needed()
    assert page.locator('[data-testid="stDataFrame"]').count() >= 2  # the parity table and the Pareto table
    assert page.get_by_text(re.compile(r"12 artifacts from 2 runs; the \d+ joined and labelled")).count() == 1
    shot(page, "compress-01-pareto")
    keep("compress-01-pareto")
    page.locator(".st-key-pareto-chart").screenshot(path=str(EXTRA_SHOTS / "compress-02-pareto-chart.png"))

    # Start a distillation from the panel, watch it run, cancel it.
    page.get_by_text("Make it smaller", exact=True).scroll_into_view_if_needed()
    page.locator(".st-key-compress-method").get_by_text("Distill into a student").click()
    wait_idle(page)
    page.locator(".st-key-compress-student input").fill("resnet:width=4")
    page.locator(".st-key-compress-epochs input").fill("50")
    page.locator(".st-key-compress-epochs input").press("Enter")
    wait_idle(page)
    shot(page, "compress-03-panel")
    keep("compress-03-panel")
    page.locator(".st-key-compress-start button").click()
    page.get_by_text(re.compile(r"(distilled into resnet:width=4|Queued)")).first.wait_for(timeout=60_000)
    page.get_by_text(re.compile(r"epoch \d+/50")).first.wait_for(timeout=120_000)
    shot(page, "compress-04-running")
    keep("compress-04-running")
    page.get_by_role("button", name=re.compile("Cancel")).last.click()
    page.get_by_text(re.compile("The last compression was cancelled")).wait_for(timeout=90_000)
    shot(page, "compress-05-cancelled")
    keep("compress-05-cancelled")

    # The child run's own Export page says what it was made from.
    page.goto(f"{url}/export?run={child['run_id']}")
    page.get_by_text(re.compile(r"Pruned to 75% \(polynomial\)")).wait_for(timeout=60_000)
    wait_idle(page)
    page.get_by_text("Make it smaller", exact=True).scroll_into_view_if_needed()
    shot(page, "compress-06-child-report")
    keep("compress-06-child-report")
