"""Export a trained run and check each artifact against the Keras model it came from.

Formats: TFLite float32, dynamic-range, float16 and full-integer INT8 (int8 or uint8
input/output, calibrated on the training split), a TF SavedModel for TF Serving, ONNX
(through tf2onnx, checked with onnxruntime) and a copy of the `.keras` file. Every
artifact is loaded back in its own runtime (LiteRT, TensorFlow, onnxruntime, Keras) and
compared with the Keras model on the run's test split: the **parity report**. An
artifact that loses more than `max_drop` accuracy points is marked failed, with a
suggested fallback.

Preprocessing travels with the model: our models take float32 RGB in 0..255 at the
run's image size and rescale inside their graph; `exports/metadata.json` records that,
the class names and the quantization parameters of every artifact.

Importing this module is cheap (no TensorFlow): the dashboard reads reports and queues
exports through it; TensorFlow is imported by the functions that need it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import os
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from engine import store as st
from engine.config import RunConfig
from engine.jobs import JobCancelled, submit_job
from engine.store import Job, Workspace

log = logging.getLogger(__name__)

TFLITE_FORMATS = ("float32", "dynamic", "float16", "int8", "uint8")
FORMATS = (*TFLITE_FORMATS, "saved_model", "onnx", "keras")
DEFAULT_FORMATS = ("float32", "dynamic", "float16", "int8", "saved_model", "onnx", "keras")
FORMAT_LABELS = {
    "float32": "TFLite float32", "dynamic": "TFLite dynamic-range", "float16": "TFLite float16",
    "int8": "TFLite INT8 (int8 I/O)", "uint8": "TFLite INT8 (uint8 I/O)", "saved_model": "TF SavedModel",
    "onnx": "ONNX", "keras": "Keras (.keras)",
}
RUNTIMES = {**{f: "LiteRT" for f in TFLITE_FORMATS}, "saved_model": "TensorFlow", "onnx": "onnxruntime",
            "keras": "Keras"}
ARTIFACT_NAMES = {
    "float32": "model_float32.tflite", "dynamic": "model_dynamic.tflite", "float16": "model_float16.tflite",
    "int8": "model_int8.tflite", "uint8": "model_uint8.tflite", "saved_model": "saved_model",
    "onnx": "model.onnx", "keras": "model.keras",
}
DEFAULT_MAX_DROP = 1.0  # accuracy points
DEFAULT_CALIBRATION_SIZE = 200
DEFAULT_LATENCY_RUNS = 50
BATCH_SIZE = 32
ONNX_OPSET = 17
EXPORT_JOB = "export"


class ExportError(ValueError):
    """The run cannot be exported (not finished, no model, bad options); the message says why."""


@dataclass(frozen=True)
class ExportRequest:
    """What to export and how strictly to check it.

    Args:
        formats: any of `FORMATS`; default `DEFAULT_FORMATS` (all but `uint8`).
        max_drop: the largest accepted test-accuracy loss against the Keras model, in
            percentage points, 0 to 100. Default 1.0.
        calibration_size: training images used to calibrate INT8 ranges, 1 to 10,000.
            Default 200.
        latency_runs: timed single-image predictions per artifact, 5 to 1,000. Default 50.
    """

    formats: tuple[str, ...] = DEFAULT_FORMATS
    max_drop: float = DEFAULT_MAX_DROP
    calibration_size: int = DEFAULT_CALIBRATION_SIZE
    latency_runs: int = DEFAULT_LATENCY_RUNS

    def validate(self) -> ExportRequest:
        unknown = [f for f in self.formats if f not in FORMATS]
        if not self.formats or unknown:
            raise ExportError(f"formats={list(self.formats)!r}: choose from {', '.join(FORMATS)}")
        if not 0 <= float(self.max_drop) <= 100:
            raise ExportError(f"max_drop={self.max_drop!r}: expected accuracy points between 0 and 100")
        if not 1 <= int(self.calibration_size) <= 10_000:
            raise ExportError(f"calibration_size={self.calibration_size!r}: expected 1 to 10,000 images")
        if not 5 <= int(self.latency_runs) <= 1000:
            raise ExportError(f"latency_runs={self.latency_runs!r}: expected 5 to 1,000")
        return self

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "formats": list(self.formats)}

    @classmethod
    def from_dict(cls, values: dict) -> ExportRequest:
        values = dict(values)
        if "formats" in values:
            values["formats"] = tuple(values["formats"])
        return cls(**values).validate()


@dataclass(frozen=True)
class ArtifactParity:
    """One exported artifact, loaded back in its own runtime and compared with the Keras model.

    Accuracies are fractions (0..1); `accuracy_drop` and `per_class_delta` are in
    percentage points (positive = the artifact is worse). Latencies are milliseconds on
    this CPU: single image (median, p95) and one batch of `batch_size` (median).
    """

    format: str
    path: str  # relative to the run folder
    size_bytes: int
    runtime: str
    accuracy: float | None = None
    reference_accuracy: float | None = None
    accuracy_drop: float | None = None
    per_class_delta: list[float] = field(default_factory=list)
    flipped: list[str] = field(default_factory=list)  # test image ids whose top-1 changed
    mean_abs_prob_diff: float | None = None
    latency_ms_median: float | None = None
    latency_ms_p95: float | None = None
    batch_latency_ms_median: float | None = None
    batch_size: int = BATCH_SIZE
    passed: bool = False
    suggestion: str | None = None
    error: str | None = None
    quantization: dict = field(default_factory=dict)
    seconds: float | None = None  # conversion + check

    @property
    def label(self) -> str:
        return FORMAT_LABELS.get(self.format, self.format)


@dataclass(frozen=True)
class ExportReport:
    """The parity report of a run's exports (`exports/report.json`)."""

    run_id: str
    created_at: float
    reference_accuracy: float
    max_drop: float
    calibration_size: int
    test_size: int
    class_names: list[str]
    artifacts: list[ArtifactParity]

    @property
    def passed(self) -> bool:
        return all(a.passed for a in self.artifacts)

    def artifact(self, fmt: str) -> ArtifactParity | None:
        return next((a for a in self.artifacts if a.format == fmt), None)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> ExportReport:
        values = dict(values)
        values["artifacts"] = [ArtifactParity(**a) for a in values.get("artifacts", [])]
        return cls(**values)


