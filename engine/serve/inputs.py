"""What a request may carry, checked before any model sees it: TF Serving's JSON bodies and image files.

Every problem is a `ServeError` with the HTTP status and one line saying what is wrong, in TF
Serving's `{"error": "..."}` shape; nothing here raises anything else on bad input.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import numpy as np

from engine.data.images import ImageReadError, decode_image

INPUT_NAME = "images"  # the signature's input, as `metadata` names it
SIGNATURE = "serving_default"
MAX_BODY_BYTES = 32 * 1024 * 1024  # a 224 px batch of 32 as JSON is about 20 MB
MAX_INSTANCES = 256


class ServeError(Exception):
    """A request the server refuses: `status` (400, 401, 404, 413) and a one-line `message`."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def bad(message: str) -> ServeError:
    return ServeError(400, message)


def parse_json(body: bytes) -> dict:
    """The request's JSON object; 400 if it is not one."""
    try:
        value = json.loads(body)
    except UnicodeDecodeError:
        raise bad("the body is not UTF-8 JSON") from None
    except json.JSONDecodeError as error:
        raise bad(f"the body is not valid JSON ({error.msg} at character {error.pos})") from None
    if not isinstance(value, dict):
        raise bad(f"the body must be a JSON object, not {type(value).__name__}")
    return value


def predict_images(body: dict, image_size: int) -> tuple[np.ndarray, bool]:
    """The images of a `:predict` body and whether it used the columnar (`inputs`) form.

    Row format: `{"instances": [image, ...]}` (each image `H x W x 3` numbers, or `{"images": image}`);
    columnar: `{"inputs": [image, ...]}` or `{"inputs": {"images": [...]}}`. Pixels are RGB in 0..255.
    """
    signature = body.get("signature_name", SIGNATURE)
    if signature != SIGNATURE:
        raise bad(f"signature_name={signature!r}: this model has only {SIGNATURE!r}")
    if ("instances" in body) == ("inputs" in body):
        raise bad('the body needs exactly one of "instances" (row format) or "inputs" (columnar format)')
    columnar = "inputs" in body
    value = body["inputs" if columnar else "instances"]
    if columnar and isinstance(value, dict):
        value = _named(value, "inputs")
    if not isinstance(value, list) or not value:
        raise bad(f'"{"inputs" if columnar else "instances"}" must be a non-empty list of images')
    if not columnar and all(isinstance(v, dict) for v in value):
        value = [_named(v, "instances[i]") for v in value]
    if len(value) > MAX_INSTANCES:
        raise bad(f"{len(value)} images in one request; at most {MAX_INSTANCES}")
    return check_pixels(value, image_size), columnar


def _named(value: dict, where: str) -> Any:
    if set(value) != {INPUT_NAME}:
        raise bad(f'{where}: the only input is "{INPUT_NAME}", got {sorted(value)}')
    return value[INPUT_NAME]


def check_pixels(value: Any, image_size: int) -> np.ndarray:
    """`value` as `(N, image_size, image_size, 3)` float32 pixels in 0..255; 400 naming what is wrong."""
    try:
        array = np.asarray(value, dtype=np.float32)
    except (ValueError, TypeError):
        raise bad("the images must be nested lists of numbers of one shape (ragged or non-numeric values given)") \
            from None
    if array.dtype != np.float32 or array.ndim == 0:
        raise bad("the images must be numbers")
    expected = (image_size, image_size, 3)
    if array.shape[1:] != expected:
        raise bad(f"each image must have shape {list(expected)} (height, width, RGB); got {list(array.shape[1:])}")
    if isinstance(value, list):  # NumPy reads true/false and numeric strings as numbers: TF Serving does not
        flat = itertools.chain.from_iterable
        others = set(map(type, flat(flat(flat(value))))) - {int, float}
        if others:
            names = sorted({bool: "true/false", str: "strings", type(None): "null"}.get(t, t.__name__) for t in others)
            raise bad(f"the images must be numbers, not {', '.join(names)}")
    if not np.isfinite(array).all():
        raise bad("the images contain NaN or infinite values")
    low, high = float(array.min()), float(array.max())
    if low < 0 or high > 255:
        raise bad(f"pixel values must be in 0..255 (RGB, not scaled); got {low:g}..{high:g}")
    return array


def image_file(data: bytes, image_size: int) -> np.ndarray:
    """An uploaded image file decoded exactly as the Data pipeline decodes files: `(S, S, 3)` uint8."""
    if not data:
        raise bad("the body is empty: send the image file as the body (or as a multipart file field)")
    try:
        return decode_image(data, image_size)
    except ImageReadError as error:
        raise bad(f"not a usable image: {error.reason}") from None


def top_k(value: str | None, classes: int) -> int:
    """The `k` query parameter (default 5, at most the number of classes)."""
    if value is None:
        return min(5, classes)
    try:
        k = int(value)
    except ValueError:
        raise bad(f"k={value!r}: expected a whole number") from None
    if k < 1:
        raise bad(f"k={k}: at least 1")
    return min(k, classes)


def class_index(label: Any, names: list[str]) -> int:
    """A feedback label (a class name, or its index) as an index; 400 naming the classes otherwise."""
    if isinstance(label, bool) or label is None:
        raise bad(f"label={label!r}: give a class name or index; the classes are: {', '.join(names)}")
    if isinstance(label, int) and 0 <= label < len(names):
        return label
    if isinstance(label, str) and label in names:
        return names.index(label)
    raise bad(f"label={label!r}: unknown class; the classes are: {', '.join(names)}")
