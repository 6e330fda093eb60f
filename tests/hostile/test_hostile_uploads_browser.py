"""Hostile single-image uploads on the Demo and Explain pages, through a real browser.

One tiny digits run is trained once; one page is reused and each file is uploaded in turn over the previous
one. A bad file must give its specific message naming the file; an odd but valid one must give a prediction;
neither may show a traceback. Screenshots: test-artifacts/screenshots/hostile-upload-*.png.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image

from dashboard.components.uploads import MAX_IMAGE_MB
from tests import image_files as files
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
CASES = [(where, case) for where in ("demo", "explain") for case in BAD + VALID]


class Tab:
    """One browser page on the test server, moved between the Demo and Explain pages as the cases need."""

    def __init__(self, page, url: str, run_id: str):
        self.page, self.url, self.run_id, self.where = page, url, run_id, None

    def open(self, where: str) -> None:
        if self.where == where:
            return
        page = self.page
        page.goto(f"{self.url}/{where}?run={self.run_id}")
        if where == "explain":
            page.locator("h1").filter(has_text="Explain").wait_for()
            page.locator(".st-key-explain-source").get_by_role("radio", name="Upload", exact=True).click()
        page.locator(UPLOAD_INPUT).wait_for(state="attached")
        self.where = where
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
            const status = document.querySelector('[data-testid="stStatusWidget"]');
            if (status && /Running|Connecting/.test(status.innerText)) return false;
            if (!wantImage) return true;
            const image = document.querySelector('[data-testid="stImage"] img');
            return !!image && image.getAttribute('src') !== before && document.body.innerText.includes(done);
        }""", arg=[new_image_after is not False, new_image_after or None, DONE[self.where]], timeout=timeout)

    def assert_no_traceback(self) -> None:
        exceptions = self.page.locator('[data-testid="stException"]')
        assert exceptions.count() == 0, exceptions.first.inner_text()


@pytest.fixture(scope="module")
def tab(browser, server):
    url, home = server
    run_id = train(home, *DIGITS_DEMO)
    context = browser.new_context(viewport={"width": 1400, "height": 1200})
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield Tab(page, url, run_id)
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


@pytest.mark.parametrize(("where", "case"), CASES, ids=[f"{w}-{c.id}" for w, c in CASES])
def test_an_uploaded_file_gets_its_message_or_a_prediction(tab, where, case):
    tab.open(where)
    page = tab.page
    before = tab.upload({"name": case.name, "mimeType": mime_of(case.name), "buffer": case.data})
    if case.message is not None:
        # The file is named literally: no Markdown, no HTML.
        page.locator(ERROR).filter(has_text=f"{received(case.name)} {case.message}").wait_for(timeout=RESULT_TIMEOUT_MS)
        tab.settled()
        assert page.locator(ERROR).count() == 1 and page.locator('[data-testid="stImage"]').count() == 0
        if case.id in ("truncated-jpeg", "markdown-html-name"):
            shot(page, f"hostile-upload-{where}-{case.id}")
    else:
        tab.settled(new_image_after=before, timeout=RESULT_TIMEOUT_MS)
        assert page.locator(ERROR).count() == 0
        if where == "demo":
            assert page.get_by_text("Where the model looked (Grad-CAM)").count() == 1
            value = page.locator('[data-testid="stMetric"]').filter(has_text="Prediction").locator(
                '[data-testid="stMetricValue"]').inner_text().strip()
        else:
            page.get_by_role("button", name="Run SHAP and LIME").wait_for()  # its code may still be loading
            assert page.locator('[data-testid="stImageCaption"]').first.inner_text() == received(case.name)
            # The explained class, by default the predicted one.
            card = page.locator(".st-key-explain-card-gradcam").inner_text()
            value = re.search(r"Grad-CAM · class (\S+)", card).group(1)
        assert value in [str(d) for d in range(10)], value
        top, bottom = seen_colours(tab)
        for seen, expected in ((top, case.top), (bottom, case.bottom)):
            if expected is not None:
                assert np.abs(seen - expected).max() < 60, (case.id, seen, expected)
        if case.id == "exif-rotated":
            shot(page, f"hostile-upload-{where}-valid-{case.id}")
    tab.assert_no_traceback()


@pytest.mark.parametrize("where", ["demo", "explain"])
def test_an_image_over_the_upload_limit_is_refused_by_the_browser(tab, where, tmp_path):
    # Streamlit refuses it in the browser (it never reaches the server): a red mark on the file, and its
    # message on hover.
    tab.open(where)
    page = tab.page
    big = tmp_path / "enormous.jpg"
    with open(big, "wb") as out:
        out.write(b"\xff\xd8\xff")
        out.truncate(MAX_IMAGE_MB * 1024**2 + 1)  # sparse: nothing is allocated
    tab.upload(str(big))
    page.locator('[data-testid="stFileChip"]').filter(has_text="enormous.jpg").hover()
    page.get_by_text(f"File must be {MAX_IMAGE_MB:.1f}MB or smaller.").last.wait_for(state="visible")
    shot(page, f"hostile-upload-{where}-too-big")
    tab.assert_no_traceback()
