"""Explain in a real browser: from the Evaluate gallery's detail view to the Explain page, Grad-CAM inline,
then SHAP and LIME on request, each with its seconds and faithfulness; then the batch mode (the most
confident mistakes explained by a job, kept over a reload, each opening the single-image view).

A tiny digits run is trained through the CLI against the server's workspace. Screenshots go to
test-artifacts/screenshots/explain-*.png.
"""

from __future__ import annotations

import re

import pytest

from tests.e2e.helpers import DIGITS_DEMO, shot, train, wait_idle


pytestmark = pytest.mark.e2e


def test_gallery_to_explain_then_shap_and_lime(server, page):
    url, home = server
    run_id = train(home, *DIGITS_DEMO)

    page.goto(f"{url}/evaluate?run={run_id}")
    page.locator("h1").filter(has_text="Evaluate").wait_for()
    page.get_by_role("tab", name="Mistakes").click()
    page.get_by_role("button", name=re.compile("Details")).first.click()
    link = page.get_by_role("link", name=re.compile("Explain this prediction"))
    link.wait_for()
    link.click()

    page.locator("h1").filter(has_text="Explain").wait_for()
    assert "image=" in page.url and f"run={run_id}" in page.url
    page.get_by_role("button", name=re.compile("Run SHAP and LIME")).wait_for(timeout=120_000)
    wait_idle(page)
    assert page.get_by_text(re.compile(r"deletion AUC")).count() == 1
    assert page.get_by_text(re.compile("Not run yet")).count() == 2
    shot(page, "explain-01-gradcam")

    page.get_by_role("button", name=re.compile("Run SHAP and LIME")).click()
    page.get_by_text("Not run yet").first.wait_for(state="detached", timeout=120_000)
    wait_idle(page)
    assert page.get_by_text(re.compile(r"deletion AUC")).count() == 3
    assert page.get_by_text(re.compile("most faithful|caution|beats chance")).count() >= 1
    shot(page, "explain-02-all-methods")

    # Batch mode: the 3 most confident mistakes explained by a Grad-CAM job, then shown from the run folder.
    page.get_by_role("radio", name="Most confident mistakes").click()
    page.wait_for_url(re.compile(r"view=mistakes"))
    count = page.locator(".st-key-explain-batch-count input")
    count.fill("3")
    count.press("Enter")
    wait_idle(page)
    page.get_by_role("button", name="Explain 3 mistakes").click()
    page.get_by_text("The 3 most confident mistakes").wait_for(timeout=120_000)
    page.get_by_text(re.compile("Explained with Grad-CAM")).wait_for()
    wait_idle(page)
    cards = page.locator('[class*="st-key-explain-batch-card-"]')
    assert cards.count() == 3 and page.get_by_text(re.compile("beats random|no better than random")).count() == 3
    assert page.get_by_role("button", name=re.compile("Open in the single-image view")).count() == 3
    page.locator('[data-testid="stDataFrame"] canvas').first.wait_for()
    page.wait_for_timeout(1500)  # the summary table paints its canvas after the run ends
    shot(page, "explain-03-batch")

    page.reload()  # the batch is files in the run folder: it survives a reload
    page.get_by_text("The 3 most confident mistakes").wait_for(timeout=60_000)
    wait_idle(page)
    page.locator(".st-key-explain-batch-open-1 button").first.click()  # the top mistake, in the single-image view
    page.get_by_role("button", name=re.compile("Run SHAP and LIME")).wait_for(timeout=120_000)
    assert "image=" in page.url and "view=" not in page.url
