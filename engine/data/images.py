"""Decoding one image file of any common kind into a square uint8 RGB array."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import numpy as np
import simplejpeg
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from engine.data.imageset import DatasetError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"})
# Images with more pixels than this are refused before decoding (decompression bombs).
MAX_IMAGE_PIXELS = 64_000_000
# Files up to this size are read whole (one read; a JPEG's header and pixels then come from memory).
_READ_WHOLE_BYTES = 64 * 1024 * 1024
_JPEG_MAGIC = b"\xff\xd8\xff"
# A 16-bit single-channel image: Pillow modes and the value that maps to white.
_WIDE_GRAY_MODES = {"I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535}
# EXIF orientation -> the transpose that shows the image upright (as `ImageOps.exif_transpose` maps it).
_EXIF_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
                   5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
                   8: Image.Transpose.ROTATE_90}


class ImageReadError(DatasetError):
    """An image file cannot be decoded; `reason` is a short phrase for a skipped-files list."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


def is_image_file(path: str | os.PathLike) -> bool:
    """Returns whether the file name has one of the accepted image extensions (any case)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def read_image(path: str | os.PathLike, image_size: int) -> np.ndarray:
    """Decodes an image file into a square RGB array.

    Respects EXIF orientation, takes the first frame of animations, composites
    transparency on white, scales 16-bit images to 8 bits, and resizes (bilinear,
    without keeping the aspect ratio) to `image_size` x `image_size`.

    Args:
        path: the image file (JPEG, PNG, BMP, GIF or WebP).
        image_size: side of the output in pixels, at least 1.

    Returns:
        A `(image_size, image_size, 3)` uint8 array.

    Raises:
        ImageReadError: the file is empty, too large, truncated or not an image.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if size == 0:
            raise ImageReadError("empty file")
        # One read of the whole file (a bigger one is left to Pillow's streaming): no file is opened twice.
        source = path.read_bytes() if size <= _READ_WHOLE_BYTES else path
    except OSError as error:
        raise ImageReadError(f"cannot read file ({error.strerror or error})") from None
    return _decode(source, image_size)


def decode_image(data: bytes, image_size: int) -> np.ndarray:
    """Decodes an image held in memory (an upload) exactly as `read_image` decodes a file, without writing it.

    Args:
        data: the file's bytes.
        image_size: side of the output in pixels, at least 1.

    Returns:
        A `(image_size, image_size, 3)` uint8 array.

    Raises:
        ImageReadError: the data is empty, too large, truncated or not an image.
    """
    if not data:
        raise ImageReadError("empty file")
    return _decode(data, image_size)


def _decode(source: bytes | Path, image_size: int) -> np.ndarray:
    if isinstance(source, bytes) and source.startswith(_JPEG_MAGIC):
        pixels = _decode_jpeg(source, image_size)
        if pixels is not None:
            return pixels
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise ImageReadError(f"image too large ({width}x{height} pixels, limit {MAX_IMAGE_PIXELS:,})")
            if width < 1 or height < 1:
                raise ImageReadError(f"image has no pixels ({width}x{height})")
            if getattr(image, "n_frames", 1) > 1:
                image.seek(0)
            if image.format == "JPEG":
                # Lets libjpeg decode at a reduced scale: much faster for big photos.
                image.draft(image.mode, (image_size, image_size))
            image.load()
            image = ImageOps.exif_transpose(image)
            return _resized(to_rgb(image), image_size)
    except ImageReadError:
        raise
    except Image.DecompressionBombError as error:
        # Pillow refuses far-too-large images on open, before the size check above can name the dimensions.
        pixels = re.search(r"\((\d+) pixels\)", str(error))
        size = f"{int(pixels.group(1)):,} pixels" if pixels else "decompression bomb"
        raise ImageReadError(f"image too large ({size}, limit {MAX_IMAGE_PIXELS:,})") from None
    except UnidentifiedImageError:
        raise ImageReadError("not an image (unrecognised file format)") from None
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError) as error:
        message = str(error).split("\n")[0][:80] or type(error).__name__
        reason = "truncated image" if "truncated" in message else f"corrupt image ({message})"
        raise ImageReadError(reason) from None