# -- reading and queueing (no TensorFlow) ----------------------------------------------------


def read_report(workspace: Workspace, run_id: str) -> ExportReport | None:
    """The run's latest parity report, or None if it was never exported."""
    path = workspace.run_file(run_id, st.EXPORT_REPORT_FILE)
    try:
        return ExportReport.from_dict(json.loads(path.read_text()))
    except FileNotFoundError:
        return None


def read_metadata(path: str | os.PathLike) -> dict:
    """Reads an export metadata JSON (class names, input spec, quantization per artifact)."""
    return json.loads(Path(path).read_text())


def check_exportable(workspace: Workspace, run_id: str) -> None:
    """Raises ExportError unless the run finished training and has its model and test predictions."""
    run = workspace.get_run(run_id)
    if run.status != st.COMPLETED:
        raise ExportError(f"run {run_id} is {run.status}: only a completed run can be exported")
    for name in (st.MODEL_FILE, st.PREDICTIONS_FILE):
        if not workspace.run_file(run_id, name).is_file():
            raise ExportError(f"run {run_id} has no {name}")


def request_export(workspace: Workspace, run_id: str, request: ExportRequest) -> Job:
    """Writes the export options into the run folder and queues an export job.

    Returns:
        The job (queued or running). Raises ExportError for a run that cannot be
        exported or when an export of this run is already active.
    """
    request.validate()
    check_exportable(workspace, run_id)
    current = workspace.latest_job(run_id, EXPORT_JOB)
    if current is not None and current.active:
        raise ExportError(f"run {run_id} is already being exported (job {current.id})")
    path = workspace.run_file(run_id, st.EXPORT_REQUEST_FILE)
    path.parent.mkdir(exist_ok=True)
    st.write_json_atomic(path, request.to_dict())
    return submit_job(run_id, EXPORT_JOB, workspace)


def artifact_path(workspace: Workspace, run_id: str, artifact: ArtifactParity) -> Path:
    return workspace.run_dir(run_id) / artifact.path


def suggest_fallback(fmt: str, calibration_size: int) -> str:
    """What to try when `fmt` loses too much accuracy."""
    if fmt in ("int8", "uint8"):
        return (f"use float16 or dynamic-range instead, or calibrate INT8 on more training images "
                f"(now {calibration_size})")
    if fmt in ("dynamic", "float16"):
        return "use float32 TFLite (no quantization)"
    return "the conversion changed the model: use the Keras or SavedModel artifact and report the problem"


