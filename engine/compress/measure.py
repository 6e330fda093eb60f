"""What a compress report measures of a model: parameters, file size (plain and gzip), accuracy, latency."""

from __future__ import annotations

import gzip
import statistics
import tempfile
from pathlib import Path

import numpy as np

from engine.export.runners import Runner, predict_batched, time_runner

LATENCY_RUNS = 30


class ModelRunner(Runner):
    """A Keras model in memory, timed like an exported artifact: its forward pass traced once as a `tf.function`
    (an eager call costs Python per layer, which would swamp a small model's latency)."""

    def __init__(self, model):
        import tensorflow as tf

        self.model = model
        spec = tf.TensorSpec([None, *model.input_shape[1:]], tf.float32)
        self._forward = tf.function(lambda x: model(x, training=False), input_signature=[spec])

    def predict(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(self._forward(np.asarray(images, dtype=np.float32)), dtype=np.float32)


def gzip_size(data: bytes) -> int:
    """Bytes after gzip at level 9 (how well the zeros of a pruned model compress)."""
    return len(gzip.compress(data, compresslevel=9))


def keras_bytes(model, path: Path | None = None) -> bytes:
    """The `.keras` file of `model` (read from `path` if given, else an uncompiled copy saved to a temporary file:
    no optimizer state, so models trained differently compare by what they ship)."""
    if path is not None:
        return Path(path).read_bytes()
    from engine.compress.prune import strip

    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "model.keras"
        strip(model).save(target)
        return target.read_bytes()


def model_facts(model, test_x: np.ndarray, test_labels: np.ndarray, *, path: Path | None = None,
                probabilities: np.ndarray | None = None, latency_runs: int = LATENCY_RUNS) -> dict:
    """`{"params", "accuracy", "size_bytes", "gzip_bytes", "latency_ms"}` of a Keras model on the test split."""
    if probabilities is None:
        probabilities = predict_batched(ModelRunner(model).predict, test_x)
    data = keras_bytes(model, path)
    single, _ = time_runner(ModelRunner(model), test_x, runs=latency_runs, batch_runs=1)
    return {"params": int(model.count_params()),
            "accuracy": float(np.mean(np.asarray(probabilities).argmax(1) == np.asarray(test_labels))),
            "size_bytes": len(data), "gzip_bytes": gzip_size(data), "latency_ms": statistics.median(single)}


def tflite_sizes(model) -> dict:
    """The float32 `.tflite` of `model`: plain and gzip bytes."""
    from engine.export.convert import convert_tflite

    data = convert_tflite(model, "float32")
    return {"size_bytes": len(data), "gzip_bytes": gzip_size(data)}
