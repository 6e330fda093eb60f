"""Evaluate in a real browser: click a confusion-matrix cell, see the gallery filter to it, open a detail view.

Two tiny digits runs are trained through the CLI against the server's workspace. Screenshots go to
test-artifacts/screenshots/evaluate-*.png.
"""

from __future__ import annotations

import re
import time

import pytest

from tests.e2e.helpers import shot, train, wait_idle

pytestmark = pytest.mark.e2e









def _digits(epochs: int) -> tuple[str, ...]:
    return ("--data", "digits", "--image-size", "16", "--epochs", str(epochs), "--set", "data.max_per_class=60")


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
    weaker = train(home, *_digits(epochs=1))
    run_id = train(home, *_digits(epochs=3))

    from engine.evaluation import evaluate
    from engine.runfolder import RunFolder
    from engine.store import Workspace

    result = evaluate(RunFolder(Workspace(home), run_id).predictions())
    pair = result.confused_pairs[0]
    names = result.class_names
    true, predicted = names.index(pair.true), names.index(pair.predicted)

    page.goto(f"{url}/evaluate?run={run_id}")
    page.locator("h1").filter(has_text=re.compile(r"Evaluate$")).wait_for()
    page.locator('[data-testid="stMetric"]').filter(has_text="Accuracy").first.wait_for()
    page.locator(".st-key-eval-cm-chart .js-plotly-plot").first.wait_for()
    wait_idle(page)
    shot(page, "evaluate-01-overview")

    # Click the most confused cell: the Mistakes tab opens, filtered to that pair.
    _click_cell(page, true, predicted)
    wait_idle(page)
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
    shot(page, "evaluate-02-cell-filtered")

    # Details of the first image: larger, with its top-5 probabilities.
    page.locator('[class*="st-key-eval-gallery-open-"] button').first.click()
    page.get_by_text(re.compile(r"^Image id: digits/")).wait_for()
    page.locator(".st-key-eval-gallery-detail-chart .js-plotly-plot").wait_for()
    shot(page, "evaluate-03-detail")

    # Suspected label errors, with the CSV download.
    page.get_by_role("tab", name="Label errors").click()
    wait_idle(page)
    page.get_by_text(re.compile("Download CSV")).wait_for()
    shot(page, "evaluate-04-label-errors")

    # Compare with the weaker run (same data, same test set).
    page.get_by_role("tab", name="Compare").click()
    wait_idle(page)
    page.get_by_text(re.compile("McNemar's test")).wait_for()
    page.get_by_text(re.compile(f"B = .*run {weaker}")).filter(visible=True).first.wait_for()
    shot(page, "evaluate-05-compare")