# -- the job ---------------------------------------------------------------------------------


def run_export_job(context) -> ExportReport:
    """The body of an `export` job: reads `exports/request.json` and exports with progress."""
    path = context.run_file(st.EXPORT_REQUEST_FILE)
    request = ExportRequest.from_dict(json.loads(path.read_text())) if path.is_file() else ExportRequest()
    return export_run(context.workspace, context.run_id, request, report=context.report,
                      should_stop=context.raise_if_cancelled)


def export_run(workspace: Workspace, run_id: str, request: ExportRequest = ExportRequest(), *,
               report: Callable[[float, str], None] | None = None, should_stop: Callable[[], None] | None = None,
               calibration_images: np.ndarray | None = None) -> ExportReport:
    """Exports a run in the requested formats and writes the parity report, metadata and model card.

    Args:
        workspace: the workspace holding the run.
        run_id: a completed run.
        request: formats, max accuracy drop, calibration size, latency runs.
        report: `report(progress 0..1, message)`, called as the work advances.
        should_stop: called between steps; raises to stop (e.g. `JobCancelled`).
        calibration_images: `(N, H, W, 3)` images to calibrate INT8 with instead of the
            training split (tests use this to break an export on purpose).

    Returns:
        The `ExportReport`, also written to `exports/report.json`.
    """
    request.validate()
    check_exportable(workspace, run_id)
    report = report or (lambda progress, message: None)
    should_stop = should_stop or (lambda: None)
    import keras

    import engine.models  # noqa: F401 - registers custom layers before loading

    report(0.0, "loading the model and test images")
    config = workspace.get_run(run_id).config
    model = keras.saving.load_model(workspace.run_file(run_id, st.MODEL_FILE), compile=False)
    data = load_run_split(workspace, run_id, config)
    if calibration_images is None:
        rng = np.random.default_rng(config.data.seed)
        chosen = rng.choice(data["train_indices"], size=min(request.calibration_size, len(data["train_indices"])),
                            replace=False)
        calibration_images = data["images"][np.sort(chosen)]
    test_x = data["images"][data["test_indices"]].astype(np.float32)
    labels, ids, class_names = data["labels"], data["ids"], data["class_names"]
    reference = predict_batched(lambda x: np.asarray(model(x, training=False)), test_x)
    reference_accuracy = float(np.mean(reference.argmax(1) == labels))

    out_dir = workspace.run_dir(run_id) / st.EXPORTS_DIR
    out_dir.mkdir(exist_ok=True)
    artifacts: list[ArtifactParity] = []
    steps = len(request.formats)
    for step, fmt in enumerate(request.formats):
        should_stop()
        report(0.05 + 0.95 * step / steps, f"exporting {FORMAT_LABELS[fmt]} ({step + 1}/{steps})")
        started = time.monotonic()
        path = out_dir / ARTIFACT_NAMES[fmt]
        try:
            export_artifact(model, fmt, path, calibration_images=calibration_images,
                            source=workspace.run_file(run_id, st.MODEL_FILE))
            should_stop()
            report(0.05 + 0.95 * (step + 0.5) / steps, f"checking {FORMAT_LABELS[fmt]} ({step + 1}/{steps})")
            runner = load_runner(path, fmt)
            parity = measure_parity(runner, fmt, test_x, labels, ids, reference, max_drop=request.max_drop,
                                    latency_runs=request.latency_runs, calibration_size=len(calibration_images))
            parity = dataclasses.replace(parity, path=str(path.relative_to(workspace.run_dir(run_id))),
                                         size_bytes=artifact_size(path), quantization=runner.quantization,
                                         seconds=time.monotonic() - started)
        except JobCancelled:
            raise
        except Exception as error:  # noqa: BLE001 - one broken format must not hide the others
            log.exception("exporting %s failed", fmt)
            parity = ArtifactParity(format=fmt, path=str(path.relative_to(workspace.run_dir(run_id))),
                                    size_bytes=artifact_size(path) if path.exists() else 0, runtime=RUNTIMES[fmt],
                                    reference_accuracy=reference_accuracy, error=_one_line(error),
                                    suggestion=suggest_fallback(fmt, len(calibration_images)),
                                    seconds=time.monotonic() - started)
        log.info("%s: accuracy %s (reference %.4f), %s bytes, passed=%s", fmt, parity.accuracy, reference_accuracy,
                 parity.size_bytes, parity.passed)
        artifacts.append(parity)

    previous = read_report(workspace, run_id)
    if previous is not None and abs(previous.reference_accuracy - reference_accuracy) < 1e-9:
        kept = [a for a in previous.artifacts if a.format not in request.formats
                and (workspace.run_dir(run_id) / a.path).exists()]
        artifacts = sorted(kept + artifacts, key=lambda a: FORMATS.index(a.format))
    result = ExportReport(run_id=run_id, created_at=time.time(), reference_accuracy=reference_accuracy,
                          max_drop=float(request.max_drop), calibration_size=len(calibration_images),
                          test_size=len(labels), class_names=list(class_names), artifacts=artifacts)
    st.write_json_atomic(workspace.run_file(run_id, st.EXPORT_REPORT_FILE), result.to_dict())
    write_metadata(workspace.run_file(run_id, st.EXPORT_METADATA_FILE), run_id, config, class_names, artifacts)
    from engine.model_card import write_model_card

    write_model_card(workspace, run_id)
    passed = sum(a.passed for a in artifacts)
    report(1.0, f"done: {passed}/{len(artifacts)} artifacts within {request.max_drop:g} points")
    return result


