"""The CPU TensorFlow runs on, and the oneDNN setting that keeps TensorFlow alive there.

TensorFlow 2.21's oneDNN kernels corrupt memory on AVX-512 CPUs (a small ResNet's
convolution backward pass dies with `free(): invalid pointer`, `double free or corruption`
or a segmentation fault; tensorflow/tensorflow#117700, #57749). Limiting oneDNN to AVX2
(`DNNL_MAX_CPU_ISA=AVX2`) avoids it for a few per cent of throughput; turning oneDNN off
(`TF_ENABLE_ONEDNN_OPTS=0`) also avoids it but costs about a third
(`tests/benchmarks/bench_training.py --mitigation` measures both on the machine at hand).

`prepare_environment()` runs when the `engine` package is imported, so it comes before
TensorFlow in every process that goes through the engine: the CLI, job and standby
processes, the dashboard, the tests. Child processes inherit the variables.
"""

from __future__ import annotations

import logging
import os
import platform
import sys
from dataclasses import dataclass
from typing import Mapping, MutableMapping

ISA_ENV = "DNNL_MAX_CPU_ISA"
ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"
# Set beside the mitigation so that a child process knows the variable came from us, not the user.
CHOICE_ENV = "APERTURE_ONEDNN_MITIGATION"
MITIGATION_ISA = "AVX2"  # measured: AVX512_CORE and AVX512_CORE_BF16 crash too, AVX2 and AVX2_VNNI do not
# Flags from /proc/cpuinfo that say which vector units TensorFlow's kernels can use.
VECTOR_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
                "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")

log = logging.getLogger(__name__)
_setting: OneDnnSetting | None = None
_logged = False


@dataclass(frozen=True)
class OneDnnSetting:
    """What this process runs oneDNN with, and why.

    Attributes:
        source: `aperture` (set by `prepare_environment`), `user` (the user set one of the
            variables) or `default` (nothing set: TensorFlow's defaults).
        variable: the variable in force (`DNNL_MAX_CPU_ISA` or `TF_ENABLE_ONEDNN_OPTS`), or None.
        value: its value, or None.
        reason: one sentence on why.
    """

    source: str
    variable: str | None
    value: str | None
    reason: str

    def describe(self) -> str:
        """One line for logs and `engine doctor`, e.g. `DNNL_MAX_CPU_ISA=AVX2 (set by Aperture: ...)`."""
        if self.variable is None:
            return f"oneDNN defaults ({self.reason})"
        who = "set by Aperture" if self.source == "aperture" else "set by the user"
        return f"{self.variable}={self.value} ({who}: {self.reason})"

    def to_json(self) -> dict:
        return {"source": self.source, "variable": self.variable, "value": self.value, "reason": self.reason}


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The CPU's feature flags (Linux `/proc/cpuinfo`); empty where they cannot be read."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            return frozenset()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def cpu_model() -> str:
    """The CPU's model name, e.g. `AMD EPYC 9R14 96-Core Processor`."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def choose_onednn_setting(flags: frozenset[str], environ: Mapping[str, str]) -> OneDnnSetting:
    """Decides the oneDNN setting for a CPU with `flags`, respecting what the user set.

    Args:
        flags: CPU feature flags, as `cpu_flags()` returns them.
        environ: the process environment (read only).

    Returns:
        The setting; `source="aperture"` means `environ` needs `DNNL_MAX_CPU_ISA=AVX2` set.
    """
    ours = environ.get(CHOICE_ENV)
    for variable in (ISA_ENV, ONEDNN_ENV):
        value = environ.get(variable)
        if value is not None and ours != f"{variable}={value}":
            return OneDnnSetting("user", variable, value, "left as the user set it")
    if "avx512f" in flags:
        return OneDnnSetting("aperture", ISA_ENV, MITIGATION_ISA,
                             "this CPU has AVX-512, where TensorFlow's oneDNN kernels corrupt memory; "
                             "AVX2 kernels do not (see the README's CPUs section)")
    return OneDnnSetting("default", None, None, "no AVX-512 on this CPU")


def prepare_environment(environ: MutableMapping[str, str] | None = None) -> OneDnnSetting:
    """Sets the oneDNN mitigation in `environ` (default `os.environ`) before TensorFlow is imported.

    Idempotent; the decision is kept for `onednn_setting()`. If TensorFlow is already imported
    the variable can no longer take effect, and a warning says so.
    """
    global _setting
    target = os.environ if environ is None else environ
    setting = choose_onednn_setting(cpu_flags(), target)
    if setting.source == "aperture":
        target[setting.variable] = setting.value
        target[CHOICE_ENV] = f"{setting.variable}={setting.value}"
        if environ is None and "tensorflow" in sys.modules:
            log.warning("TensorFlow was imported before the engine, so %s=%s cannot take effect in this process; "
                        "set it before starting Python", setting.variable, setting.value)
    if environ is None:
        _setting = setting
    return setting


def onednn_setting() -> OneDnnSetting:
    """The setting this process runs with (prepared on first use)."""
    return _setting or prepare_environment()


def log_onednn_setting() -> None:
    """Logs the setting once per process (job processes call it before importing TensorFlow)."""
    global _logged
    if not _logged:
        _logged = True
        log.info("oneDNN: %s", onednn_setting().describe())
