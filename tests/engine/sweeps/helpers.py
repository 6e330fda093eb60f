"""What the sweep tests share: tiny trial specs (LeNet-5 on a few digits) and the CLI as users run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
# About 12 s a trial here, most of it the job process importing TensorFlow.
TINY_BASE = {"data": {"source": "digits", "max_per_class": 20, "image_size": 16},
             "augment": {"rotation": 0, "shift": 0, "zoom": 0}, "model": {"name": "lenet5"}, "train": {"epochs": 1}}


def tiny_spec(**changes) -> dict:
    spec = {"base": json.loads(json.dumps(TINY_BASE)),
            "space": {"train.learning_rate": {"low": 0.0005, "high": 0.02, "log": True},
                      "model.activation": {"choices": ["tanh", "relu"]}},
            "objectives": {"val_accuracy": "maximize"}, "trials": 3, "parallel": 1, "seed": 1}
    spec.update(changes)
    return spec


def cli(*args, timeout=600) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "engine", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def write_spec(folder: Path, spec: dict) -> Path:
    path = folder / "sweep.json"
    path.write_text(json.dumps(spec))
    return path
