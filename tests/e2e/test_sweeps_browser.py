"""The Sweeps page in a real browser: a 6-trial sweep over two objectives started from the form, run to its end,
its Pareto front clicked through to the chosen run's Export page. Screenshots go to test-artifacts/screenshots
(and to $APERTURE_SHOTS when set)."""

from __future__ import annotations

import os
import re
import shutil

import pytest

from engine.store import Workspace
from engine.store.sweeps import SweepStore
from engine.sweeps import dominates
from tests.e2e.helpers import SHOTS, shot, wait_idle

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
SWEEP_TIMEOUT_MS = 420_000


def _set_number(page, key: str, value) -> None:
    field = page.locator(f".st-key-{key.replace('.', '-')} input")
    field.fill(str(value))
    field.press("Enter")
    wait_idle(page)


def _keep(name: str) -> None:
    extra = os.environ.get("APERTURE_SHOTS")
    if extra:
        os.makedirs(extra, exist_ok=True)
        shutil.copy(SHOTS / f"{name}.png", extra)


def test_a_sweep_from_the_form_to_its_front_and_export(server, page):
    url, home = server
    page.goto(url + "/sweeps")
    page.get_by_role("button", name=re.compile("Start sweep")).wait_for()
    wait_idle(page)
    # Tiny trials: 20 digits a class at 16 px, one epoch (the defaults are for a real first sweep).
    _set_number(page, "sweep.form.base.data.image_size", 16)
    _set_number(page, "sweep.form.base.data.max_per_class", 20)
    _set_number(page, "sweep.form.base.train.epochs", 1)
    _set_number(page, "sweep.form.high.model.width", 16)
    shot(page, "sweeps-form")
    _keep("sweeps-form")
    page.get_by_role("button", name=re.compile("Start sweep")).click()
    page.wait_for_url(re.compile(r"sweep=sweep-"))
    page.get_by_text(re.compile(r"trials done")).first.wait_for()
    page.get_by_text("6/6 trials done").first.wait_for(timeout=SWEEP_TIMEOUT_MS)
    page.get_by_text("Pareto front: no other trial").first.wait_for(timeout=30_000)
    wait_idle(page)
    page.wait_for_timeout(1500)
    shot(page, "sweeps-front")
    _keep("sweeps-front")

    workspace = Workspace(home)
    [sweep] = SweepStore(workspace).list()
    trials = SweepStore(workspace).trials(sweep.id)
    assert len(trials) == 6 and all(t.state == "completed" for t in trials), [(t.state, t.error) for t in trials]
    objectives = sweep.spec["objectives"]
    assert list(objectives) == ["val_accuracy", "int8_latency_ms"]
    front = [t for t in trials if t.pareto]
    assert front and all(not any(dominates(o.values, t.values, objectives) for o in trials) for t in front)

    # One click on a point of the front makes its run the chosen one; one more opens its Export page.
    chart = page.locator(".js-plotly-plot").first
    chart.scroll_into_view_if_needed()
    # The front's trace is drawn last, its points in the order of the horizontal axis.
    first_on_front = sorted(front, key=lambda t: (t.values["val_accuracy"], t.values["int8_latency_ms"]))[0]
    chart.locator(".scatterlayer .trace").last.locator(".points path").first.click(force=True)
    wait_idle(page)
    page.wait_for_timeout(1500)
    chosen = page.locator(".st-key-sweeps-chosen input").input_value()
    assert chosen.startswith(f"#{first_on_front.number} ") and first_on_front.run_id in chosen, chosen
    shot(page, "sweeps-chosen")
    _keep("sweeps-chosen")
    page.get_by_role("link", name=re.compile("Export the chosen one")).click()
    page.wait_for_url(re.compile(rf"/export\?run={first_on_front.run_id}"))
    wait_idle(page)
    assert first_on_front.run_id in page.locator('[data-testid="stSelectbox"] input').first.input_value()
