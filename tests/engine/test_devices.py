"""Device set-up on real TensorFlow: the GPU code paths (mirrored strategy, mixed precision) exercised on the CPU.

Logical CPU devices must be configured before TensorFlow initialises its runtime, so the
split-CPU and mixed-precision cases run as real jobs in fresh processes; the plain case
runs in-process.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from engine import jobs
from engine import store as st
from engine.config import RunConfig
from engine.devices import CPU_DEVICES_ENV

TINY = {"data": {"source": "digits", "image_size": 16, "max_per_class": 30},
        "train": {"epochs": 2, "batch_size": 16}}


def run_tiny_job(workspace, **train):
    config = RunConfig.from_dict({**TINY, "train": {**TINY["train"], **train}})
    run = jobs.submit(config, workspace)
    run = jobs.wait(run.id, workspace, poll_seconds=0.3)
    assert run.status == st.COMPLETED, (run.job.error, run.job.traceback,
                                        jobs.read_log_tail(workspace, run.id, lines=60))
    return run


@pytest.fixture
def float32_policy():
    """Restores the global Keras dtype policy after a test that may change it."""
    import keras

    before = keras.mixed_precision.global_policy().name
    yield
    keras.mixed_precision.set_global_policy(before)


@pytest.mark.slow
def test_split_cpu_trains_a_real_job_with_mirrored_strategy(workspace, monkeypatch):
    monkeypatch.setenv(CPU_DEVICES_ENV, "2")  # inherited by the job process
    run = run_tiny_job(workspace)

    assert run.device == "2x CPU (mirrored, logical)"
    assert isinstance(run.test_accuracy, float) and 0.0 <= run.test_accuracy <= 1.0
    epochs = workspace.epochs(run.id)
    assert [e.epoch for e in epochs] == [1, 2]
    assert all(e.images_per_second and e.images_per_second > 0 and math.isfinite(e.loss) for e in epochs)
    log_text = workspace.run_file(run.id, st.LOG_FILE).read_text(errors="replace")
    assert "MirroredStrategy" in log_text, log_text[-3000:]
    # Keras logs the number of steps per epoch (verbose=2 prints "N/N"): with two replicas
    # the global batch is 2 x 16, so 300 images x 0.7 train split -> 7 steps, not 14.
    report = json.loads(workspace.run_file(run.id, st.DATA_REPORT_FILE).read_text())
    train_size = sum(report["counts"]["train"])
    assert f"{math.ceil(train_size / 32)}/{math.ceil(train_size / 32)}" in log_text, log_text[-3000:]
    assert workspace.run_file(run.id, st.MODEL_FILE).stat().st_size > 0


@pytest.mark.slow
def test_mixed_precision_on_cpu_trains_and_saves_a_float32_model(workspace, monkeypatch, float32_policy):
    monkeypatch.delenv(CPU_DEVICES_ENV, raising=False)
    run = run_tiny_job(workspace, mixed_precision="on")

    assert "mixed float16" in run.device and run.device.startswith("CPU")
    assert isinstance(run.test_accuracy, float) and 0.0 <= run.test_accuracy <= 1.0

    import keras

    import engine.models  # noqa: F401 - registers the custom layers before loading

    model = keras.models.load_model(workspace.run_file(run.id, st.MODEL_FILE))
    batch = np.random.default_rng(0).uniform(0, 255, (4, 16, 16, 3)).astype(np.float32)
    probabilities = keras.ops.convert_to_numpy(model(batch, training=False))
    assert probabilities.dtype == np.float32
    assert probabilities.shape == (4, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-3)
    predictions = np.load(workspace.run_file(run.id, st.PREDICTIONS_FILE))
    assert predictions["probabilities"].dtype == np.float32
    assert np.isfinite(predictions["probabilities"]).all()


def test_configure_devices_off_is_plain_cpu_float32(monkeypatch, float32_policy):
    import keras
    import tensorflow as tf

    from engine.devices import configure_devices

    monkeypatch.delenv(CPU_DEVICES_ENV, raising=False)
    setup = configure_devices("off")

    assert setup.label == "CPU"
    assert setup.replicas == 1
    assert setup.mixed_precision is False
    assert setup.strategy is tf.distribute.get_strategy()
    assert keras.mixed_precision.global_policy().name == "float32"


def test_configure_devices_auto_without_gpu_stays_float32(monkeypatch, float32_policy):
    import keras

    from engine.devices import configure_devices

    monkeypatch.delenv(CPU_DEVICES_ENV, raising=False)
    setup = configure_devices("auto")
    assert (setup.label, setup.replicas, setup.mixed_precision) == ("CPU", 1, False)
    assert keras.mixed_precision.global_policy().name == "float32"
