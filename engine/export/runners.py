"""Running an exported artifact in its own runtime, and measuring its parity and latency."""

from __future__ import annotations

import os
import statistics
import time
from typing import Callable

import numpy as np

from engine.export.formats import FORMATS
from engine.export.report import (
    BATCH_SIZE,
    DEFAULT_LATENCY_RUNS,
    DEFAULT_MAX_DROP,
    ArtifactParity,
    ExportError,
    suggest_fallback,
)


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
    """A `.keras` file loaded by Keras, its forward pass traced once as a `tf.function` for any batch size
    (an eager call of a small ResNet costs about 10x the traced one: Python per layer)."""

    def __init__(self, path: str | os.PathLike):
        import keras
        import tensorflow as tf

        import engine.models  # noqa: F401 - custom layers

        self.model = keras.saving.load_model(str(path), compile=False)
        self.quantization = {"input_dtype": "float32", "output_dtype": "float32"}
        spec = tf.TensorSpec([None, *self.model.input_shape[1:]], tf.float32)
        self._forward = tf.function(lambda x: self.model(x, training=False), input_signature=[spec])

    def predict(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(self._forward(np.asarray(images, dtype=np.float32)), dtype=np.float32)


def load_runner(path: str | os.PathLike, fmt: str) -> Runner:
    """Loads an artifact in its own runtime (the format's `Format.serve`): LiteRT, TensorFlow, onnxruntime or Keras."""
    if fmt not in FORMATS:
        raise ExportError(f"format={fmt!r}: choose from {', '.join(FORMATS)}")
    return FORMATS[fmt].runner()(path)


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
        format=fmt, path="", size_bytes=0, runtime=FORMATS[fmt].runtime if fmt in FORMATS else "",
        accuracy=accuracy,
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
