"""End to end in a real browser: Data -> Train -> a live run on Runs, reload, completion, cancel.

Starts `streamlit run dashboard/app.py` on a free loopback port with its own workspace and
drives Debian's Chromium through Playwright. Screenshots go to test-artifacts/screenshots/.
"""

from __future__ import annotations

import re
import statistics
import time

import pytest

from tests.e2e.helpers import shot, wait_idle

pytestmark = pytest.mark.e2e

RUN_TIMEOUT_MS = 240_000




def _title(page, text: str):
    return page.locator("h1").filter(has_text=re.compile(rf"\b{text}$"))




def _progress(page) -> float:
    value = page.get_by_role("progressbar").first.get_attribute("aria-valuenow")
    return float(value or 0)


def _wait_progress_above(page, value: float) -> None:
    """Waits until the live view's progress bar shows more than `value` (0-100)."""
    page.wait_for_function(
        """(value) => {
            const bar = document.querySelector('[role="progressbar"]');
            return bar && parseFloat(bar.getAttribute('aria-valuenow')) > value;
        }""", arg=value, timeout=RUN_TIMEOUT_MS)


def _nav(page, label: str) -> float:
    """Clicks a sidebar page link; returns seconds until that page's title shows."""
    start = time.perf_counter()
    page.locator('[data-testid="stSidebarNav"] a').filter(has_text=re.compile(rf"^\W*\w*\s*{label}$")).first.click()
    _title(page, label).wait_for()
    return time.perf_counter() - start


def _set_number(page, key: str, value: int) -> None:
    field = page.locator(f".st-key-{key} input")
    field.fill(str(value))
    field.press("Enter")
    wait_idle(page)


def _start_run(page, epochs: int) -> str:
    _set_number(page, "cfg-train-epochs", epochs)
    page.get_by_role("button", name=re.compile("Start training")).click()
    _title(page, "Runs").wait_for()
    page.wait_for_url(re.compile(r"run="))
    return re.search(r"run=([\w-]+)", page.url).group(1)


def _wait_status(page, status: str, timeout_ms: int = RUN_TIMEOUT_MS) -> None:
    # The status badge; the table's hidden accessibility cells hold the same word.
    page.get_by_text(re.compile(rf"\b{status}$")).filter(visible=True).first.wait_for(timeout=timeout_ms)


def test_train_digits_watch_reload_and_cancel(server, page):
    url, home = server

    # Data: the built-in digits load, with counts and samples.
    page.goto(url)
    _title(page, "Data").wait_for()
    page.get_by_text("1,797").first.wait_for()
    page.get_by_text("Samples per class").wait_for()
    shot(page, "01-data-digits")

    # Augmentation preview renders in the background and then appears.
    page.locator(".st-key-data-aug-flip label").first.click()
    page.get_by_text("12 random draws of the augmentation").wait_for(timeout=90_000)
    page.get_by_text("Augmentation preview").scroll_into_view_if_needed()
    shot(page, "02-data-augment-preview")

    # "Use this data" -> Train, with the source carried over.
    page.get_by_role("button", name=re.compile("Use this data")).click()
    _title(page, "Train").wait_for()
    assert page.locator(".st-key-cfg-augment-flip input").is_checked()
    page.get_by_text(re.compile(r"^[\d,]+$")).locator("xpath=ancestor::*[@data-testid='stMetric']").first.wait_for(
        timeout=90_000)  # the parameter count arrives from its subprocess
    page.locator(".st-key-cfg-augment-flip label").first.click()  # flipped digits are not digits
    wait_idle(page)
    shot(page, "03-train-form")

    # Start a run long enough to watch (with a warm worker, 6 epochs of digits end within seconds here, before
    # a reloaded page is back): Runs shows it live.
    run_id = _start_run(page, epochs=30)
    _wait_progress_above(page, 0.0)
    before = _progress(page)
    assert before < 100
    shot(page, "04-runs-running")

    # Reload mid-run: same run, still progressing.
    page.reload()
    _title(page, "Runs").wait_for()
    assert f"run={run_id}" in page.url
    _wait_progress_above(page, before)
    wait_idle(page)
    shot(page, "05-runs-after-reload")

    # It completes with a test accuracy.
    _wait_status(page, "Completed")
    test_metric = page.locator('[data-testid="stMetric"]').filter(has_text="Test accuracy")
    test_metric.get_by_text(re.compile(r"\d+\.\d+%")).wait_for()
    accuracy = float(test_metric.get_by_text(re.compile(r"\d+\.\d+%")).inner_text().rstrip("%"))
    assert accuracy > 50, accuracy
    shot(page, "06-runs-completed")

    # A second, longer run: measure page switches and reruns while it trains, then cancel it.
    _nav(page, "Train")
    second = _start_run(page, epochs=200)
    assert second != run_id
    _wait_progress_above(page, 0.0)
    switches, reruns = [], []
    for _ in range(3):
        for label in ("Data", "Train", "Runs"):
            switches.append(_nav(page, label))
    search = page.locator(".st-key-runs-filter-text input")
    for i in range(4):
        start = time.perf_counter()
        search.fill(f"no-such-run-{i}")
        search.press("Enter")
        page.get_by_text("No run matches these filters.").wait_for()
        reruns.append(time.perf_counter() - start)
        start = time.perf_counter()
        search.fill("")
        search.press("Enter")
        page.locator("[data-testid=stDataFrame]").first.wait_for()
        reruns.append(time.perf_counter() - start)
    print(f"\npage switch while training: median {statistics.median(switches):.3f} s, "
          f"max {max(switches):.3f} s over {len(switches)}")
    print(f"rerun while training: median {statistics.median(reruns):.3f} s, max {max(reruns):.3f} s "
          f"over {len(reruns)}")

    assert f"run={second}" in page.url
    page.get_by_role("button", name=re.compile("Cancel run")).click()
    page.get_by_text(re.compile(r"^Cancel .+\? It stops after the current step")).wait_for()
    shot(page, "07-runs-cancel-confirm")
    page.get_by_role("button", name=re.compile("Yes, cancel it")).click()
    _wait_status(page, "Cancelled", timeout_ms=90_000)
    shot(page, "08-runs-cancelled")

    from engine.store import Workspace

    statuses = {run.id: run.status for run in Workspace(home).list_runs()}
    assert statuses == {run_id: "completed", second: "cancelled"}


def test_server_restart_mid_run_loses_nothing(restartable_server, page):
    """The run started from the browser keeps training while the server is down, and the new server shows it live."""
    from engine.store import Workspace

    server = restartable_server
    page.goto(server.url + "/train")
    _title(page, "Train").wait_for()
    run_id = _start_run(page, epochs=200)
    _wait_progress_above(page, 0.0)
    workspace = Workspace(server.home)
    deadline = time.time() + 120
    while workspace.get_run(run_id).epochs_done < 1 and time.time() < deadline:
        time.sleep(0.5)
    before = workspace.get_run(run_id).epochs_done
    assert before >= 1

    server.restart()  # SIGTERM to the server's process group; the job lives in its own session
    assert workspace.get_run(run_id).status == "running"
    page.reload()
    _title(page, "Runs").wait_for()
    assert f"run={run_id}" in page.url
    page.wait_for_function(
        """(before) => [...document.querySelectorAll('[data-testid="stMetric"]')].some(
            m => /Epoch/.test(m.innerText) && parseInt(m.innerText.split('\\n').pop()) > before)""",
        arg=before, timeout=RUN_TIMEOUT_MS)
    _wait_status(page, "Running")
    shot(page, "09-runs-after-server-restart")
    assert workspace.get_run(run_id).epochs_done > before
