"""`engine doctor`: what this machine gives TensorFlow: CPU features, the oneDNN setting, GPUs and versions."""

from __future__ import annotations

import os
import platform
from importlib import metadata

from engine.cpu import VECTOR_FLAGS, cpu_flags, cpu_model, onednn_setting

PACKAGES = ("tensorflow", "keras", "numpy", "streamlit", "scikit-learn", "ai-edge-litert", "onnxruntime", "shap",
            "lime")


def diagnose() -> dict:
    """Reports the machine as the job processes will see it (imports TensorFlow: a few seconds).

    Returns:
        A JSON-able dict: `cpu` (model, cores, vector `features`), `onednn` (the setting in
        force and why), `gpus` (names TensorFlow sees), `tensorflow` (build facts) and `versions`.
    """
    from engine.devices import quiet_cuda_probe

    with quiet_cuda_probe():
        import tensorflow as tf

        gpus = [tf.config.experimental.get_device_details(g).get("device_name", g.name)
                for g in tf.config.list_physical_devices("GPU")]
    build = tf.sysconfig.get_build_info()
    flags = cpu_flags()
    return {
        "cpu": {"model": cpu_model(), "cores": os.cpu_count(), "machine": platform.machine(),
                "features": [f for f in VECTOR_FLAGS if f in flags]},
        "onednn": {**onednn_setting().to_json(), "description": onednn_setting().describe()},
        "gpus": gpus,
        "tensorflow": {"cuda_build": bool(build.get("is_cuda_build")), "cuda": build.get("cuda_version"),
                       "cudnn": build.get("cudnn_version")},
        "versions": {"python": platform.python_version(), **{name: _version(name) for name in PACKAGES}},
    }


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def check_cluster(workspace) -> dict | None:
    """With `APERTURE_BACKEND=ray`: the cluster's nodes, and whether a worker node sees this workspace.

    Returns:
        None on the local backend, else `engine.jobs.backends.ray_doctor.check_cluster`'s report.
    """
    if (os.environ.get("APERTURE_BACKEND") or "local") != "ray":
        return None
    from engine.jobs.backends.ray_doctor import check_cluster as check_ray_cluster

    return check_ray_cluster(workspace)