def load_run_split(workspace: Workspace, run_id: str, config: RunConfig | None = None) -> dict:
    """The run's images with its train and test indices, as training split them.

    Returns:
        `{"images", "train_indices", "test_indices", "labels" (test), "ids" (test), "class_names"}`.
    """
    from engine.data import load_images, split_indices

    config = config or workspace.get_run(run_id).config
    images = load_images(config.data.source, config.data.image_size, max_per_class=config.data.max_per_class,
                         seed=config.data.seed, cache_dir=workspace.cache_dir)
    split = split_indices(images.labels, config.data.val_fraction, config.data.test_fraction, config.data.seed,
                          class_names=images.class_names)
    with np.load(workspace.run_file(run_id, st.PREDICTIONS_FILE)) as saved:
        test = saved["indices"] if "indices" in saved else split.test
    return {"images": images.images, "train_indices": np.asarray(split.train), "test_indices": np.asarray(test),
            "labels": np.asarray(images.labels)[test], "ids": [images.ids[i] for i in test],
            "class_names": list(images.class_names)}


# -- converting -------------------------------------------------------------------------------


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
    if fmt in TFLITE_FORMATS:
        path.write_bytes(convert_tflite(model, fmt, calibration_images))
    elif fmt == "saved_model":
        model.export(str(path), format="tf_saved_model", verbose=False)
    elif fmt == "onnx":
        export_onnx(model, path)
    elif source is not None:
        shutil.copyfile(source, path)
    else:
        model.save(path)
    return path


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
    if fmt != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if fmt == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if fmt in ("int8", "uint8"):
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


# -- running artifacts in their own runtimes ---------------------------------------------------


