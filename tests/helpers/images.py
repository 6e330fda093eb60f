"""Image files made on the fly for tests: tiny class folders (PNG files whose class is visible in the pixels)
and one file of each odd or hostile kind a user may upload.
"""

import io
import struct
import zlib

import numpy as np
from PIL import Image, ImageChops


def write_image_folder(root, classes=("circle", "square", "cross"), per_class=12, size=16, seed=0):
    """Writes `per_class` small PNGs per class whose class is visible in the pixels."""
    rng = np.random.default_rng(seed)
    for index, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
            pixels[:, :, index % 3] += 150  # one colour channel per class: learnable in a few steps
            Image.fromarray(pixels).save(folder / f"{name}_{i}.png")
    return root


def write_digit_folder(root, count):
    """The first `count` of scikit-learn's 8×8 digits as PNGs in class folders `0`..`9`; their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    for i in range(count):
        folder = root / str(digits.target[i])
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (digits.images[i] * 255 / 16).astype(np.uint8)
        Image.fromarray(np.stack([pixels] * 3, axis=-1)).save(folder / f"{i}.png")
    return digits.target[:count]


# -- one file of each odd or hostile kind, as bytes (engine tests write them; browser tests upload them) ----

RED, BLUE = (220, 20, 20), (20, 20, 220)
NOT_AN_IMAGE = b"this is not a picture\n" * 10


def halves(width, height, left=RED, right=BLUE, mode="RGB"):
    """An image whose left half is `left` and right half is `right`."""
    image = Image.new(mode, (width, height), left)
    image.paste(Image.new(mode, (width - width // 2, height), right), (width // 2, 0))
    return image


def encode(image, format, **params) -> bytes:
    """`image` saved in `format` (a Pillow format name) with `params`."""
    buffer = io.BytesIO()
    image.save(buffer, format=format, **params)
    return buffer.getvalue()


def exif_rotated_jpeg() -> bytes:
    """A 40x20 JPEG, red left and blue right, whose EXIF says "rotate 90° clockwise": upright, red on top."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(halves(40, 20), "JPEG", exif=exif.tobytes(), quality=95)


def cmyk_jpeg(cmyk=(0, 255, 255, 0), size=20) -> bytes:
    """A CMYK JPEG of one colour (the default prints as red)."""
    return encode(Image.new("CMYK", (size, size), cmyk), "JPEG", quality=95)


def ycck_jpeg(cmyk=(0, 255, 255, 0), size=20) -> bytes:
    """A YCCK JPEG (Adobe transform 2, as Photoshop writes CMYK) of one colour; Pillow only writes plain CMYK.

    The C, M, Y planes are stored as YCbCr of their inverse (Adobe's inverted CMYK), then the Adobe marker
    is switched to YCCK, so a decoder that honours it gets the colour back.
    """
    c, m, y, k = Image.new("CMYK", (size, size), cmyk).split()
    ycc = Image.merge("RGB", (c, m, y)).convert("YCbCr").split()
    data = bytearray(encode(Image.merge("CMYK", (*(ImageChops.invert(p) for p in ycc), k)), "JPEG", quality=95))
    adobe = data.index(b"Adobe\x00")
    data[adobe + 11] = 2  # "Adobe", version (2 bytes), flags0 (2), flags1 (2), then the transform byte
    return bytes(data)


def deep_png(side=64) -> bytes:
    """A 16-bit grey PNG: a left-to-right ramp from black to white over the full 0..65535 range."""
    return encode(Image.fromarray(np.tile(np.linspace(0, 65535, side).astype(np.uint16), (side, 1))), "PNG")


def palette_png() -> bytes:
    """A 20x20 palette PNG: the left half is the red index, marked transparent; the right half blue."""
    indices = np.zeros((20, 20), np.uint8)
    indices[:, 10:] = 1
    image = Image.fromarray(indices, mode="P")
    image.putpalette([*RED, *BLUE])
    return encode(image, "PNG", transparency=0)


def rgba_png() -> bytes:
    """A 10x10 RGBA PNG: left half fully transparent, right half opaque blue."""
    rgba = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    rgba.paste(Image.new("RGBA", (5, 10), (0, 0, 255, 255)), (5, 0))
    return encode(rgba, "PNG")


def animated(format="GIF", first=RED, second=BLUE, side=12) -> bytes:
    """A two-frame animation (GIF or WebP): first frame `first`, second `second`."""
    frames = [Image.new("RGB", (side, side), first), Image.new("RGB", (side, side), second)]
    extra = {"lossless": True} if format == "WEBP" else {}
    return encode(frames[0], format, save_all=True, append_images=frames[1:], duration=100, loop=0, **extra)


def one_pixel_png(colour=(1, 2, 3)) -> bytes:
    return encode(Image.new("RGB", (1, 1), colour), "PNG")


def noise(format, side=64, seed=0) -> bytes:
    """Random pixels in `format`: a file with no large runs, so cutting it loses real data."""
    rng = np.random.default_rng(seed)
    return encode(Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)), format)


def truncated(format="JPEG") -> bytes:
    """The first half of a noisy image file."""
    whole = noise(format)
    return whole[: len(whole) // 2]


def png_claiming_size(width, height) -> bytes:
    """A tiny PNG whose header claims `width` x `height` pixels (a decompression bomb that allocates nothing)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))