def _decode_jpeg(data: bytes, image_size: int) -> np.ndarray | None:
    """Decodes an RGB or grey JPEG's bytes to exactly the pixels the Pillow path gives it, about 3x faster.

    Pillow decodes with libjpeg-turbo too, but a 224 px JPEG spends most of its time in
    Pillow's own layers (parsing the headers in Python on open, its decode loop, 4-byte
    pixels, the copy out), all holding the GIL; here libjpeg-turbo reads the header and
    decodes (simplejpeg: accurate DCT, smooth upsampling, and the same power-of-two DCT
    scale that Pillow's `draft` picks) straight into an RGB array without the GIL. Returns
    None to leave the file to Pillow: a colour space other than YCbCr, RGB or grey (CMYK),
    too many pixels (Pillow's path names the size), EXIF it cannot read here, or anything
    at all libjpeg reports (a truncated or slightly damaged file).
    """
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    if colorspace not in ("YCbCr", "RGB", "Gray") or not 0 < width * height <= MAX_IMAGE_PIXELS:
        return None
    orientation = _jpeg_orientation(data)
    if orientation is None:
        return None
    scale = _draft_scale(width, height, image_size)
    target = (-(-height // scale), -(-width // scale))  # what libjpeg makes at 1/scale (rounded up)
    try:
        pixels = simplejpeg.decode_jpeg(data, "RGB", min_height=target[0], min_width=target[1], min_factor=scale,
                                        strict=True)
    except ValueError:
        return None
    if pixels.shape[:2] != target:
        return None
    method = _EXIF_TRANSPOSE.get(orientation)
    if method is None and target == (image_size, image_size):
        return pixels  # a 224 px photo for 224 px: no Pillow image at all
    upright = Image.fromarray(pixels)
    return _resized(upright if method is None else upright.transpose(method), image_size)


def _jpeg_orientation(data: bytes) -> int | None:
    """The EXIF orientation of a JPEG as Pillow reads it (its first APP1 "Exif" segment; 1 without one), or None
    where the markers before the scan do not read cleanly (Pillow then decides)."""
    at = 2
    while at + 4 <= len(data) and data[at] == 0xFF:
        marker = data[at + 1]
        if marker == 0xDA:  # start of scan: no metadata after it
            return 1
        length = int.from_bytes(data[at + 2:at + 4], "big")
        if marker == 0xE1 and data[at + 4:at + 10] == b"Exif\x00\x00":
            exif = Image.Exif()
            try:
                exif.load(data[at + 4:at + 2 + length])
                return int(exif.get(ExifTags.Base.Orientation, 1))
            except Exception:  # noqa: BLE001 - any damage in the EXIF: Pillow's path decides what it means
                return None
        at += 2 + length
    return None


def _draft_scale(width: int, height: int, image_size: int) -> int:
    """The DCT scale (1, 2, 4 or 8) that Pillow's JPEG `draft` picks: the largest keeping both sides >= image_size."""
    fits = min(width // image_size, height // image_size)
    return next((s for s in (8, 4, 2) if fits >= s), 1)


def _resized(rgb: Image.Image, image_size: int) -> np.ndarray:
    # reducing_gap: big images are first shrunk by an integer factor with a box filter
    # (cheap), then the bilinear filter covers the last factor of 3 at most.
    if rgb.size != (image_size, image_size):  # already the size (a 224 px folder at 224): no resample
        rgb = rgb.resize((image_size, image_size), Image.Resampling.BILINEAR, reducing_gap=3.0)
    return np.asarray(rgb, dtype=np.uint8).reshape(image_size, image_size, 3)


def to_rgb(image: Image.Image) -> Image.Image:
    """Converts a Pillow image of any mode to 8-bit RGB.

    Transparent pixels become white; 16-bit and 32-bit gray values are scaled
    (not clipped) to 0..255.

    Args:
        image: a loaded Pillow image.

    Returns:
        An image in mode `RGB`.
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _WIDE_GRAY_MODES or mode in ("I", "F"):
        return Image.fromarray(_scale_to_uint8(np.asarray(image), mode)).convert("RGB")
    if (mode == "P" and "transparency" in image.info) or mode in ("PA", "LA", "La", "RGBA", "RGBa"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def _scale_to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """Maps wide integer or float gray values into 0..255 without clipping the range."""
    values = values.astype(np.float64)
    if mode in _WIDE_GRAY_MODES:
        top = float(_WIDE_GRAY_MODES[mode])
    elif mode == "F":
        top = 1.0 if values.size and values.max() <= 1.0 else float(values.max() or 1.0)
    else:  # "I": 32-bit ints; 16-bit PNGs open in this mode too.
        peak = float(values.max()) if values.size else 0.0
        top = 255.0 if peak <= 255 else 65535.0 if peak <= 65535 else peak
    return np.clip(np.rint(values * (255.0 / top)), 0, 255).astype(np.uint8)
