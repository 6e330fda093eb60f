"""GPU benchmark, in one run: `python tests/benchmarks/bench_gpu.py [--images 4096] [--batch 256] [--base ...]`.

Trains a transfer model (random base weights: no download; the step cost is the same) on a synthetic
folder of 224 px JPEGs through Aperture's own pipeline (decode into the memmapped cache, `make_dataset`),
with mixed precision on and off, and prints for each: training images/s, mean GPU utilisation (sampled
with nvidia-smi), and whether the input pipeline keeps up (images/s of iterating the dataset alone vs
training). Targets: mixed precision >= 2x float32 at batch 256; the pipeline never the bottleneck.

Each precision runs in a fresh process (the Keras dtype policy is global). Under 10 minutes on one GPU.
Without a GPU it says so and exits 0. Not collected by pytest.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

_ONE = """
import json, sys, time
import engine
import keras, numpy as np
from engine.config import ModelConfig
from engine.data import load_images, make_dataset
from engine.devices import configure_devices
from engine.models import make_model
folder, cache, precision, batch, base, epochs = sys.argv[1:7]
batch, epochs = int(batch), int(epochs)
devices = configure_devices(precision)
images = load_images(folder, 224, cache_dir=cache)
one_hot = lambda x, y: (x, keras.ops.one_hot(y, len(images.class_names)))
ds = make_dataset(images.images, images.labels, batch_size=batch, training=True, epochs=epochs).map(one_hot)
started = time.perf_counter()
seen = sum(int(x.shape[0]) for x, _ in ds)
pipeline = seen / (time.perf_counter() - started)
with devices.strategy.scope():
    model = make_model(ModelConfig(name="transfer", base=base, weights="random"), (224, 224, 3),
                       len(images.class_names))
    model.compile("adam", "categorical_crossentropy", jit_compile=False)
steps = -(-len(images) // batch)
model.fit(ds.take(steps), epochs=1, verbose=0)  # warm-up: tracing, cuDNN autotune
started = time.perf_counter()
model.fit(ds, epochs=1, steps_per_epoch=steps * epochs, verbose=0)
train = len(images) * epochs / (time.perf_counter() - started)
print(json.dumps({"precision": precision, "mixed": devices.mixed_precision, "device": devices.label,
                  "train_images_per_s": train, "pipeline_images_per_s": pipeline}))
"""


def _utilisation(samples: list[float], stop: threading.Event) -> None:
    while not stop.is_set():
        out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.strip():
            samples.append(float(out.stdout.split()[0]))
        stop.wait(0.5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--base", default="efficientnet_v2b0")
    args = parser.parse_args()
    if shutil.which("nvidia-smi") is None:
        print("no GPU here (nvidia-smi not found): nothing measured")
        return 0
    from tests.benchmarks.bench_ingest import write_folder

    results = []
    with tempfile.TemporaryDirectory(prefix="aperture-bench-gpu-") as scratch:
        folder = write_folder(Path(scratch) / "photos", args.images)
        for precision in ("off", "on"):
            samples: list[float] = []
            stop = threading.Event()
            sampler = threading.Thread(target=_utilisation, args=(samples, stop), daemon=True)
            sampler.start()
            out = subprocess.run([sys.executable, "-c", _ONE, str(folder), str(Path(scratch) / "cache"), precision,
                                  str(args.batch), args.base, str(args.epochs)], cwd=ROOT, capture_output=True,
                                 text=True, env={"PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2",
                                                 "PATH": "/usr/bin:/bin:/usr/local/bin"})
            stop.set()
            if out.returncode != 0:
                print(out.stderr[-3000:])
                return 1
            result = json.loads(out.stdout.strip().splitlines()[-1])
            result["gpu_util_mean"] = sum(samples) / len(samples) if samples else None
            results.append(result)
    for r in results:
        bound = "pipeline-bound" if r["pipeline_images_per_s"] < 1.1 * r["train_images_per_s"] else "GPU-bound"
        util = f"{r['gpu_util_mean']:.0f}%" if r["gpu_util_mean"] is not None else "-"
        print(f"mixed precision {r['precision']:<3} ({r['device']}): train {r['train_images_per_s']:8.0f} images/s"
              f"  pipeline alone {r['pipeline_images_per_s']:8.0f} images/s  GPU util {util}  -> {bound}")
    print(f"mixed / float32: {results[1]['train_images_per_s'] / results[0]['train_images_per_s']:.2f}x "
          f"(target >= 2x at batch {args.batch})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