class Runner:
    """Runs one exported artifact: `predict(images)` maps float32 0..255 RGB to probabilities."""

    quantization: dict = {}

    def predict(self, images: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class TFLiteRunner(Runner):
    """A `.tflite` file in LiteRT, quantizing inputs and dequantizing outputs with the model's own parameters.

    Args:
        path: the `.tflite` file.
        num_threads: interpreter threads. Default 2.
    """

    def __init__(self, path: str | os.PathLike, num_threads: int = 2):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
        self.interpreter.allocate_tensors()
        self._input = self.interpreter.get_input_details()[0]
        self._output = self.interpreter.get_output_details()[0]
        self._batch = int(self._input["shape"][0])
        self.input_dtype = np.dtype(self._input["dtype"])
        self.output_dtype = np.dtype(self._output["dtype"])
        in_scale, in_zero = self._input["quantization"]
        out_scale, out_zero = self._output["quantization"]
        self.quantization = {"input_dtype": self.input_dtype.name, "output_dtype": self.output_dtype.name}
        if in_scale:
            self.quantization.update(input_scale=float(in_scale), input_zero_point=int(in_zero))
        if out_scale:
            self.quantization.update(output_scale=float(out_scale), output_zero_point=int(out_zero))

    def predict(self, images: np.ndarray) -> np.ndarray:
        x = np.asarray(images, dtype=np.float32)
        if len(x) != self._batch:
            self.interpreter.resize_tensor_input(self._input["index"], [len(x), *x.shape[1:]], strict=False)
            self.interpreter.allocate_tensors()
            self._input = self.interpreter.get_input_details()[0]
            self._output = self.interpreter.get_output_details()[0]
            self._batch = len(x)
        if self.input_dtype in (np.int8, np.uint8):
            scale, zero = self._input["quantization"]
            info = np.iinfo(self.input_dtype)
            x = np.clip(np.round(x / scale + zero), info.min, info.max).astype(self.input_dtype)
        self.interpreter.set_tensor(self._input["index"], x)
        self.interpreter.invoke()
        y = self.interpreter.get_tensor(self._output["index"])
        if self.output_dtype in (np.int8, np.uint8):
            scale, zero = self._output["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        return np.asarray(y, dtype=np.float32)


class SavedModelRunner(Runner):
    """A SavedModel folder through its `serving_default` signature in TensorFlow."""

    def __init__(self, path: str | os.PathLike):
        import tensorflow as tf

        self._tf = tf
        self.loaded = tf.saved_model.load(str(path))
        self.function = self.loaded.signatures["serving_default"]
        self.quantization = {"input_dtype": "float32", "output_dtype": "float32"}

    def predict(self, images: np.ndarray) -> np.ndarray:
        outputs = self.function(self._tf.constant(np.asarray(images, dtype=np.float32)))
        return np.asarray(next(iter(outputs.values())), dtype=np.float32)


class OnnxRunner(Runner):
    """An `.onnx` file in onnxruntime on the CPU."""

    def __init__(self, path: str | os.PathLike, num_threads: int = 2):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.quantization = {"input_dtype": "float32", "output_dtype": "float32"}

    def predict(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(self.session.run(None, {self.input_name: np.asarray(images, dtype=np.float32)})[0])


class KerasRunner(Runner):
    """A `.keras` file loaded by Keras."""

    def __init__(self, path: str | os.PathLike):
        import keras

        import engine.models  # noqa: F401 - custom layers

        self.model = keras.saving.load_model(str(path), compile=False)
        self.quantization = {"input_dtype": "float32", "output_dtype": "float32"}

    def predict(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(self.model(np.asarray(images, dtype=np.float32), training=False), dtype=np.float32)


def load_runner(path: str | os.PathLike, fmt: str) -> Runner:
    """Loads an artifact in its own runtime: LiteRT, TensorFlow (SavedModel), onnxruntime or Keras."""
    if fmt in TFLITE_FORMATS:
        return TFLiteRunner(path)
    if fmt == "saved_model":
        return SavedModelRunner(path)
    if fmt == "onnx":
        return OnnxRunner(path)
    if fmt == "keras":
        return KerasRunner(path)
    raise ExportError(f"format={fmt!r}: choose from {', '.join(FORMATS)}")


def predict_batched(predict: Callable[[np.ndarray], np.ndarray], images: np.ndarray,
                    batch_size: int = BATCH_SIZE) -> np.ndarray:
    """Runs `predict` over `images` in batches of `batch_size` and stacks the results."""
    parts = [predict(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
    return np.concatenate(parts).astype(np.float32)


def measure_parity(runner: Runner, fmt: str, images: np.ndarray, labels: np.ndarray, ids: list[str],
                   reference: np.ndarray, *, max_drop: float = DEFAULT_MAX_DROP,
                   latency_runs: int = DEFAULT_LATENCY_RUNS, calibration_size: int = 0) -> ArtifactParity:
    """Compares an artifact's test predictions with the Keras model's and times it.

    Args:
        runner: the loaded artifact.
        fmt: its format (for the label and the fallback suggestion).
        images: `(N, H, W, 3)` float32 test images in 0..255.
        labels: `(N,)` true classes.
        ids: `N` test image ids (reported for flipped predictions).
        reference: `(N, classes)` Keras probabilities for the same images.
        max_drop: accuracy points the artifact may lose before it fails. Default 1.0.
        latency_runs: timed single-image runs. Default 50.
        calibration_size: INT8 calibration images used (for the suggestion).

    Returns:
        An `ArtifactParity` (path and size left for the caller to fill in).
    """
    labels = np.asarray(labels)
    probabilities = predict_batched(runner.predict, images)
    predicted, expected = probabilities.argmax(1), reference.argmax(1)
    accuracy = float(np.mean(predicted == labels))
    reference_accuracy = float(np.mean(expected == labels))
    drop = 100 * (reference_accuracy - accuracy)
    per_class = []
    for c in range(reference.shape[1]):
        mask = labels == c
        per_class.append(round(100 * float(np.mean(expected[mask] == c) - np.mean(predicted[mask] == c)), 4)
                         if mask.any() else 0.0)
    flipped = [ids[i] for i in np.flatnonzero(predicted != expected)]
    single, batch = time_runner(runner, images, runs=latency_runs)
    passed = drop <= max_drop + 1e-9
    return ArtifactParity(
        format=fmt, path="", size_bytes=0, runtime=RUNTIMES.get(fmt, ""), accuracy=accuracy,
        reference_accuracy=reference_accuracy, accuracy_drop=round(drop, 4), per_class_delta=per_class,
        flipped=flipped, mean_abs_prob_diff=float(np.mean(np.abs(probabilities - reference))),
        latency_ms_median=statistics.median(single), latency_ms_p95=float(np.percentile(single, 95)),
        batch_latency_ms_median=statistics.median(batch), batch_size=min(BATCH_SIZE, len(images)),
        passed=passed, suggestion=None if passed else suggest_fallback(fmt, calibration_size))


def time_runner(runner: Runner, images: np.ndarray, *, runs: int = DEFAULT_LATENCY_RUNS,
                batch_runs: int = 10) -> tuple[list[float], list[float]]:
    """Milliseconds per single-image prediction (`runs` times) and per batch (`batch_runs` times)."""
    runner.predict(images[:1])  # warm-up (and a resize, for LiteRT)
    single = []
    for i in range(runs):
        image = images[i % len(images)][None]
        started = time.perf_counter()
        runner.predict(image)
        single.append(1000 * (time.perf_counter() - started))
    batch_images = images[:BATCH_SIZE]
    runner.predict(batch_images)
    batch = []
    for _ in range(batch_runs):
        started = time.perf_counter()
        runner.predict(batch_images)
        batch.append(1000 * (time.perf_counter() - started))
    return single, batch


# -- metadata ---------------------------------------------------------------------------------


def export_metadata(run_id: str, config: RunConfig, class_names: list[str], artifacts: list[ArtifactParity]) -> dict:
    """What a consumer needs to feed an exported model and read its output."""
    size = config.data.image_size
    return {
        "run_id": run_id,
        "model": config.model.name,
        "class_names": list(class_names),
        "input": {
            "name": "image", "shape": [None, size, size, 3], "dtype": "float32", "color": "RGB",
            "range": [0.0, 255.0], "scale": 1.0, "mean": [0.0, 0.0, 0.0],
            "resize": f"bilinear to {size}x{size}, aspect ratio not kept",
            "preprocessing": ("none outside the model: pass raw 0..255 RGB pixels; the model rescales inside "
                              "its graph"),
        },
        "output": {"name": "probabilities", "shape": [None, len(class_names)], "activation": "softmax"},
        "artifacts": {a.format: {"path": a.path, "runtime": a.runtime, **a.quantization} for a in artifacts
                      if not a.error},
        "quantization_note": ("integer inputs: q = round(x / input_scale + input_zero_point); integer outputs: "
                              "p = (q - output_zero_point) * output_scale"),
    }


def write_metadata(path: Path, run_id: str, config: RunConfig, class_names: list[str],
                   artifacts: list[ArtifactParity]) -> dict:
    metadata = export_metadata(run_id, config, class_names, artifacts)
    path.parent.mkdir(parents=True, exist_ok=True)
    st.write_json_atomic(path, metadata)
    return metadata


def summary(report: ExportReport, artifact: ArtifactParity, workspace: Workspace) -> dict[str, Any]:
    """The CLI's JSON for one artifact."""
    return {"run_id": report.run_id, "format": artifact.format,
            "path": str(workspace.run_dir(report.run_id) / artifact.path), "size_bytes": artifact.size_bytes,
            "accuracy": artifact.accuracy, "reference_accuracy": report.reference_accuracy,
            "accuracy_drop_points": artifact.accuracy_drop, "flipped": len(artifact.flipped),
            "flipped_ids": artifact.flipped, "mean_abs_prob_diff": artifact.mean_abs_prob_diff,
            "latency_ms_median": artifact.latency_ms_median, "latency_ms_p95": artifact.latency_ms_p95,
            "batch_latency_ms_median": artifact.batch_latency_ms_median, "passed": artifact.passed,
            "max_drop": report.max_drop, "suggestion": artifact.suggestion, "error": artifact.error}


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
