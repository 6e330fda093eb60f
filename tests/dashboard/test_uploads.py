"""The one-image upload helper shared by Demo and Explain: decoding, the size check, and the message."""

from __future__ import annotations

import pytest
from streamlit.runtime.uploaded_file_manager import UploadedFile, UploadedFileRec

from dashboard.components import uploads
from engine.data import ImageReadError
from tests.helpers import images as files


def upload(name: str, data: bytes) -> UploadedFile:
    return UploadedFile(UploadedFileRec("id", name, "image/png", data), None)


def test_an_odd_but_valid_upload_is_decoded_in_memory():
    pixels = uploads.read_uploaded_image(upload("rotated.jpg", files.exif_rotated_jpeg()), 16)
    assert pixels.shape == (16, 16, 3)
    assert pixels[1, 8, 0] > 150 > pixels[1, 8, 2]  # upright: red on top


def test_an_upload_over_the_limit_is_refused_by_the_server_too(monkeypatch):
    monkeypatch.setattr(uploads, "MAX_IMAGE_MB", 1)
    with pytest.raises(ImageReadError, match="the file is 2 MB; one image may be at most 1 MB"):
        uploads.read_uploaded_image(upload("big.png", bytes(2 * 1024**2)), 8)


@pytest.mark.parametrize(("data", "said"), [
    (b"", "is empty (0 bytes)"),
    (files.truncated("PNG"), "is cut short"),
    (files.NOT_AN_IMAGE, "is not an image, whatever its name says"),
    (files.png_claiming_size(9000, 9000), "is too large to open safely (9000x9000 pixels, limit 64,000,000)"),
])
def test_each_reason_is_said_plainly_naming_the_file(data, said):
    with pytest.raises(ImageReadError) as caught:
        uploads.read_uploaded_image(upload("x.png", data), 8)
    assert uploads.problem("x.png", caught.value.reason).startswith(f"**x\\.png** {said}")


def test_an_unknown_reason_is_shown_as_is():
    assert uploads.problem("a.png", "corrupt image (broken data stream)") == (
        "**a\\.png** can't be read as an image: corrupt image (broken data stream).")


@pytest.mark.parametrize(("name", "shown"), [
    ("**bold** <b>x</b>.png", r"\*\*bold\*\* \<b\>x\</b\>\.png"),
    ("two\nlines.png", r"two\\nlines\.png"),
    ("café 猫 (1).png", r"café 猫 \(1\)\.png"),
    (":red[x] $y$.png", r"\:red\[x\] \$y\$\.png"),
    ("", "(no name)"),
])
def test_file_names_are_shown_as_literal_text(name, shown):
    assert uploads.display_name(name) == shown
