"""Export and Demo in a real browser: export a run from the Export page, download an artifact, open the
Demo by its shareable URL, upload an image, see a prediction and the Grad-CAM overlay.

A tiny digits run is trained through the CLI against the server's workspace. Screenshots go to
test-artifacts/screenshots/export-*.png and demo-*.png.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from tests.e2e.helpers import DIGITS_DEMO, shot, train, wait_idle

pytestmark = pytest.mark.e2e

EXPORT_TIMEOUT_MS = 240_000








def test_export_then_demo_by_url(server, page, tmp_path):
    url, home = server
    run_id = train(home, *DIGITS_DEMO)

    page.goto(f"{url}/export?run={run_id}")
    page.locator("h1").filter(has_text="Export").wait_for()
    page.get_by_text("has not been exported yet").wait_for()
    shot(page, "export-01-form")

    page.get_by_role("button", name=re.compile("Export and check parity")).click()
    page.get_by_text(re.compile(r"Parity on \d+ test images")).wait_for(timeout=EXPORT_TIMEOUT_MS)
    wait_idle(page)
    page.get_by_text("Size vs accuracy").first.wait_for()
    shot(page, "export-02-parity")

    with page.expect_download() as download_info:
        page.locator(".st-key-export-download-int8 button").click()
    download = download_info.value
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    assert saved.name == "model_int8.tflite" and saved.stat().st_size > 1000
    page.get_by_text("Model card preview").scroll_into_view_if_needed()
    shot(page, "export-03-downloads")

    # The shareable demo: no sidebar navigation, read-only.
    page.goto(f"{url}/demo?run={run_id}")
    page.locator("h1").filter(has_text="Digits demo").wait_for()
    assert page.locator('[data-testid="stSidebarNav"]').count() == 0
    shot(page, "demo-01-shared-link")

    from engine import export
    from engine.store import Workspace

    workspace = Workspace(home)
    data = export.load_run_split(workspace, run_id)
    image = np.asarray(data["images"][data["test_indices"][3]])
    png = tmp_path / "digit.png"
    Image.fromarray(image).resize((96, 96), Image.Resampling.NEAREST).save(png)
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(png))
    page.get_by_text("Where the model looked (Grad-CAM)").wait_for(timeout=120_000)
    page.get_by_text(re.compile("The exported model and the Keras model (agree|disagree)")).wait_for(timeout=60_000)
    wait_idle(page)
    prediction = page.locator('[data-testid="stMetric"]').filter(has_text="Prediction")
    assert prediction.locator('[data-testid="stMetricValue"]').inner_text().strip() in data["class_names"]
    shot(page, "demo-02-prediction")
