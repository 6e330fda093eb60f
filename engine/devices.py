"""Device set-up for a job process: GPU memory growth, mixed precision, distribution strategy.

Follows TensorFlow's GPU guide: memory growth on every GPU, `MirroredStrategy` across
several, the `mixed_float16` policy on GPUs. On a machine without GPUs the CPU can be
split into logical devices (`APERTURE_CPU_DEVICES=2`) so the mirrored path runs for real.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from engine.cpu import ISA_ENV, ONEDNN_ENV, onednn_setting

CPU_DEVICES_ENV = "APERTURE_CPU_DEVICES"
COLLECTIVE_TIMEOUT_ENV = "APERTURE_COLLECTIVE_TIMEOUT"
# How long one collective (a gradient all-reduce) may wait across workers before the run fails: a dead worker
# must fail the run, not hang it. Generous, since the others wait at the next collective while the chief
# validates and writes checkpoints.
COLLECTIVE_TIMEOUT_SECONDS = 300.0

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeviceSetup:
    """What a job trains on.

    Attributes:
        strategy: the `tf.distribute.Strategy` to build and fit the model under.
        label: a short human description, e.g. `CPU` or `2x GPU (mirrored)`.
        replicas: number of devices the batch is split across.
        mixed_precision: whether the `mixed_float16` policy is active.
        workers: the worker processes training the model together (1: this process alone).
        chief: whether this process writes the run's progress, metrics and checkpoints (worker 0).
    """

    strategy: Any
    label: str
    replicas: int
    mixed_precision: bool
    workers: int = 1
    chief: bool = True


def configure_devices(mixed_precision: str = "auto", *, workers: int = 1) -> DeviceSetup:
    """Configures TensorFlow's devices once per process, before any op runs.

    Args:
        mixed_precision: `auto` (on when training on GPUs), `on` (also on the CPU, where it
            is slower and only useful for testing) or `off`.
        workers: more than 1 in one of several worker processes that train one model together
            (`TF_CONFIG` names them): `MultiWorkerMirroredStrategy` over every worker's GPUs (NCCL) or
            CPU (ring all-reduce), each collective limited to `$APERTURE_COLLECTIVE_TIMEOUT` seconds
            (default `COLLECTIVE_TIMEOUT_SECONDS`). Default 1.

    Returns:
        The `DeviceSetup` to train with.
    """
    with quiet_cuda_probe():
        import keras
        import tensorflow as tf

    with quiet_cuda_probe():
        gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        # Without memory growth TensorFlow reserves the whole card at start-up.
        tf.config.experimental.set_memory_growth(gpu, True)

    cpu_split = int(os.environ.get(CPU_DEVICES_ENV, "0") or 0)
    task = 0
    if workers > 1:
        strategy = _multi_worker_strategy(tf, bool(gpus))
        task = strategy.cluster_resolver.task_id
        local = f"{len(gpus)}x GPU" if gpus else "CPU"
        label = f"{workers} workers x {local} (multi-worker mirrored)"
    elif gpus:
        names = [tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus]
        if len(gpus) > 1:
            strategy, label = tf.distribute.MirroredStrategy(), f"{len(gpus)}x GPU (mirrored: {names[0]})"
        else:
            strategy, label = tf.distribute.get_strategy(), f"GPU ({names[0]})"
    elif cpu_split > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_split)
        devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        strategy, label = tf.distribute.MirroredStrategy(devices=devices), f"{len(devices)}x CPU (mirrored, logical)"
    else:
        strategy, label = tf.distribute.get_strategy(), "CPU"

    use_mixed = mixed_precision == "on" or (mixed_precision == "auto" and bool(gpus))
    if use_mixed and not gpus:
        _check_float16_on_cpu()
    keras.mixed_precision.set_global_policy("mixed_float16" if use_mixed else "float32")
    if use_mixed:
        label += ", mixed float16"
    log.info("training on %s", label)
    return DeviceSetup(strategy=strategy, label=label, replicas=strategy.num_replicas_in_sync,
                       mixed_precision=use_mixed, workers=workers, chief=task == 0)


def _multi_worker_strategy(tf, gpus: bool):
    """`MultiWorkerMirroredStrategy` as TensorFlow's multi-worker guide sets it up, with a collective timeout."""
    timeout = float(os.environ.get(COLLECTIVE_TIMEOUT_ENV) or COLLECTIVE_TIMEOUT_SECONDS)
    implementation = (tf.distribute.experimental.CommunicationImplementation.NCCL if gpus
                      else tf.distribute.experimental.CommunicationImplementation.RING)
    options = tf.distribute.experimental.CommunicationOptions(implementation=implementation, timeout_seconds=timeout)
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)


def _check_float16_on_cpu() -> None:
    """Fails clearly where oneDNN, limited to AVX2 against the AVX-512 crash, has no float16 convolutions.

    TensorFlow would otherwise abort the first float16 Conv2D with an opaque `AbortedError`.
    """
    setting = onednn_setting()
    if setting.source == "aperture" and setting.variable == ISA_ENV:
        raise ValueError(
            f"train.mixed_precision=on: float16 convolutions are not available on this CPU with "
            f"{setting.variable}={setting.value} (Aperture's guard against oneDNN's AVX-512 crash); train in "
            f"float32 (mixed_precision=auto or off), on a GPU, or start Aperture with {ONEDNN_ENV}=0 "
            "(oneDNN off: float16 works on the CPU, more slowly)")


@contextlib.contextmanager
def quiet_cuda_probe() -> Iterator[None]:
    """Hides TensorFlow's native start-up lines about missing CUDA drivers on GPU-less machines.

    Importing TensorFlow and first listing devices print "Could not find cuda drivers" and
    "failed call to cuInit" straight to file descriptor 2; on a machine without an NVIDIA
    driver they are noise at the top of every job log. Where a driver exists nothing is hidden.
    """
    if Path("/proc/driver/nvidia").exists():
        yield
        return
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
