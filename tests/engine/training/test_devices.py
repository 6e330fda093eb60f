"""Device set-up on real TensorFlow: the GPU code paths (mirrored strategy, mixed precision) exercised on the CPU.

Logical CPU devices must be configured before TensorFlow initialises its runtime, so the
split-CPU and mixed-precision cases run as real jobs in fresh processes; the plain case
runs in-process.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine import jobs
from engine import store
from engine.config import RunConfig
from engine.cpu import CHOICE_ENV, ISA_ENV, ONEDNN_ENV, cpu_flags
from engine.devices import CPU_DEVICES_ENV
from engine.runfolder import RunFolder

AVX512 = "avx512f" in cpu_flags()

TINY = {"data": {"source": "digits", "image_size": 16, "max_per_class": 30},
        "train": {"epochs": 2, "batch_size": 16}}


def run_tiny_job(workspace, **train):
    config = RunConfig.from_dict({**TINY, "train": {**TINY["train"], **train}})
    run = jobs.submit(config, workspace)
    run = jobs.wait(run.id, workspace, poll_seconds=0.3)
    assert run.status == store.COMPLETED, (run.job.error, run.job.traceback,
                                        jobs.read_log_tail(workspace, run.id, lines=60))
    return run


@pytest.mark.slow
def test_split_cpu_trains_a_real_job_with_mirrored_strategy(workspace, monkeypatch):
    monkeypatch.setenv(CPU_DEVICES_ENV, "2")  # inherited by the job process
    run = run_tiny_job(workspace)

    assert run.device == "2x CPU (mirrored, logical)"
    assert isinstance(run.test_accuracy, float) and 0.0 <= run.test_accuracy <= 1.0
    epochs = workspace.epochs(run.id)
    assert [e.epoch for e in epochs] == [1, 2]
    assert all(e.images_per_second and e.images_per_second > 0 and math.isfinite(e.loss) for e in epochs)
    log_text = RunFolder(workspace, run.id).log_file.read_text(errors="replace")
    assert "MirroredStrategy" in log_text, log_text[-3000:]
    # Keras logs the number of steps per epoch (verbose=2 prints "N/N"): with two replicas
    # the global batch is 2 x 16, so 300 images x 0.7 train split -> 7 steps, not 14.
    report = json.loads(RunFolder(workspace, run.id).data_report_file.read_text())
    train_size = sum(report["counts"]["train"])
    assert f"{math.ceil(train_size / 32)}/{math.ceil(train_size / 32)}" in log_text, log_text[-3000:]
    assert RunFolder(workspace, run.id).model_file.stat().st_size > 0


@pytest.mark.slow
def test_mixed_precision_on_cpu_trains_and_saves_a_float32_model(workspace, monkeypatch):
    monkeypatch.delenv(CPU_DEVICES_ENV, raising=False)
    if AVX512:  # oneDNN limited to AVX2 has no float16 convolutions: what a user does to run float16 here
        monkeypatch.setenv(ONEDNN_ENV, "0")
    run = run_tiny_job(workspace, mixed_precision="on")

    assert "mixed float16" in run.device and run.device.startswith("CPU")
    assert isinstance(run.test_accuracy, float) and 0.0 <= run.test_accuracy <= 1.0
    # The saved model computes in float16 inside, so it is loaded where the job ran: a fresh process.
    check = subprocess.run([sys.executable, "-c", RELOAD_PROBE, str(RunFolder(workspace, run.id).model_file)],
                           env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[3])),
                           capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stderr[-3000:]
    assert check.stdout.strip().splitlines()[-1] == "float32 (4, 10)"


RELOAD_PROBE = """
import sys
import keras, numpy as np
import engine.models  # registers the custom layers before loading
model = keras.models.load_model(sys.argv[1])
batch = np.random.default_rng(0).uniform(0, 255, (4, 16, 16, 3)).astype(np.float32)
probabilities = keras.ops.convert_to_numpy(model(batch, training=False))
print(probabilities.dtype, probabilities.shape)
"""


@pytest.mark.slow
@pytest.mark.skipif(not AVX512, reason="oneDNN is limited to AVX2 only on AVX-512 CPUs")
def test_mixed_precision_under_the_avx2_limit_fails_with_what_to_do(workspace, monkeypatch):
    monkeypatch.delenv(ONEDNN_ENV, raising=False)
    monkeypatch.setenv(ISA_ENV, "AVX2")
    monkeypatch.setenv(CHOICE_ENV, f"{ISA_ENV}=AVX2")
    config = RunConfig.from_dict({**TINY, "train": {**TINY["train"], "mixed_precision": "on"}})
    run = jobs.wait(jobs.submit(config, workspace).id, workspace, poll_seconds=0.3)
    assert run.status == store.FAILED
    assert run.job.error.startswith("ValueError: train.mixed_precision=on: float16 convolutions are not available")
    assert f"{ONEDNN_ENV}=0" in run.job.error
