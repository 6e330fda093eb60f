"""Evaluate in a real browser: click a confusion-matrix cell, see the gallery filter to it, open a detail view.

Two tiny digits runs are trained through the CLI against the server's workspace. Screenshots go to
test-artifacts/screenshots/evaluate-*.png.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "test-artifacts" / "screenshots"


def _shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.wait_for_timeout(600)  # let charts finish their transition
    page.screenshot(path=str(SHOTS / f"evaluate-{name}.png"))


def _wait_idle(page) -> None:
    page.wait_for_function("""() => {
        const w = document.querySelector('[data-testid="stStatusWidget"]');
        return !w || !/Running|Connecting/.test(w.innerText);
    }""", timeout=30_000)


def _train(home: Path, epochs: int) -> str:
    env = dict(os.environ, APERTURE_HOME=str(home), APERTURE_STANDBY="0", TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-m", "engine", "train", "--data", "digits", "--image-size", "16",
                          "--epochs", str(epochs), "--set", "data.max_per_class=60", "--wait", "--json"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])["run_id"]


def _cards(page) -> list[str]:
    return [t for t in page.locator("[data-testid=stText]").filter(visible=True).all_inner_texts() if "→" in t]


def _click_cell(page, row: int, column: int) -> None:
    """Clicks the centre of confusion-matrix cell (row = true index, column = predicted index)."""
    chart = page.locator(".st-key-eval-cm-chart .js-plotly-plot").first
    chart.wait_for()
    x, y = chart.evaluate("""(gd, cell) => {
        const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, box = gd.getBoundingClientRect();
        return [box.left + xa._offset + xa.l2p(cell[1]), box.top + ya._offset + ya.l2p(cell[0])];
    }""", [row, column])
    page.mouse.move(x, y)
    page.wait_for_timeout(300)
    page.mouse.click(x, y)


def test_click_a_confusion_cell_to_filter_the_gallery(server, page):
    url, home = server
    weaker = _train(home, epochs=1)
    run_id = _train(home, epochs=3)

    from engine.evaluation import evaluate, load_predictions
    from engine.store import Workspace

    result = evaluate(load_predictions(Workspace(home), run_id))
    pair = result.confused_pairs[0]
    names = result.class_names
    true, predicted = names.index(pair.true), names.index(pair.predicted)

    page.goto(f"{url}/evaluate?run={run_id}")
    page.locator("h1").filter(has_text=re.compile(r"Evaluate$")).wait_for()
    page.locator('[data-testid="stMetric"]').filter(has_text="Accuracy").first.wait_for()
    page.locator(".st-key-eval-cm-chart .js-plotly-plot").first.wait_for()
    _wait_idle(page)
    _shot(page, "01-overview")

    # Click the most confused cell: the Mistakes tab opens, filtered to that pair.
    _click_cell(page, true, predicted)
    _wait_idle(page)
    expected = f"✗ true {pair.true} → {pair.predicted}"
    page.get_by_text(expected).first.wait_for(timeout=20_000)
    # Streamlit keeps the previous run's cards on screen (stale) until the rerun finishes: poll.
    deadline = time.time() + 30
    while True:
        cards = _cards(page)
        if cards and all(c.startswith(expected) for c in cards) and len(cards) == min(pair.count, 24):
            break
        assert time.time() < deadline, cards
        page.wait_for_timeout(250)
    assert page.get_by_role("tab", name="Mistakes").get_attribute("aria-selected") == "true"
    _shot(page, "02-cell-filtered")

    # Details of the first image: larger, with its top-5 probabilities.
    page.locator('[class*="st-key-eval-gallery-open-"] button').first.click()
    page.get_by_text(re.compile(r"^Image id: digits/")).wait_for()
    page.locator(".st-key-eval-gallery-detail-chart .js-plotly-plot").wait_for()
    _shot(page, "03-detail")

    # Suspected label errors, with the CSV download.
    page.get_by_role("tab", name="Label errors").click()
    _wait_idle(page)
    page.get_by_text(re.compile("Download CSV")).wait_for()
    _shot(page, "04-label-errors")

    # Compare with the weaker run (same data, same test set).
    page.get_by_role("tab", name="Compare").click()
    _wait_idle(page)
    page.get_by_text(re.compile("McNemar's test")).wait_for()
    page.get_by_text(re.compile(f"B = .*run {weaker}")).filter(visible=True).first.wait_for()
    _shot(page, "05-compare")
