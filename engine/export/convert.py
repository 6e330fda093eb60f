"""Converting a Keras model to TFLite (float32, dynamic, float16, INT8), SavedModel and ONNX."""

from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path

import numpy as np

from engine.export.formats import FORMATS
from engine.export.report import ONNX_OPSET, ExportError


def export_artifact(model, fmt: str, path: Path, *, calibration_images: np.ndarray | None = None,
                    source: Path | None = None) -> Path:
    """Writes one artifact of `model` in format `fmt` to `path` (replacing what was there).

    Args:
        model: the Keras model (float32 0..255 RGB in, probabilities out).
        fmt: one of `FORMATS`.
        path: the file (or folder, for `saved_model`) to write.
        calibration_images: `(N, H, W, 3)` images for INT8 calibration; needed for
            `int8` and `uint8`.
        source: the `.keras` file to copy for `keras` (default: save `model`).

    Returns:
        `path`.
    """
    if fmt not in FORMATS:
        raise ExportError(f"format={fmt!r}: choose from {', '.join(FORMATS)}")
    path = Path(path)
    _remove(path)
    FORMATS[fmt].writer()(model, fmt, path, calibration_images=calibration_images, source=source)
    return path


# The writers `Format.write` names: (model, fmt, path, *, calibration_images, source).

def write_tflite(model, fmt: str, path: Path, *, calibration_images: np.ndarray | None = None, **_) -> None:
    path.write_bytes(convert_tflite(model, fmt, calibration_images))


def write_saved_model(model, fmt: str, path: Path, **_) -> None:
    model.export(str(path), format="tf_saved_model", verbose=False)


def write_onnx(model, fmt: str, path: Path, **_) -> None:
    export_onnx(model, path)


def write_keras(model, fmt: str, path: Path, *, source: Path | None = None, **_) -> None:
    if source is not None:
        shutil.copyfile(source, path)
    else:
        model.save(path)


def convert_tflite(model, fmt: str, calibration_images: np.ndarray | None = None) -> bytes:
    """Converts a Keras model to a TFLite flatbuffer.

    Args:
        model: the Keras model.
        fmt: `float32` (no optimization), `dynamic` (int8 weights, float activations),
            `float16` (float16 weights), `int8` or `uint8` (full integer, with integer
            input and output of that type).
        calibration_images: `(N, H, W, 3)` images in 0..255 (the representative dataset)
            for `int8`/`uint8`.

    Returns:
        The `.tflite` bytes.
    """
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if FORMATS[fmt].quantized:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if fmt == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if FORMATS[fmt].calibrated:
        if calibration_images is None or len(calibration_images) == 0:
            raise ExportError(f"format={fmt!r} needs calibration images")
        images = np.asarray(calibration_images, dtype=np.float32)

        def representative():
            for image in images:
                yield [image[None]]

        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = tf.int8 if fmt == "int8" else tf.uint8
    with contextlib.redirect_stdout(io.StringIO()):  # the converter prints a "Saved artifact at ..." block
        return converter.convert()


def export_onnx(model, path: Path, *, opset: int = ONNX_OPSET) -> Path:
    """Writes an ONNX model through tf2onnx (`from_function`; `from_keras` fails on Keras 3)."""
    import tensorflow as tf
    import tf2onnx

    spec = (tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name="image"),)
    function = tf.function(lambda x: model(x, training=False), input_signature=spec)
    tf2onnx.convert.from_function(function, input_signature=spec, opset=opset, output_path=str(path))
    return path


def artifact_size(path: Path) -> int:
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size if path.exists() else 0


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
