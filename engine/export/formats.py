"""The export formats, declared once: `FORMATS`, a `Format` per name, in the order reports list them.

Everything that lists, labels, writes, loads or serves a format reads it from here: the
export request's choices and defaults, the parity report's labels and runtimes, the file
names `RunFolder.export_artifact` gives in `exports/` (existing workspaces have them: never
rename one), the converter and runner of each format, and what the Demo can serve.

No imports beyond the standard library: the dashboard lists formats without TensorFlow, and
`engine.runfolder` reads the file names from here. Writers and runners are named as
`"module:attribute"` and imported only when `Format.writer()` / `Format.runner()` is called.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Format:
    """One export format.

    Attributes:
        name: its key in requests, reports, metadata, the CLI's `--format` and its JSON.
        label: how pages and the model card name it.
        runtime: what loads it back for the parity check (and serves it).
        artifact: its file (or folder) in the run's `exports/`.
        write: `"module:function"` that writes it: `function(model, fmt, path, *, calibration_images, source)`.
        serve: `"module:Runner"` that loads it back: `Runner(path)` with `predict(images)`.
        tflite: a TFLite flatbuffer (converted by `convert_tflite`).
        quantized: its weights (and maybe activations) lose precision against float32.
        calibrated: full-integer: needs calibration images from the training split.
        default: exported when a request names no formats.
        demo: the Demo's "Served by" label, or None where the Demo does not offer it.
        files: for a folder artifact, the files inside it a consumer loads (named in the metadata).
    """

    name: str
    label: str
    runtime: str
    artifact: str
    write: str
    serve: str
    tflite: bool = False
    quantized: bool = False
    calibrated: bool = False
    default: bool = True
    demo: str | None = None
    files: tuple[str, ...] = ()

    def writer(self) -> Callable[..., Any]:
        """The function that writes this format (imports its module)."""
        return _resolve(self.write)

    def runner(self) -> type:
        """The Runner class that loads this format back (imports its module)."""
        return _resolve(self.serve)


OPENVINO_FILES = ("model.xml", "model.bin")  # an OpenVINO IR: the graph and its weights, in one folder


def _tflite(name: str, label: str, **flags) -> Format:
    return Format(name, label, "LiteRT", f"model_{name}.tflite", "engine.export.convert:write_tflite",
                  "engine.export.runners:TFLiteRunner", tflite=True, **flags)


FORMATS: dict[str, Format] = {f.name: f for f in (
    _tflite("float32", "TFLite float32", demo="float32 TFLite"),
    _tflite("dynamic", "TFLite dynamic-range", quantized=True),
    _tflite("float16", "TFLite float16", quantized=True),
    _tflite("int8", "TFLite INT8 (int8 I/O)", quantized=True, calibrated=True, demo="INT8 TFLite"),
    _tflite("uint8", "TFLite INT8 (uint8 I/O)", quantized=True, calibrated=True, default=False,
            demo="INT8 TFLite (uint8)"),
    Format("saved_model", "TF SavedModel", "TensorFlow", "saved_model", "engine.export.convert:write_saved_model",
           "engine.export.runners:SavedModelRunner"),
    Format("onnx", "ONNX", "onnxruntime", "model.onnx", "engine.export.convert:write_onnx",
           "engine.export.runners:OnnxRunner"),
    Format("keras", "Keras (.keras)", "Keras", "model.keras", "engine.export.convert:write_keras",
           "engine.export.runners:KerasRunner", demo="Keras"),
    Format("openvino", "OpenVINO IR float32", "OpenVINO", "openvino", "engine.export.openvino:write_openvino",
           "engine.export.openvino:OpenVinoRunner", files=OPENVINO_FILES),
    Format("openvino_int8", "OpenVINO IR INT8 (NNCF)", "OpenVINO", "openvino_int8",
           "engine.export.openvino:write_openvino", "engine.export.openvino:OpenVinoRunner", quantized=True,
           calibrated=True, files=OPENVINO_FILES),
)}

TFLITE_FORMATS = tuple(name for name, f in FORMATS.items() if f.tflite)
DEFAULT_FORMATS = tuple(name for name, f in FORMATS.items() if f.default)
# What the Demo offers, smallest and fastest first: full-integer TFLite, other TFLite, then Keras.
DEMO_FORMATS = tuple(sorted((name for name, f in FORMATS.items() if f.demo),
                            key=lambda name: (not FORMATS[name].calibrated, not FORMATS[name].tflite)))


def format_label(name: str) -> str:
    """The format's label (the name itself for one not in `FORMATS`, e.g. from an old report)."""
    spec = FORMATS.get(name)
    return spec.label if spec else name


def _resolve(target: str) -> Any:
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)
