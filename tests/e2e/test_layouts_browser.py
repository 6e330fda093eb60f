"""Browser: the Data page on a split-folder zip shows the layout, the given splits and the decode progress;
the Train page shows the chosen base's weights status (Get / Import)."""

from __future__ import annotations

import os
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.e2e.helpers import SHOTS, shot, wait_idle

EXTRA_SHOTS = os.environ.get("APERTURE_SHOTS14")  # also copy the screenshots here (e.g. /tmp/shots14)


def _shot(page, name: str) -> None:
    shot(page, name)
    if EXTRA_SHOTS:
        Path(EXTRA_SHOTS).mkdir(parents=True, exist_ok=True)
        shutil.copy(SHOTS / f"{name}.png", Path(EXTRA_SHOTS) / f"{name}.png")


def _clothes_zip(path: Path, per_class=(160, 30, 30)) -> Path:
    """train/, validation/, test/ of 3 classes of 400x300 JPEGs (a decode of a few seconds at 224 px).

    The texture is coarse (noise upscaled 10x), so the zip is about 7 MB: a 30 MB one of fine noise took most of
    a minute to upload and scan under CI load.
    """
    rng = np.random.default_rng(0)
    colours = {"coat": 0, "shirt": 1, "sneaker": 2}
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for split, count in zip(("train", "validation", "test"), per_class):
            for name, channel in colours.items():
                for i in range(count if name != "sneaker" or split != "train" else count // 4):
                    pixels = rng.integers(0, 90, (30, 40, 3), dtype=np.uint8)
                    pixels[:, :, channel] += 150
                    buffer = path.parent / "tmp.jpg"
                    Image.fromarray(pixels).resize((400, 300), Image.BILINEAR).save(buffer, quality=85)
                    archive.write(buffer, f"clothes/{split}/{name}/{name}_{i}.jpg")
    return path


@pytest.mark.slow
def test_data_page_on_a_split_folder_zip_and_the_train_weights_status(server, page, tmp_path):
    url, _home = server
    archive = _clothes_zip(tmp_path / "clothes.zip")
    page.goto(url)
    page.get_by_text("Upload a zip").first.click()
    wait_idle(page)
    size = page.get_by_label("Image size (px)")
    size.fill("224")
    size.press("Enter")
    wait_idle(page)
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(archive))
    # The scan shows before anything is decoded; the progress bar only if the decode outlasts its first second.
    page.get_by_text(re.compile("Decoding into the cache|images decoded at 224")).first.wait_for(timeout=150_000)
    assert page.get_by_text("split folders").first.is_visible()
    assert page.get_by_text("No test split").count() == 0  # all three splits given
    if page.get_by_text("Decoding into the cache").count():
        _shot(page, "layouts-01-decoding")
    page.get_by_text("images decoded at 224×224").first.wait_for(timeout=120_000)
    wait_idle(page)
    body = page.locator("body").inner_text()
    assert "train 520" not in body  # the split sizes are the given ones
    assert "train 360 · validation 90 · test 90" in body
    assert "imbalanced" in body
    _shot(page, "layouts-02-decoded")

    page.locator(".st-key-data-use button").click()
    page.get_by_text("Start training").first.wait_for()
    wait_idle(page)
    page.get_by_role("combobox", name="Architecture").click()
    page.get_by_text("Transfer learning (pretrained base)").click()
    wait_idle(page)
    page.get_by_text("No ImageNet weights for mobilenet_v2").first.wait_for()
    page.get_by_text("Get mobilenet_v2 weights").first.scroll_into_view_if_needed()
    _shot(page, "layouts-03-train-weights")
