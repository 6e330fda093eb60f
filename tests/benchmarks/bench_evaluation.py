"""Memory of a fresh evaluation over an image folder: 1,000 vs 10,000 images (32 px).

Trains one tiny digits run, writes folders of jittered digit PNGs (one sub-folder per
class), then evaluates each folder in a fresh process (`predict_folder` + `evaluate`, as
`python -m engine evaluate RUN --data PATH` does) twice: cold (decodes into the workspace
cache first) and warm (cache hit). Each child reports its peak RSS (`resource.getrusage`).

    .venv/bin/python tests/benchmarks/bench_evaluation.py [--sizes 1000,10000]

Not collected by pytest.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]

CHILD = """
import json, resource, sys, time
from engine.evaluation import evaluate, predict_folder
from engine.store import Workspace
started = time.perf_counter()
predictions = predict_folder(Workspace(), sys.argv[1], sys.argv[2], batch_size=256)
result = evaluate(predictions)
print(json.dumps({"images": len(predictions), "accuracy": result.accuracy, "seconds": time.perf_counter() - started,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def write_digit_folder(root: Path, count: int, size: int = 32, seed: int = 0) -> Path:
    """`count` PNGs of scikit-learn's digits, upscaled to `size` px with a random shift and noise."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    scale = size // 8
    for name in range(10):
        (root / str(name)).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        k = int(rng.integers(len(digits.images)))
        pixels = (digits.images[k] * 255 / 16).astype(np.uint8).repeat(scale, 0).repeat(scale, 1)
        pixels = np.roll(pixels, rng.integers(-2, 3, size=2), axis=(0, 1))
        noisy = np.clip(pixels.astype(np.int16) + rng.integers(-20, 21, pixels.shape), 0, 255).astype(np.uint8)
        Image.fromarray(np.stack([noisy] * 3, axis=-1)).save(root / str(digits.target[k]) / f"{i:05d}.png")
    return root


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,10000")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="aperture-bench-eval-") as scratch:
        env = dict(os.environ, APERTURE_HOME=str(Path(scratch) / "workspace"), APERTURE_STANDBY="0",
                   TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT))
        out = subprocess.run([sys.executable, "-m", "engine", "train", "--data", "digits", "--image-size", "32",
                              "--epochs", "2", "--wait", "--json"], cwd=ROOT, env=env, capture_output=True,
                             text=True, check=True)
        run_id = json.loads(out.stdout.strip().splitlines()[-1])["run_id"]
        print(f"run {run_id} (digits, 32 px, 2 epochs)")
        print(f"{'images':>7} {'pass':<5} {'seconds':>8} {'peak RSS MiB':>13} {'accuracy':>9}")
        for size in sizes:
            started = time.perf_counter()
            folder = write_digit_folder(Path(scratch) / f"digits-{size}", size)
            print(f"  (wrote {size} PNGs in {time.perf_counter() - started:.1f} s)")
            for label in ("cold", "warm"):
                out = subprocess.run([sys.executable, "-c", CHILD, run_id, str(folder)], cwd=ROOT, env=env,
                                     capture_output=True, text=True, check=True)
                r = json.loads(out.stdout.strip().splitlines()[-1])
                print(f"{r['images']:>7} {label:<5} {r['seconds']:>8.1f} {r['peak_rss_mib']:>13.0f} "
                      f"{r['accuracy']:>9.3f}", flush=True)


if __name__ == "__main__":
    main()
