"""The fix-and-retrain loop in a real browser: Evaluate → Map (computed by the inspect job) → lasso a cluster →
its gallery → relabel two images → a new dataset version → Retrain with these fixes → Compare shows the flips.

A tiny digits run is trained through the CLI against the server's workspace; the retrain is started from
the Train form as a user would. Screenshots go to test-artifacts/screenshots/inspect-*.png.
"""

from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import expect

from tests.e2e.helpers import shot, train, wait_idle

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DIGITS = ("--data", "digits", "--image-size", "16", "--model", "lenet5", "--epochs", "3", "--augment", "none",
          "--set", "data.max_per_class=40", "--name", "Digits")


def _lasso_class(page, name: str) -> int:
    """Drags a lasso around the points of class `name` on the map; returns how many points of it it encloses."""
    chart = page.locator(".st-key-eval-map-chart .js-plotly-plot").first
    chart.wait_for()
    path, inside = chart.evaluate("""(gd, name) => {
        const trace = gd._fullData.find(t => t.name === name);
        const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, box = gd.getBoundingClientRect();
        const px = Array.from(trace.x, v => xa.l2p(v)), py = Array.from(trace.y, v => ya.l2p(v));
        const sx = [...px].sort((a, b) => a - b), sy = [...py].sort((a, b) => a - b);
        const cx = sx[sx.length >> 1], cy = sy[sy.length >> 1];  // the median: the cluster's heart
        const d = px.map((x, i) => Math.hypot(x - cx, py[i] - cy)).sort((a, b) => a - b);
        const r = Math.max(12, d[Math.floor(d.length * 0.6)]);
        const inside = d.filter(v => v < r).length;
        const path = [];
        for (let k = 0; k <= 24; k++) {
            const a = 2 * Math.PI * k / 24;
            path.push([box.left + xa._offset + cx + r * Math.cos(a), box.top + ya._offset + cy + r * Math.sin(a)]);
        }
        return [path, inside];
    }""", name)
    page.mouse.move(*path[0])
    page.mouse.down()
    for x, y in path[1:]:
        page.mouse.move(x, y, steps=3)
    page.mouse.up()
    return inside


def _pick(page, key: str, count: int, pattern: str) -> None:
    """Picks the first `count` options matching `pattern` of a Streamlit multiselect (not its "Select all")."""
    for _ in range(count):
        page.locator(f".st-key-{key} input").click()
        page.locator('[role="option"]').filter(has_text=re.compile(pattern)).first.click()
        wait_idle(page)
    page.keyboard.press("Escape")


def _choose(page, key: str, option: str) -> None:
    """Picks `option` in a selectbox by typing it (the list filters as one types; under load an opened list
    could close before a click on an unfiltered option landed), then checks the box shows it."""
    box = page.locator(f".st-key-{key} input")
    box.click()
    box.fill(option)
    page.locator('[role="option"]').filter(has_text=re.compile(f"^{re.escape(option)}$")).first.click(timeout=60_000)
    wait_idle(page)
    expect(box).to_have_value(option, timeout=30_000)


def test_lasso_relabel_retrain_and_compare_the_flips(server, page):
    url, home = server
    parent_id = train(home, *DIGITS)

    page.goto(f"{url}/evaluate?run={parent_id}")
    page.locator("h1").filter(has_text=re.compile(r"Evaluate$")).wait_for()
    page.get_by_role("tab", name="Map").click()
    page.locator(".st-key-eval-inspect-start-the button").click()  # no embeddings yet: the inspect job
    page.locator(".st-key-eval-map-chart .js-plotly-plot").first.wait_for(timeout=240_000)
    wait_idle(page)
    shot(page, "inspect-01-map")

    inside = _lasso_class(page, "3")
    page.get_by_text(re.compile(r"^Selected: \d+ images")).wait_for(timeout=30_000)
    wait_idle(page)
    selected = int(re.search(r"Selected: (\d+)", page.get_by_text(re.compile(r"^Selected: ")).inner_text()).group(1))
    assert selected >= max(2, inside // 2), (selected, inside)
    shot(page, "inspect-02-lasso-gallery")

    _pick(page, "eval-map-fix-pick", 2, r"^digits/\d+$")
    page.get_by_text("2 images picked").wait_for()
    _choose(page, "eval-map-fix-to", "8")
    page.locator(".st-key-eval-map-fix-relabel button").click()
    page.locator(".st-key-loop-save button").wait_for()
    wait_idle(page)
    shot(page, "inspect-03-fixes")
    page.locator(".st-key-loop-save button").click()
    page.get_by_text("Saved version:1").wait_for()
    page.get_by_text("Diff against").wait_for()
    wait_idle(page)
    shot(page, "inspect-04-version")

    page.locator(".st-key-loop-retrain button").click()
    page.get_by_text(f"Pre-filled from run {parent_id}").wait_for()
    wait_idle(page)
    # The prefilled values reach the inputs on the rerun after the clone (under load a moment after idle).
    expect(page.locator(".st-key-cfg-data-path input")).to_have_value("version:1", timeout=30_000)
    expect(page.locator(".st-key-cfg-data-image_size input")).to_have_value("16", timeout=30_000)
    expect(page.locator(".st-key-cfg-train-epochs input")).to_have_value("3", timeout=30_000)
    shot(page, "inspect-05-train-prefilled")
    page.locator(".st-key-train-start button").click()
    page.wait_for_url(re.compile(r"/runs\?run="), timeout=60_000)
    child_id = page.url.rsplit("run=", 1)[1]

    from engine.store import COMPLETED, Workspace

    workspace = Workspace(home)
    deadline = time.time() + 240
    while workspace.get_run(child_id).status != COMPLETED:
        assert time.time() < deadline and workspace.get_run(child_id).status not in ("failed", "cancelled")
        time.sleep(1)
    child = workspace.get_run(child_id)
    assert child.config.data.source == "version:1" and child.parent_id == parent_id

    page.goto(f"{url}/evaluate?run={child_id}")
    page.locator("h1").filter(has_text=re.compile(r"Evaluate$")).wait_for()
    page.get_by_role("tab", name="Compare").click()
    page.get_by_text("Flips after the fixes").wait_for(timeout=60_000)
    page.locator('[data-testid="stMetric"]').filter(has_text="Shared test images").wait_for()
    wait_idle(page)
    for label in ("Fixed", "Broken", "Relabelled among them"):
        assert page.locator('[data-testid="stMetric"]').filter(has_text=label).count() == 1
    page.get_by_text("McNemar").first.wait_for()
    shot(page, "inspect-06-compare-flips")

    # The parent's Duplicates tab (the inspect job stored them) and its data's health on the Data page.
    page.goto(f"{url}/evaluate?run={parent_id}")
    page.locator("h1").filter(has_text=re.compile(r"Evaluate$")).wait_for()
    page.get_by_role("tab", name="Duplicates").click()
    page.get_by_text(re.compile(r"^Test accuracy")).first.wait_for(timeout=60_000)
    wait_idle(page)
    shot(page, "inspect-07-duplicates")
    page.goto(url)  # the Data page is the app's default page
    health = page.locator(".st-key-data-health")
    health.wait_for(timeout=60_000)
    health.get_by_text(re.compile(r"images of run .* checked by")).wait_for(timeout=60_000)
    wait_idle(page)
    health.scroll_into_view_if_needed()
    shot(page, "inspect-08-data-health")
