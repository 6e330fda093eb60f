"""OpenVINO: an IR (`model.xml` + `model.bin` in one folder) from the Keras model, float32 or INT8 through NNCF.

`ov.convert_model(keras_model)` reads a Keras 3 model directly. INT8 is NNCF's post-training
quantization (`nncf.quantize`) calibrated on the same training images as TFLite INT8; the IR
keeps float32 input and output (NNCF inserts the quantize/dequantize nodes inside the graph).

oneDNN ISA: Aperture sets `DNNL_MAX_CPU_ISA=AVX2` for TensorFlow's sake (`engine.cpu`). OpenVINO's
CPU plugin carries its own oneDNN, reads the same variable, and then refuses to compile a pooling
layer ("Supported primitive descriptors list is empty for node: AvgPool"), checked with openvino
2026.4.1. Its oneDNN reads the variable once, on the first compile, so `_first_compile` hides the
variable for that call only; TensorFlow's oneDNN keeps the limit.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

import numpy as np

from engine.cpu import ISA_ENV
from engine.export.formats import FORMATS, OPENVINO_FILES
from engine.export.report import ExportError
from engine.export.runners import Runner

XML, BIN = OPENVINO_FILES
_compile_lock = threading.Lock()
_compiled_once = False


def write_openvino(model, fmt: str, path: Path, *, calibration_images: np.ndarray | None = None, **_) -> None:
    """Writes the IR folder `path` (`model.xml`, `model.bin`); INT8 (`openvino_int8`) calibrated by NNCF."""
    import openvino as ov

    ov_model = convert_openvino(model)
    if FORMATS[fmt].calibrated:
        ov_model = quantize_openvino(ov_model, calibration_images)
    path.mkdir(parents=True)
    ov.save_model(ov_model, str(path / XML), compress_to_fp16=False)


def convert_openvino(model):
    """The Keras model as an `openvino.Model` with a dynamic batch and a named input and output."""
    import openvino as ov

    ov_model = ov.convert_model(model)
    ov_model.reshape({ov_model.inputs[0]: ov.PartialShape([-1, *model.input_shape[1:]])})
    ov_model.inputs[0].get_tensor().set_names({"image"})
    ov_model.outputs[0].get_tensor().set_names({"probabilities"})
    return ov_model


def quantize_openvino(ov_model, calibration_images: np.ndarray | None):
    """NNCF post-training INT8 quantization on `calibration_images` (`(N, H, W, 3)` in 0..255)."""
    if calibration_images is None or len(calibration_images) == 0:
        raise ExportError("format='openvino_int8' needs calibration images")
    import nncf

    images = np.asarray(calibration_images, dtype=np.float32)
    dataset = nncf.Dataset([images[i:i + 1] for i in range(len(images))])
    with _quiet_nncf():
        return nncf.quantize(ov_model, dataset, subset_size=len(images), preset=nncf.QuantizationPreset.MIXED)


class OpenVinoRunner(Runner):
    """An IR folder (or its `.xml`) compiled by OpenVINO's runtime for the CPU.

    Args:
        path: the IR folder holding `model.xml` and `model.bin`, or the `.xml` itself.
        num_threads: inference threads. Default 2.
    """

    def __init__(self, path: str | os.PathLike, num_threads: int = 2):
        import openvino as ov

        path = Path(path)
        xml = path / XML if path.is_dir() else path
        if not xml.is_file():
            raise ExportError(f"{xml} is not an OpenVINO IR (.xml)")
        self.core = ov.Core()
        graph = self.core.read_model(str(xml))
        with _first_compile():
            # f32: on a CPU with bfloat16 units OpenVINO would otherwise run the float parts in bfloat16.
            self.compiled = self.core.compile_model(graph, "CPU", {"INFERENCE_NUM_THREADS": num_threads,
                                                                   "INFERENCE_PRECISION_HINT": "f32"})
        self.request = self.compiled.create_infer_request()
        precision = "int8" if any(op.get_type_name() == "FakeQuantize" for op in graph.get_ops()) else "float32"
        self.quantization = {"input_dtype": "float32", "output_dtype": "float32", "weights": precision,
                             "layout": "NHWC"}

    def predict(self, images: np.ndarray) -> np.ndarray:
        result = self.request.infer({0: np.ascontiguousarray(images, dtype=np.float32)})
        return np.asarray(result[self.compiled.outputs[0]], dtype=np.float32)


@contextlib.contextmanager
def _first_compile():
    """Hides `DNNL_MAX_CPU_ISA` from OpenVINO's oneDNN during the process's first compile (see the module doc)."""
    global _compiled_once
    with _compile_lock:
        saved = None if _compiled_once else os.environ.pop(ISA_ENV, None)
        try:
            yield
            _compiled_once = True
        finally:
            if saved is not None:
                os.environ[ISA_ENV] = saved


@contextlib.contextmanager
def _quiet_nncf():
    import logging

    logger = logging.getLogger("nncf")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)
