"""One uploaded image (Demo and Explain): the uploader widget, and the upload decoded exactly as training
decoded its images — or a clear message naming the file when it can't be.
"""

from __future__ import annotations

import re

import numpy as np
import streamlit as st
from streamlit.runtime.uploaded_file_manager import UploadedFile

from engine.data import ImageReadError
from engine.data.images import decode_image

IMAGE_TYPES = ("png", "jpg", "jpeg", "bmp", "gif", "webp")
# One photo, not a dataset: the browser refuses bigger files before sending them (a 48-megapixel phone
# JPEG is about 15 MB). Zips of image folders keep the server-wide maxUploadSize.
MAX_IMAGE_MB = 50
_MARKDOWN_SPECIALS = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:])")


def image_uploader(key: str) -> UploadedFile | None:
    """A one-image uploader (PNG, JPEG, BMP, GIF or WebP, at most MAX_IMAGE_MB) without a visible label."""
    return st.file_uploader("Image", type=list(IMAGE_TYPES), key=key, label_visibility="collapsed",
                            max_upload_size=MAX_IMAGE_MB)


def read_uploaded_image(upload: UploadedFile, size: int) -> np.ndarray:
    """Decodes an upload in memory (it never touches the disk) into a square RGB array.

    Args:
        upload: what `st.file_uploader` or `st.camera_input` returned.
        size: side of the output in pixels.

    Returns:
        A `(size, size, 3)` uint8 array.

    Raises:
        ImageReadError: with a short reason (empty, too large, truncated, not an image, ...).
    """
    if upload.size > MAX_IMAGE_MB * 1024**2:  # the browser checks too; this is the server's own check
        raise ImageReadError(f"the file is {upload.size / 1024**2:,.0f} MB; one image may be at most "
                             f"{MAX_IMAGE_MB} MB")
    return decode_image(upload.getvalue(), size)


def uploaded_image(upload: UploadedFile, size: int) -> np.ndarray | None:
    """The decoded upload, or None after showing an error that names the file and says why."""
    try:
        return read_uploaded_image(upload, size)
    except ImageReadError as error:
        st.error(problem(upload.name, error.reason), icon=":material/broken_image:")
        return None


def problem(name: str, reason: str) -> str:
    """What is wrong with the uploaded file `name`, in Markdown, from the engine's short `reason`."""
    shown = f"**{display_name(name)}**"
    if reason == "empty file":
        return f"{shown} is empty (0 bytes): there is no picture in it."
    if reason == "truncated image":
        return f"{shown} is cut short: the picture data ends early. Was its download or copy interrupted?"
    if reason.startswith("not an image"):
        return (f"{shown} is not an image, whatever its name says: its contents are not PNG, JPEG, BMP, GIF or "
                "WebP.")
    if reason.startswith("image too large"):
        return (f"{shown} is too large to open safely ({reason.removeprefix('image too large').strip(' ()')}). "
                "Shrink it and upload it again.")
    return f"{shown} can't be read as an image: {reason}."


def display_name(name: str) -> str:
    """A file name as literal Markdown text: control characters shown escaped (`\\n`), Markdown syntax inert."""
    visible = "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in name)
    return _MARKDOWN_SPECIALS.sub(r"\\\1", visible) or "(no name)"
