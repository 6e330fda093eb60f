"""read_image (and decode_image, for uploads) on every odd kind of file a user folder holds."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, features

from engine.data import ImageReadError, read_image
from engine.data import images as images_module
from engine.data.images import decode_image
from tests.helpers import images as files
from tests.helpers.images import BLUE, RED, halves


def write(path, data: bytes):
    path.write_bytes(data)
    return path


def test_plain_png(tmp_path):
    halves(40, 20).save(tmp_path / "a.png")
    pixels = read_image(tmp_path / "a.png", 16)
    assert pixels.shape == (16, 16, 3) and pixels.dtype == np.uint8
    assert tuple(pixels[8, 1]) == RED and tuple(pixels[8, 14]) == BLUE  # squashed, not cropped


def test_exif_orientation_is_respected(tmp_path):
    pixels = read_image(write(tmp_path / "rotated.jpg", files.exif_rotated_jpeg()), 16).astype(int)
    # Displayed upright the image is 20x40 with the red half on top.
    assert pixels[1, 8, 0] > 150 and pixels[1, 8, 2] < 100
    assert pixels[14, 8, 2] > 150 and pixels[14, 8, 0] < 100


@pytest.mark.parametrize("make", [files.cmyk_jpeg, files.ycck_jpeg])
def test_cmyk_and_ycck_jpeg(tmp_path, make):
    r, g, b = read_image(write(tmp_path / "print.jpg", make()), 8)[4, 4].astype(int)
    assert r > 200 and g < 60 and b < 60


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    path = write(tmp_path / "deep.png", files.deep_png())
    assert Image.open(path).mode.startswith("I")
    pixels = read_image(path, 32)[..., 0].astype(int)
    assert pixels[:, 0].max() < 10 and pixels[:, -1].min() > 245
    assert 100 < pixels[:, 16].mean() < 160  # mid-grey in the middle, not white


def test_palette_png_with_transparency(tmp_path):
    pixels = read_image(write(tmp_path / "palette.png", files.palette_png()), 10)  # the red index is transparent
    assert tuple(pixels[5, 1]) == (255, 255, 255) and tuple(pixels[5, 8]) == BLUE


def test_rgba_and_la_composite_on_white(tmp_path):
    pixels = read_image(write(tmp_path / "rgba.png", files.rgba_png()), 10)
    assert tuple(pixels[5, 0]) == (255, 255, 255) and tuple(pixels[5, 9]) == (0, 0, 255)
    Image.new("LA", (6, 6), (0, 0)).save(tmp_path / "la.png")
    assert (read_image(tmp_path / "la.png", 6) == 255).all()


def test_animated_gif_uses_the_first_frame(tmp_path):
    r, g, b = read_image(write(tmp_path / "anim.gif", files.animated("GIF")), 6)[3, 3].astype(int)
    assert r > 180 and b < 60


@pytest.mark.skipif(not features.check("webp"), reason="Pillow built without WebP")
def test_webp_and_bmp(tmp_path):
    Image.new("RGB", (9, 9), BLUE).save(tmp_path / "x.webp", lossless=True)
    Image.new("L", (9, 9), 128).save(tmp_path / "x.bmp")
    assert tuple(read_image(tmp_path / "x.webp", 4)[0, 0]) == BLUE
    assert (read_image(tmp_path / "x.bmp", 4) == 128).all()
    r, g, b = read_image(write(tmp_path / "anim.webp", files.animated("WEBP")), 6)[3, 3].astype(int)
    assert r > 180 and b < 60  # the first frame


def test_one_pixel_image(tmp_path):
    assert (read_image(write(tmp_path / "dot.png", files.one_pixel_png()), 5) == [1, 2, 3]).all()


@pytest.mark.parametrize("name, content, reason", [
    ("empty.png", b"", "empty"),
    ("text.jpg", files.NOT_AN_IMAGE, "not an image"),
])
def test_unreadable_files_raise_with_a_reason(tmp_path, name, content, reason):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ImageReadError, match=reason) as error:
        read_image(tmp_path / name, 8)
    assert reason in error.value.reason


@pytest.mark.parametrize("format", ["JPEG", "PNG"])
def test_truncated_jpeg_and_png(tmp_path, format):
    with pytest.raises(ImageReadError, match="truncated|corrupt"):
        read_image(write(tmp_path / "cut.img", files.truncated(format)), 8)


def test_decompression_bomb_is_refused_before_decoding(tmp_path, monkeypatch):
    Image.new("L", (40, 40)).save(tmp_path / "big.png")
    monkeypatch.setattr(images_module, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageReadError, match="too large"):
        read_image(tmp_path / "big.png", 8)


@pytest.mark.parametrize("side, size", [(9000, "9000x9000 pixels"), (100_000, "10,000,000,000 pixels")])
def test_a_header_claiming_huge_dimensions_is_refused_naming_the_size(tmp_path, side, size):
    # 9000² is over our limit but under Pillow's own; 100,000² Pillow refuses on open.
    with pytest.raises(ImageReadError, match=f"image too large \\({size}, limit 64,000,000\\)"):
        read_image(write(tmp_path / "bomb.png", files.png_claiming_size(side, side)), 8)


def test_missing_file(tmp_path):
    with pytest.raises(ImageReadError, match="cannot read"):
        read_image(tmp_path / "gone.png", 8)


def test_decode_image_reads_bytes_as_read_image_reads_files(tmp_path):
    data = files.exif_rotated_jpeg()
    assert (decode_image(data, 16) == read_image(write(tmp_path / "r.jpg", data), 16)).all()
    for content, reason in ((b"", "empty file"), (files.NOT_AN_IMAGE, "not an image"),
                            (files.png_claiming_size(100_000, 100_000), "too large")):
        with pytest.raises(ImageReadError, match=reason):
            decode_image(content, 8)


@pytest.mark.parametrize("mode, params", [
    ("RGB", {"quality": 90}),  # 4:2:0
    ("RGB", {"quality": 95, "subsampling": 0}),  # 4:4:4
    ("RGB", {"quality": 85, "subsampling": 1}),  # 4:2:2
    ("RGB", {"quality": 90, "progressive": True}),
    ("RGB", {"quality": 90, "keep_rgb": True}),  # RGB components, not YCbCr
    ("L", {"quality": 90}),
])
@pytest.mark.parametrize("width, height, size", [(64, 64, 64), (70, 50, 16), (300, 200, 32), (130, 300, 32)])
def test_fast_jpeg_path_gives_exactly_pillows_pixels(tmp_path, monkeypatch, mode, params, width, height, size):
    """simplejpeg must decode (at the same DCT scale) to the very pixels Pillow's own decode gives."""
    rng = np.random.default_rng(width + height)
    image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).resize(
        (width // 4, height // 4)).resize((width, height), Image.Resampling.BICUBIC).convert(mode)
    path = write(tmp_path / "x.jpg", files.encode(image, "JPEG", **params))
    fast = read_image(path, size)
    monkeypatch.setattr(images_module, "_decode_jpeg", lambda image, image_size: None)  # Pillow only
    assert np.array_equal(fast, read_image(path, size))


def test_fast_jpeg_path_respects_exif_orientation_as_pillow_does(tmp_path, monkeypatch):
    path = write(tmp_path / "rotated.jpg", files.exif_rotated_jpeg())
    fast = read_image(path, 16)
    assert images_module._decode_jpeg(path.read_bytes(), 16) is not None  # EXIF read without Pillow's open
    monkeypatch.setattr(images_module, "_decode_jpeg", lambda image, image_size: None)
    assert np.array_equal(fast, read_image(path, 16))
