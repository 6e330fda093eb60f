"""Browser-test fixtures shared by every tests/e2e module: a real Streamlit server with its own
workspace, Debian's Chromium through Playwright, and a 1400x2000 page.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("APERTURE_CHROMIUM", "/usr/bin/chromium")
SHOTS = ROOT / "test-artifacts" / "screenshots"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run"]
RUN_TIMEOUT_MS = 240_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(home: Path, port: int | None = None) -> tuple[subprocess.Popen, str]:
    """Starts `streamlit run dashboard/app.py` on a loopback port for workspace `home`; waits until healthy."""
    port = port or _free_port()
    env = dict(os.environ, APERTURE_HOME=str(home), TF_CPP_MIN_LOG_LEVEL="2")
    log_path = home.parent / f"streamlit-{port}.log"
    _SERVER_LOGS[:] = [log_path, home / "model_server.log"]
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "dashboard/app.py", "--server.headless", "true",
             "--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            if urllib.request.urlopen(url + "/_stcore/health", timeout=2).read().decode() == "ok":
                return process, url
        except OSError:
            pass
        if process.poll() is not None or time.time() > deadline:
            process.kill()
            pytest.fail(f"streamlit did not start: {log_path.read_text()[-2000:]}")
        time.sleep(0.3)


def stop_server(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real Streamlit server with its own workspace; yields (base url, workspace root)."""
    home = tmp_path_factory.mktemp("e2e") / "workspace"
    home.mkdir()
    process, url = start_server(home)
    try:
        yield url, home
    finally:
        _stop_jobs(home)
        stop_server(process)


class RestartableServer:
    """A server the test may restart on the same port and workspace, as an operator would."""

    def __init__(self, home: Path):
        self.home = home
        self.process, self.url = start_server(home)

    def restart(self) -> None:
        stop_server(self.process)
        self.process, _ = start_server(self.home, port=int(self.url.rsplit(":", 1)[1]))


@pytest.fixture
def restartable_server(tmp_path):
    home = tmp_path / "workspace"
    home.mkdir()
    server = RestartableServer(home)
    try:
        yield server
    finally:
        _stop_jobs(home)
        stop_server(server.process)


def _stop_jobs(home: Path) -> None:
    """Cancels whatever the test left running so no training outlives it."""
    from engine import jobs
    from engine.store import ACTIVE, Workspace

    workspace = Workspace(home)
    for run in workspace.list_runs():
        if run.status in ACTIVE:
            jobs.delete(run.id, workspace, timeout=20)
    (home / jobs.STANDBY_FILE).unlink(missing_ok=True)  # the warm standby worker exits when its pid file goes


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        message = f"chromium not found at {CHROMIUM} (apt-get install chromium)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)  # CI must never silently skip the browser tests
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM if Path(CHROMIUM).exists()
                                             else shutil.which("chromium"), headless=True, args=LAUNCH_ARGS)
        yield browser
        browser.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    item.stash.setdefault(_FAILED, False)
    if report.when == "call" and report.failed:
        item.stash[_FAILED] = True
        for log in _SERVER_LOGS:  # what the servers said: a CI failure can then be read from CI's output alone
            if log.exists():
                report.sections.append((f"tail of {log.name}", log.read_text(errors="replace")[-4000:]))
    return report


_FAILED = pytest.StashKey[bool]()
_SERVER_LOGS: list[Path] = []  # the newest Streamlit server's log and its model server's


@pytest.fixture
def page(browser, request):
    """A fresh page; a failed test leaves test-artifacts/screenshots/FAILED-<test>.png (what the page showed)."""
    context = browser.new_context(viewport={"width": 1400, "height": 2000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    if request.node.stash.get(_FAILED, False):
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"FAILED-{request.node.name}.png"), full_page=True)
    context.close()
