"""The oneDNN setting for AVX-512 CPUs, and the crash it prevents, in fresh processes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.cpu import CHOICE_ENV, ISA_ENV, ONEDNN_ENV, choose_onednn_setting, cpu_flags

PROJECT_ROOT = Path(__file__).resolve().parents[2]
AVX512 = frozenset({"avx2", "avx512f", "avx512bw"})
AVX2_ONLY = frozenset({"avx", "avx2", "fma"})

# The computations that died on an AVX-512 CPU under oneDNN's defaults (TensorFlow 2.21):
# a width-8 ResNet's training steps and the Grad-CAM gradient of its last conv block.
CRASH_PROBE = """
import json, os
import engine  # prepares the environment, as every process that goes through the engine does
import keras, numpy as np, tensorflow as tf
from engine.config import ModelConfig
from engine.models import last_conv_layer_name, make_model
config = ModelConfig(name="resnet", width=8, depth=1)
rng = np.random.default_rng(0)
x = rng.uniform(0, 255, (64, 32, 32, 3)).astype("float32")
y = rng.integers(0, 10, 64)
model = make_model(config, (32, 32, 3), 10, seed=1)
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
model.fit(x, y, batch_size=32, epochs=3, verbose=0)
grad_model = keras.Model(model.inputs, [model.get_layer(last_conv_layer_name(config)).output, model.output])
for i in range(8):
    with tf.GradientTape() as tape:
        features, probabilities = grad_model(tf.constant(x[i:i + 1]))
        score = probabilities[:, int(tf.argmax(probabilities[0]))]
    assert np.isfinite(tape.gradient(score, features).numpy()).all()
print(json.dumps({"isa": os.environ.get("DNNL_MAX_CPU_ISA"), "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS")}))
"""


def clean_environment(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in (ISA_ENV, ONEDNN_ENV, CHOICE_ENV)}
    env.update(PYTHONPATH=str(PROJECT_ROOT), TF_CPP_MIN_LOG_LEVEL="2", **extra)
    return env


def test_avx512_gets_oneDNN_limited_to_avx2_and_others_keep_the_defaults():
    chosen = choose_onednn_setting(AVX512, {})
    assert (chosen.source, chosen.variable, chosen.value) == ("aperture", ISA_ENV, "AVX2")
    assert "AVX-512" in chosen.describe()
    assert choose_onednn_setting(AVX2_ONLY, {}).variable is None
    assert choose_onednn_setting(frozenset(), {}).source == "default"  # flags unreadable: leave TensorFlow alone


@pytest.mark.parametrize("variable, value", [(ISA_ENV, "AVX512_CORE"), (ONEDNN_ENV, "0"), (ONEDNN_ENV, "1")])
def test_what_the_user_set_is_left_alone(variable, value):
    chosen = choose_onednn_setting(AVX512, {variable: value})
    assert (chosen.source, chosen.variable, chosen.value) == ("user", variable, value)


def test_a_child_inherits_our_choice_as_ours_not_the_users():
    inherited = {ISA_ENV: "AVX2", CHOICE_ENV: f"{ISA_ENV}=AVX2"}
    assert choose_onednn_setting(AVX512, inherited).source == "aperture"
    # the user changed the variable after we set it: theirs wins
    assert choose_onednn_setting(AVX512, {**inherited, ISA_ENV: "AVX512_CORE"}).source == "user"


def test_cpu_flags_are_read_from_cpuinfo():
    assert cpu_flags("processor : 0\nflags\t\t: fpu avx2 avx512f\n") == {"fpu", "avx2", "avx512f"}
    assert cpu_flags("processor : 0\n") == frozenset()


def test_the_crashing_computations_run_to_the_end_in_a_fresh_process():
    """A TensorFlow upgrade that brings the oneDNN crash back fails here on any AVX-512 machine."""
    done = subprocess.run([sys.executable, "-c", CRASH_PROBE], env=clean_environment(), cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"exit {done.returncode}:\n{done.stderr[-3000:]}"
    settings = json.loads(done.stdout.strip().splitlines()[-1])
    expected = "AVX2" if "avx512f" in cpu_flags() else None
    assert settings == {"isa": expected, "onednn": None}
