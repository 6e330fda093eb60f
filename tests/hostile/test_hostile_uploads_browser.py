"""Hostile single-image uploads on the Demo and Explain pages, through a real browser.

One tiny digits run is trained once; the two pages stay open in two windows and each file is uploaded to
both at once, over the previous one. A bad file must give its specific message naming the file; an odd but
valid one must give a prediction; neither may show a traceback.
Screenshots: test-artifacts/screenshots/hostile-upload-*.png.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image

from dashboard.components.uploads import MAX_IMAGE_MB
from tests.helpers import images as files
from tests.e2e import conftest as e2e
from tests.e2e.helpers import DIGITS_DEMO, shot, train

pytestmark = pytest.mark.e2e
# The e2e fixtures (a conftest applies only to its own folder): a real server, and Chromium, which must
# exist when CI=true (the fixture fails rather than skips).
browser, server = e2e.browser, e2e.server

UPLOAD_INPUT = '[data-testid="stFileUploaderDropzoneInput"]'
ERROR = '[data-testid="stAlertContentError"]'
RESULT_TIMEOUT_MS = 120_000  # the first prediction loads TensorFlow in the server
GREEN = (20, 200, 20)
# The last thing each page draws for a valid image.
DONE = {"demo": "Where the model looked (Grad-CAM)", "explain": "Faithfulness: pixels are greyed out"}


@dataclass(frozen=True)
class Case:
    id: str
    name: str
    data: bytes
    message: str | None = None  # None: a valid image, expect a prediction
    top: tuple | None = None  # the colour the model sees at the top (and, below, the bottom) of the image
    bottom: tuple | None = None


# Every valid file looks different to the model: the test tells a new result from the last by its image.
BAD = [
    Case("zero-byte", "empty.png", b"", "is empty (0 bytes)"),
    Case("truncated-jpeg", "cut.jpg", files.truncated("JPEG"), "is cut short: the picture data ends early"),
    Case("truncated-png", "cut.png", files.truncated("PNG"), "is cut short: the picture data ends early"),
    Case("not-an-image", "notes.jpg", files.NOT_AN_IMAGE, "is not an image, whatever its name says"),
    Case("markdown-html-name", "**bold** <b>x</b> [a](javascript:x).png", files.NOT_AN_IMAGE,
         "is not an image, whatever its name says"),
    Case("decompression-bomb", "bomb.png", files.png_claiming_size(100_000, 100_000),
         "is too large to open safely (10,000,000,000 pixels, limit 64,000,000)"),
    Case("too-many-pixels", "wide.png", files.png_claiming_size(9000, 9000),
         "is too large to open safely (9000x9000 pixels, limit 64,000,000)"),
]
VALID = [
    Case("cmyk-jpeg", "print.jpg", files.cmyk_jpeg(), top=files.RED),
    Case("ycck-jpeg", "photoshop.jpg", files.ycck_jpeg((255, 0, 255, 0)), top=GREEN),
    Case("16-bit-png", "deep.png", files.deep_png()),
    Case("palette-png", "palette.png", files.palette_png()),
    Case("rgba-png", "alpha.png", files.rgba_png()),
    Case("animated-gif", "anim.gif", files.animated("GIF", first=files.RED, second=files.BLUE), top=files.RED),
    Case("animated-webp", "anim.webp", files.animated("WEBP", first=files.BLUE, second=files.RED), top=files.BLUE),
    Case("exif-rotated", "rotated.jpg", files.exif_rotated_jpeg(), top=files.RED, bottom=files.BLUE),
    Case("one-pixel", "dot.png", files.one_pixel_png((1, 2, 3))),
    Case("unicode-space-name", "café 猫 Ünïcode (1).png", files.one_pixel_png((200, 200, 200))),
    Case("newline-name", "two\nlines.png", files.one_pixel_png((90, 90, 90))),
]
PAGES = ("demo", "explain")


class Tab:
    """One browser page on the test server showing the Demo or the Explain page, with its own session."""

    def __init__(self, page, url: str, run_id: str, where: str):
        self.page, self.where = page, where
        page.goto(f"{url}/{where}?run={run_id}")
        if where == "explain":
            page.locator("h1").filter(has_text="Explain").wait_for()
            page.locator(".st-key-explain-source").get_by_role("radio", name="Upload", exact=True).click()
        page.locator(UPLOAD_INPUT).wait_for(state="attached")
        self.settled()

    def upload(self, files, **kwargs) -> str | None:
        """Puts `files` into the uploader (over the previous file); the src of the image shown before."""
        first = self.page.locator('[data-testid="stImage"] img').first
        before = first.get_attribute("src") if first.count() else None
        self.page.locator(UPLOAD_INPUT).set_input_files(files, **kwargs)
        return before

    def settled(self, new_image_after: str | None | bool = False, timeout: float = 30_000) -> None:
        """Waits until the script run is over: no element left over from the previous run (Streamlit marks
        them stale until the run draws or drops them). With `new_image_after` (the src of the image shown
        before, or None), also until the first image on the page is a new one and the page's last element
        (DONE) is drawn.
        """
        self.page.wait_for_function("""([wantImage, before, done]) => {
            if (document.querySelector('[data-stale="true"]')) return false;
            if (!wantImage) return true;
            const image = document.querySelector('[data-testid="stImage"] img');
            return !!image && image.getAttribute('src') !== before && document.body.innerText.includes(done);
        }""", arg=[new_image_after is not False, new_image_after or None, DONE[self.where]], timeout=timeout,
            polling=100)

    def assert_no_traceback(self) -> None:
        exceptions = self.page.locator('[data-testid="stException"]')
        assert exceptions.count() == 0, exceptions.first.inner_text()


@pytest.fixture(scope="module")
def tabs(browser, server):
    """The Demo and the Explain page of one trained run, each in its own window (so neither is a background
    tab) and session: a file is uploaded to both at once and the server works on the two in parallel.
    """
    url, home = server
    run_id = train(home, *DIGITS_DEMO)
    contexts = [browser.new_context(viewport={"width": 1400, "height": 1200}) for _ in PAGES]
    try:
        pages = [context.new_page() for context in contexts]
        for page in pages:
            page.set_default_timeout(30_000)
        yield [Tab(page, url, run_id, where) for page, where in zip(pages, PAGES)]
    finally:
        for context in contexts:
            context.close()


def mime_of(name: str) -> str:
    return {"jpg": "image/jpeg", "gif": "image/gif", "webp": "image/webp"}.get(name.rsplit(".", 1)[-1], "image/png")


def received(name: str) -> str:
    """The file name as the server gets it: the browser percent-encodes newlines and quotes in form uploads."""
    return name.replace("\r", "%0D").replace("\n", "%0A").replace('"', "%22")


def seen_colours(tab: Tab) -> tuple[np.ndarray, np.ndarray]:
    """The colours at the top and bottom middle of the first image on the page (what the model sees)."""
    png = tab.page.locator('[data-testid="stImage"] img').first.screenshot()
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=int)
    height, width = pixels.shape[:2]
    return pixels[height // 8, width // 2], pixels[-height // 8, width // 2]


def assert_message(tab: Tab, case: Case) -> None:
    page = tab.page
    # The file is named literally: no Markdown, no HTML.
    page.locator(ERROR).filter(has_text=f"{received(case.name)} {case.message}").wait_for(timeout=RESULT_TIMEOUT_MS)
    tab.settled()
    assert page.locator(ERROR).count() == 1 and page.locator('[data-testid="stImage"]').count() == 0
    if case.id in ("truncated-jpeg", "markdown-html-name"):
        shot(page, f"hostile-upload-{tab.where}-{case.id}")


def assert_prediction(tab: Tab, case: Case, before: str | None) -> None:
    page = tab.page
    tab.settled(new_image_after=before, timeout=RESULT_TIMEOUT_MS)
    assert page.locator(ERROR).count() == 0
    if tab.where == "demo":
        assert page.get_by_text("Where the model looked (Grad-CAM)").count() == 1
        value = page.locator('[data-testid="stMetric"]').filter(has_text="Prediction").locator(
            '[data-testid="stMetricValue"]').inner_text().strip()
    else:
        page.get_by_role("button", name="Run SHAP and LIME").wait_for()  # its code may still be loading
        assert page.locator('[data-testid="stImageCaption"]').first.inner_text() == received(case.name)
        # The explained class, by default the predicted one.
        value = re.search(r"Grad-CAM · class (\S+)", page.locator(".st-key-explain-card-gradcam").inner_text()).group(1)
    assert value in [str(d) for d in range(10)], value
    if case.top is not None or case.bottom is not None:
        top, bottom = seen_colours(tab)
        for seen, expected in ((top, case.top), (bottom, case.bottom)):
            if expected is not None:
                assert np.abs(seen - expected).max() < 60, (tab.where, case.id, seen, expected)
    if case.id == "exif-rotated":
        shot(page, f"hostile-upload-{tab.where}-valid-{case.id}")


@pytest.mark.parametrize("case", BAD + VALID, ids=[c.id for c in BAD + VALID])
def test_an_uploaded_file_gets_its_message_or_a_prediction_on_demo_and_explain(tabs, case):
    befores = [tab.upload({"name": case.name, "mimeType": mime_of(case.name), "buffer": case.data}) for tab in tabs]
    for tab, before in zip(tabs, befores):
        if case.message is not None:
            assert_message(tab, case)
        else:
            assert_prediction(tab, case, before)
        tab.assert_no_traceback()


def test_an_image_over_the_upload_limit_is_refused_by_the_browser(tabs, tmp_path):
    # Streamlit refuses it in the browser (it never reaches the server): a red mark on the file, and its
    # message on hover.
    big = tmp_path / "enormous.jpg"
    with open(big, "wb") as out:
        out.write(b"\xff\xd8\xff")
        out.truncate(MAX_IMAGE_MB * 1024**2 + 1)  # sparse: nothing is allocated
    for tab in tabs:
        tab.upload(str(big))
        tab.page.locator('[data-testid="stFileChip"]').filter(has_text="enormous.jpg").hover()
        tab.page.get_by_text(f"File must be {MAX_IMAGE_MB:.1f}MB or smaller.").last.wait_for(state="visible")
        shot(tab.page, f"hostile-upload-{tab.where}-too-big")
        tab.assert_no_traceback()
