"""read_image on every odd kind of file a user folder holds."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, features

from engine.data import ImageReadError, read_image
from engine.data import images as images_module

RED, BLUE = (220, 20, 20), (20, 20, 220)


def halves(width, height, left=RED, right=BLUE, mode="RGB"):
    """An image whose left half is `left` and right half is `right`."""
    image = Image.new(mode, (width, height), left)
    image.paste(Image.new(mode, (width - width // 2, height), right), (width // 2, 0))
    return image


def test_plain_png(tmp_path):
    halves(40, 20).save(tmp_path / "a.png")
    pixels = read_image(tmp_path / "a.png", 16)
    assert pixels.shape == (16, 16, 3) and pixels.dtype == np.uint8
    assert tuple(pixels[8, 1]) == RED and tuple(pixels[8, 14]) == BLUE  # squashed, not cropped


def test_exif_orientation_is_respected(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    halves(40, 20).save(tmp_path / "rotated.jpg", exif=exif.tobytes(), quality=95)
    pixels = read_image(tmp_path / "rotated.jpg", 16).astype(int)
    # Displayed upright the image is 20x40 with the red half on top.
    assert pixels[1, 8, 0] > 150 and pixels[1, 8, 2] < 100
    assert pixels[14, 8, 2] > 150 and pixels[14, 8, 0] < 100


def test_cmyk_jpeg(tmp_path):
    Image.new("CMYK", (20, 20), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    r, g, b = read_image(tmp_path / "cmyk.jpg", 8)[4, 4].astype(int)
    assert r > 200 and g < 60 and b < 60


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (64, 1))
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    pixels = read_image(tmp_path / "deep.png", 32)[..., 0].astype(int)
    assert pixels[:, 0].max() < 10 and pixels[:, -1].min() > 245
    assert 100 < pixels[:, 16].mean() < 160  # mid-grey in the middle, not white


def test_palette_png_with_transparency(tmp_path):
    indices = np.zeros((20, 20), np.uint8)
    indices[:, 10:] = 1
    image = Image.fromarray(indices, mode="P")
    image.putpalette([*RED, *BLUE])
    image.save(tmp_path / "palette.png", transparency=0)  # the red index is transparent
    pixels = read_image(tmp_path / "palette.png", 10)
    assert tuple(pixels[5, 1]) == (255, 255, 255) and tuple(pixels[5, 8]) == BLUE


def test_rgba_and_la_composite_on_white(tmp_path):
    rgba = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    rgba.paste(Image.new("RGBA", (5, 10), (0, 0, 255, 255)), (5, 0))
    rgba.save(tmp_path / "rgba.png")
    pixels = read_image(tmp_path / "rgba.png", 10)
    assert tuple(pixels[5, 0]) == (255, 255, 255) and tuple(pixels[5, 9]) == (0, 0, 255)
    Image.new("LA", (6, 6), (0, 0)).save(tmp_path / "la.png")
    assert (read_image(tmp_path / "la.png", 6) == 255).all()


def test_animated_gif_uses_the_first_frame(tmp_path):
    frames = [Image.new("RGB", (12, 12), RED), Image.new("RGB", (12, 12), BLUE)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    r, g, b = read_image(tmp_path / "anim.gif", 6)[3, 3].astype(int)
    assert r > 180 and b < 60


@pytest.mark.skipif(not features.check("webp"), reason="Pillow built without WebP")
def test_webp_and_bmp(tmp_path):
    Image.new("RGB", (9, 9), BLUE).save(tmp_path / "x.webp", lossless=True)
    Image.new("L", (9, 9), 128).save(tmp_path / "x.bmp")
    assert tuple(read_image(tmp_path / "x.webp", 4)[0, 0]) == BLUE
    assert (read_image(tmp_path / "x.bmp", 4) == 128).all()


def test_one_pixel_image(tmp_path):
    Image.new("RGB", (1, 1), (1, 2, 3)).save(tmp_path / "dot.png")
    assert (read_image(tmp_path / "dot.png", 5) == [1, 2, 3]).all()


@pytest.mark.parametrize("name, content, reason", [
    ("empty.png", b"", "empty"),
    ("text.jpg", b"this is not a picture\n" * 10, "not an image"),
])
def test_unreadable_files_raise_with_a_reason(tmp_path, name, content, reason):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ImageReadError, match=reason) as error:
        read_image(tmp_path / name, 8)
    assert reason in error.value.reason


def test_truncated_jpeg(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "full.jpg")
    whole = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ImageReadError, match="truncated|corrupt"):
        read_image(tmp_path / "cut.jpg", 8)


def test_decompression_bomb_is_refused_before_decoding(tmp_path, monkeypatch):
    Image.new("L", (40, 40)).save(tmp_path / "big.png")
    monkeypatch.setattr(images_module, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageReadError, match="too large"):
        read_image(tmp_path / "big.png", 8)


def test_missing_file(tmp_path):
    with pytest.raises(ImageReadError, match="cannot read"):
        read_image(tmp_path / "gone.png", 8)
