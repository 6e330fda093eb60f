"""The password gate on a real server: every page asks, except the demo link of a run published from the
Export page.
"""

from __future__ import annotations

import pytest

from engine.config import RunConfig
from engine.runfolder import RunFolder
from engine.store import COMPLETED, Workspace
from tests.e2e.conftest import start_server, stop_server
from tests.e2e.helpers import shot

pytestmark = pytest.mark.e2e
PASSWORD = "open sesame"


def test_gate_asks_everywhere_but_a_published_demo_link(tmp_path, browser, page, monkeypatch):
    home = tmp_path / "workspace"
    workspace = Workspace(home)
    run = workspace.create_run(RunConfig.from_dict({"name": "shared"}))
    workspace.finish_job(workspace.claim_next_job(limit=10).id, COMPLETED)
    # Export and Demo list runs with a model file; neither reads it until there is work to do.
    RunFolder(workspace, run.id).model_file.write_bytes(b"")
    monkeypatch.setenv("APERTURE_PASSWORD", PASSWORD)
    process, url = start_server(home)
    try:
        password = page.get_by_label("Password", exact=True)
        for path in ("/", "/runs", f"/demo?run={run.id}"):
            page.goto(url + path)
            password.wait_for()
            assert page.get_by_text("No finished run").count() == 0
        page.goto(url + "/runs")
        password.wait_for()
        password.fill("wrong")
        page.get_by_role("button", name="Open").click()
        page.get_by_text("Wrong password.").wait_for()
        password.fill(PASSWORD)
        page.get_by_role("button", name="Open").click()
        page.get_by_text("Every training run in this workspace").wait_for()  # unlocked: the page asked for opens
        assert password.count() == 0

        # Publish from the Export page (reached through the sidebar: a reload would start a new session).
        page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name="Export").click()
        toggle = page.get_by_text("Publish the demo read-only (opens by link without the password)")
        toggle.wait_for()
        toggle.click()
        link = page.locator('[data-testid="stCode"]').filter(has_text=f"/demo?run={run.id}")
        link.wait_for()
        assert link.inner_text().strip() == f"{url}/demo?run={run.id}" and RunFolder(workspace, run.id).published
        toggle.scroll_into_view_if_needed()
        shot(page, "gate-01-export-published")

        stranger = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()  # no password typed
        try:
            stranger.goto(link.inner_text().strip())
            stranger.get_by_text("to demo").or_(stranger.get_by_text("Upload an image")).first.wait_for()
            assert stranger.get_by_label("Password", exact=True).count() == 0
            stranger.goto(url + "/runs")  # the rest stays closed in the same browser
            stranger.get_by_label("Password", exact=True).wait_for()

            toggle.click()  # withdrawn: the link asks again
            link.wait_for(state="detached")
            assert not RunFolder(workspace, run.id).published
            stranger.goto(f"{url}/demo?run={run.id}")
            stranger.get_by_label("Password", exact=True).wait_for()
        finally:
            stranger.context.close()
    finally:
        stop_server(process)
