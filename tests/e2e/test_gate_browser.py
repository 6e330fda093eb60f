"""The password gate on a real server: every page asks, except a published run's demo link."""

from __future__ import annotations

import pytest

from engine.config import RunConfig
from engine.store import COMPLETED, Workspace
from tests.e2e.conftest import start_server, stop_server

pytestmark = pytest.mark.e2e
PASSWORD = "open sesame"


def test_gate_asks_everywhere_but_a_published_demo_link(tmp_path, page, monkeypatch):
    home = tmp_path / "workspace"
    workspace = Workspace(home)
    run = workspace.create_run(RunConfig.from_dict({"name": "shared"}))
    workspace.finish_job(workspace.claim_next_job(limit=10).id, COMPLETED)
    monkeypatch.setenv("APERTURE_PASSWORD", PASSWORD)
    process, url = start_server(home)
    try:
        password = page.get_by_label("Password", exact=True)
        for path in ("/", "/runs", f"/demo?run={run.id}"):
            page.goto(url + path)
            password.wait_for()
            assert page.get_by_text("No finished run").count() == 0
        workspace.set_published(run.id)
        page.goto(f"{url}/demo?run={run.id}")
        page.get_by_text("to demo").or_(page.get_by_text("Upload an image")).first.wait_for()
        assert password.count() == 0
        page.goto(url + "/runs")  # the rest stays closed in the same browser
        password.wait_for()
        password.fill("wrong")
        page.get_by_role("button", name="Open").click()
        page.get_by_text("Wrong password.").wait_for()
        password.fill(PASSWORD)
        page.get_by_role("button", name="Open").click()
        page.get_by_text("Every training run in this workspace").wait_for()  # unlocked: the page asked for opens
        assert password.count() == 0
    finally:
        stop_server(process)
