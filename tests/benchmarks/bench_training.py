"""Benchmarks Aperture against plain baselines; run as `python tests/benchmarks/bench_training.py [--quick]`.

(a) Training throughput: a real Aperture job (background process, store, callbacks,
    tf.data pipeline) against the same model, data and split in a plain `model.fit`
    script. Both measure each epoch's training phase (epoch begin -> last train batch
    end, validation excluded) and report the median of epochs 2..N. Runs alternate.
(b) Input pipeline: `load_images` (first decode and cache included) + `make_dataset` with
    augmentation against the legacy `ImageDataGenerator.flow_from_directory` recipe, on
    the same folder of JPEGs, over full epochs: the first 3 epochs and a 10-epoch run
    with a cold cache (decode included), and a second 10-epoch run on the same folder
    (the decode cache already warm, as every later run on a folder gets it).

Every measurement runs in a fresh Python process (so TensorFlow state, caches and
thread pools never leak between them). No absolute-time asserts: the machine is shared
and noisy, so the script prints figures, ratios and targets, and exits 0.
Not collected by pytest (the name does not match `test_*.py`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from engine.cpu import CHOICE_ENV, ISA_ENV, MITIGATION_ISA, ONEDNN_ENV, cpu_flags  # noqa: E402

TRAIN_TARGET = 0.97  # aperture / plain images per second
PIPELINE_TARGET = 3.0  # aperture / ImageDataGenerator images per second, 10 epochs, cold decode included
PIPELINE_EPOCHS = 10  # a realistic (short) training run
PIPELINE_SHORT = 3  # the first epochs of that run, reported on their own
BATCH_SIZE = 32
IMAGE_SIZE = 32
PIPELINE_SIZE = 64
RESULT_PREFIX = "BENCH_RESULT "
MITIGATION_MODEL = {"name": "resnet", "width": 16, "depth": 1}  # convolution-bound, where oneDNN matters
MITIGATION_EPOCHS = 5


def training_config(epochs: int, model: dict | None = None):
    from engine.config import RunConfig

    # Constant learning rate in both scripts; no augmentation, float32 (mixed precision is off on a CPU).
    return RunConfig.from_dict({
        "name": "bench",
        "data": {"source": "digits", "image_size": IMAGE_SIZE},
        "model": model or {"name": "lenet5"},
        "augment": {"rotation": 0, "shift": 0, "zoom": 0, "flip": False},
        "train": {"epochs": epochs, "batch_size": BATCH_SIZE, "optimizer": "adam", "schedule": "constant",
                  "mixed_precision": "off"},
    })


def steady(values: list[float]) -> float:
    """Median of epochs 2..N (the first epoch pays for tracing)."""
    return statistics.median(values[1:] if len(values) > 1 else values)


# -- workers: each runs in its own fresh process and prints one JSON line ------------------


def worker_plain_fit(epochs: int, model: dict | None = None) -> dict:
    """The same model, data and split as the Aperture job, in a plain model.fit script."""
    import keras
    import numpy as np
    import tensorflow as tf

    from engine.data import load_images, split_indices
    from engine.models import make_model

    config = training_config(epochs, model)
    keras.utils.set_random_seed(config.train.seed)
    images = load_images(config.data.source, config.data.image_size, max_per_class=config.data.max_per_class,
                         seed=config.data.seed)
    split = split_indices(images.labels, config.data.val_fraction, config.data.test_fraction, config.data.seed)
    num_classes = len(images.class_names)
    x = np.asarray(images.images, dtype=np.float32)
    y = keras.utils.to_categorical(images.labels, num_classes).astype(np.float32)
    n = len(split.train)
    train_ds = (tf.data.Dataset.from_tensor_slices((x[split.train], y[split.train])).shuffle(n)
                .batch(BATCH_SIZE).prefetch(tf.data.AUTOTUNE))
    val_ds = tf.data.Dataset.from_tensor_slices((x[split.val], y[split.val])).batch(BATCH_SIZE).prefetch(
        tf.data.AUTOTUNE)

    model = make_model(config.model, (IMAGE_SIZE, IMAGE_SIZE, 3), num_classes, seed=config.train.seed)
    model.compile(optimizer=keras.optimizers.Adam(config.train.learning_rate),
                  loss=keras.losses.CategoricalCrossentropy(),
                  metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")])

    class TrainPhaseTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.rates: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self.started = self.last = time.monotonic()

        def on_train_batch_end(self, batch, logs=None):
            self.last = time.monotonic()

        def on_epoch_end(self, epoch, logs=None):
            self.rates.append(n / (self.last - self.started))

    timer = TrainPhaseTimer()
    model.fit(train_ds, validation_data=val_ds, epochs=epochs, callbacks=[timer], verbose=0)
    return {"rates": timer.rates, "train_size": n}


def worker_idg(folder: str, epochs: int) -> dict:
    """The seed's recipe: legacy ImageDataGenerator with augmentation, from the folder."""
    import tensorflow as tf

    started = time.monotonic()
    generator = tf.keras.preprocessing.image.ImageDataGenerator(
        rescale=1 / 255, rotation_range=20, width_shift_range=0.2, height_shift_range=0.2, horizontal_flip=True,
        zoom_range=0.2)
    iterator = generator.flow_from_directory(folder, target_size=(PIPELINE_SIZE, PIPELINE_SIZE),
                                             batch_size=BATCH_SIZE)
    seconds, count = [], 0
    for epoch in range(epochs):
        count = 0
        for _ in range(len(iterator)):
            x, _y = next(iterator)
            count += len(x)
        now = time.monotonic()
        seconds.append(now - started)
        started = now
    return {"images": count, "seconds": seconds}


def worker_aperture_pipeline(folder: str, epochs: int, cache_dir: str) -> dict:
    """Aperture: decode + cache the folder (counted in epoch 1), then the augmented tf.data pipeline."""
    from engine.config import AugmentConfig
    from engine.data import load_images, make_dataset

    import tensorflow as tf  # noqa: F401 - imported before the clock starts, as the IDG worker does

    started = time.monotonic()
    images = load_images(folder, PIPELINE_SIZE, cache_dir=Path(cache_dir))
    dataset = make_dataset(images.images, images.labels, batch_size=BATCH_SIZE, training=True,
                           augment=AugmentConfig(rotation=20, shift=0.2, flip=True, zoom=0.2))
    load_seconds = time.monotonic() - started
    seconds, count = [], 0
    for epoch in range(epochs):
        count = 0
        for x, _y in dataset:
            count += int(x.shape[0])
        now = time.monotonic()
        seconds.append(now - started)
        started = now
    return {"images": count, "seconds": seconds, "load_seconds": load_seconds,
            "memmap": type(images.images).__name__}


WORKERS = {"plain_fit": worker_plain_fit, "idg": worker_idg, "aperture_pipeline": worker_aperture_pipeline}


def run_worker(name: str, env_overrides: dict | None = None, **kwargs) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    env.pop("APERTURE_CPU_DEVICES", None)
    if env_overrides is not None:  # a oneDNN setting of its own: none of ours is inherited
        for name_ in (ISA_ENV, ONEDNN_ENV, CHOICE_ENV):
            env.pop(name_, None)
        env.update(env_overrides)
    result = subprocess.run([sys.executable, __file__, "--worker", name, "--args", json.dumps(kwargs)],
                            cwd=PROJECT_ROOT, env=env, capture_output=True, text=True)
    for line in reversed(result.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    raise RuntimeError(f"worker {name} failed (exit {result.returncode}):\n{result.stderr[-4000:]}")


# -- the Aperture job ----------------------------------------------------------------------


def run_aperture_job(epochs: int) -> dict:
    from engine import jobs
    from engine import store as st

    os.environ.pop("APERTURE_CPU_DEVICES", None)
    with tempfile.TemporaryDirectory(prefix="aperture-bench-") as home:
        workspace = st.Workspace(home)
        run = jobs.submit(training_config(epochs), workspace)
        run = jobs.wait(run.id, workspace, poll_seconds=0.5)
        if run.status != st.COMPLETED:
            raise RuntimeError(f"the Aperture job ended {run.status}: {run.job.error}\n"
                               f"{jobs.read_log_tail(workspace, run.id)}")
        rows = workspace.epochs(run.id)
        report = json.loads(workspace.run_file(run.id, st.DATA_REPORT_FILE).read_text())
        return {"rates": [row.images_per_second for row in rows], "device": run.device,
                "train_size": sum(report["counts"]["train"])}


# -- the image folder ------------------------------------------------------------------------


def make_photo_folder(root: Path, classes: int = 10, per_class: int = 100, seed: int = 0) -> Path:
    """JPEGs of varied sizes around 120x90: per-class gradient palettes with random shapes on top."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    for c in range(classes):
        folder = root / f"class_{c:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        base = rng.integers(0, 256, (2, 3))  # each class: its own gradient from one colour to another
        for i in range(per_class):
            w, h = int(rng.integers(100, 141)), int(rng.integers(75, 106))
            t = np.linspace(0, 1, w)[None, :, None] * np.linspace(0.6, 1, h)[:, None, None]
            pixels = base[0] * (1 - t) + base[1] * t + rng.normal(0, 12, (h, w, 3))
            image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
            draw = ImageDraw.Draw(image)
            for _ in range(int(rng.integers(2, 6))):
                x0, y0 = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
                x1, y1 = x0 + int(rng.integers(10, 40)), y0 + int(rng.integers(10, 40))
                colour = tuple(int(v) for v in rng.integers(0, 256, 3))
                (draw.ellipse if (c + i) % 2 else draw.rectangle)((x0, y0, x1, y1), fill=colour)
            image.save(folder / f"img_{i:03d}.jpg", quality=90)
    return root


# -- main --------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer epochs and one round each")
    parser.add_argument("--part", choices=("all", "training", "pipeline", "mitigation"), default="all",
                        help="run only the training, the input-pipeline or the oneDNN-mitigation benchmark")
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--args", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        result = WORKERS[args.worker](**json.loads(args.args))
        print(RESULT_PREFIX + json.dumps(result), flush=True)
        return 0

    train_epochs, rounds = (4, 1) if args.quick else (8, 2)
    began = time.monotonic()
    load_before = os.getloadavg()[0]
    print(f"Aperture benchmarks: {os.cpu_count()} cores, Python {sys.version.split()[0]}, "
          f"{'quick' if args.quick else 'full'} mode", flush=True)
    rows, conditions = [], []
    if args.part in ("all", "training"):
        rows += benchmark_training(train_epochs, rounds, conditions)
    if args.part in ("all", "pipeline"):
        rows += benchmark_pipeline(rounds, conditions)
    if args.part in ("all", "mitigation"):
        rows += benchmark_mitigation(rounds, conditions)

    print()
    header = ("benchmark", "aperture", "baseline", "ratio", "target", "")
    widths = [52, 12, 12, 8, 9, 5]
    for row in (header, *rows):
        print("".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())
    print()
    for index, line in enumerate(conditions):
        print(("conditions: " if index == 0 else " " * 12) + line)
    print(f"            load average {load_before:.1f} at start, {os.getloadavg()[0]:.1f} at end; "
          f"total benchmark time {time.monotonic() - began:.0f} s. Each measurement ran in a fresh "
          "process; the machine may be shared, so compare ratios, not absolute figures.")
    return 0


def ok(ratio: float, target: float) -> str:
    return "ok" if ratio >= target else "BELOW"


def benchmark_training(train_epochs: int, rounds: int, conditions: list[str]) -> list[tuple]:
    """(a) training throughput, alternating Aperture and plain runs."""
    aperture_runs, plain_runs = [], []
    for round_index in range(rounds):
        aperture_runs.append(run_aperture_job(train_epochs))
        print(f"  round {round_index + 1}: aperture job  median {steady(aperture_runs[-1]['rates']):8,.0f} images/s"
              f"  per epoch {[round(r) for r in aperture_runs[-1]['rates']]}", flush=True)
        plain_runs.append(run_worker("plain_fit", epochs=train_epochs))
        print(f"  round {round_index + 1}: plain fit     median {steady(plain_runs[-1]['rates']):8,.0f} images/s"
              f"  per epoch {[round(r) for r in plain_runs[-1]['rates']]}", flush=True)
    aperture_rate = statistics.median(steady(r["rates"]) for r in aperture_runs)
    plain_rate = statistics.median(steady(r["rates"]) for r in plain_runs)
    train_ratio = aperture_rate / plain_rate
    conditions.append(
        f"{os.cpu_count()} cores, no GPU; training = digits ({aperture_runs[0]['train_size']} train "
        f"images) at {IMAGE_SIZE}x{IMAGE_SIZE}, lenet5, batch {BATCH_SIZE}, Adam constant lr, no augmentation, "
        f"{train_epochs} epochs x {rounds} alternating rounds each, median of epochs 2..{train_epochs} per run and "
        f"median over runs; Aperture device '{aperture_runs[0]['device']}'.")
    return [("training images/s (lenet5)", f"{aperture_rate:,.0f}/s", f"{plain_rate:,.0f}/s", f"{train_ratio:.2f}",
             f">= {TRAIN_TARGET}", ok(train_ratio, TRAIN_TARGET))]


def benchmark_pipeline(rounds: int, conditions: list[str]) -> list[tuple]:
    """(b) input pipeline on one folder of JPEGs, alternating.

    Each round: ImageDataGenerator for 10 epochs; Aperture for 10 epochs on a fresh
    (cold) cache directory, decode included; then Aperture again, a new process on the
    same folder and cache directory (warm). Both sides iterate every batch of every epoch.
    """

    def total_rate(result, epochs=None):
        seconds = result["seconds"][:epochs]
        return result["images"] * len(seconds) / sum(seconds)

    def per_epoch(result):
        return [result["images"] / s for s in result["seconds"]]

    idg_runs, cold_runs, warm_runs = [], [], []
    with tempfile.TemporaryDirectory(prefix="aperture-bench-photos-") as scratch:
        folder = make_photo_folder(Path(scratch) / "photos")
        for round_index in range(rounds):
            cache_dir = str(Path(scratch) / f"cache-{round_index}")
            idg = run_worker("idg", folder=str(folder), epochs=PIPELINE_EPOCHS)
            idg_runs.append(idg)
            print(f"  round {round_index + 1}: ImageDataGenerator {idg['images']} images/epoch, seconds per epoch "
                  f"{[round(s, 2) for s in idg['seconds']]}", flush=True)
            for runs, label in ((cold_runs, "cold cache"), (warm_runs, "warm cache")):
                ours = run_worker("aperture_pipeline", folder=str(folder), epochs=PIPELINE_EPOCHS,
                                  cache_dir=cache_dir)
                runs.append(ours)
                print(f"  round {round_index + 1}: Aperture, {label} {ours['images']} images/epoch, seconds per "
                      f"epoch {[round(s, 2) for s in ours['seconds']]} (epoch 1 includes "
                      f"{ours['load_seconds']:.2f} s of load_images + make_dataset, {ours['memmap']})", flush=True)
    # The least-disturbed run of each (highest 10-epoch rate): background load only ever slows a run down.
    idg = max(idg_runs, key=total_rate)
    cold = max(cold_runs, key=total_rate)
    warm = max(warm_runs, key=total_rate)

    def row(name, ours, baseline, target=None):
        ratio = ours / baseline
        return (name, f"{ours:,.0f}/s", f"{baseline:,.0f}/s", f"{ratio:.1f}x",
                f">= {target:g}x" if target else "", ok(ratio, target) if target else "")

    idg_epochs, cold_epochs, warm_epochs = per_epoch(idg), per_epoch(cold), per_epoch(warm)
    conditions.append(
        f"input pipeline = 10 classes x 100 JPEGs (~120x90, varied) -> {PIPELINE_SIZE}x{PIPELINE_SIZE}, "
        f"batch {BATCH_SIZE}, rotation 20 / shift 0.2 / flip / zoom 0.2, both sides iterate every batch; "
        f"images/s over whole epochs; 'cold' = first run on the folder, its epoch 1 includes decoding and caching "
        f"the folder; 'warm' = a second run (new process) on the same folder; the {PIPELINE_SHORT}-epoch rows are "
        f"the first {PIPELINE_SHORT} epochs of the 10-epoch runs; best of {rounds} alternating runs each.")
    return [
        row(f"input pipeline ({PIPELINE_EPOCHS} ep, cold decode incl.)", total_rate(cold), total_rate(idg),
            PIPELINE_TARGET),
        row(f"input pipeline ({PIPELINE_SHORT} ep, cold decode incl.)", total_rate(cold, PIPELINE_SHORT),
            total_rate(idg, PIPELINE_SHORT)),
        row(f"input pipeline ({PIPELINE_EPOCHS} ep, 2nd run, warm cache)", total_rate(warm), total_rate(idg)),
        row("  cold first epoch", cold_epochs[0], idg_epochs[0]),
        row("  warm first epoch", warm_epochs[0], idg_epochs[0]),
        row(f"  steady epochs 2..{PIPELINE_EPOCHS} (median)", statistics.median(cold_epochs[1:]),
            statistics.median(idg_epochs[1:])),
    ]


def benchmark_mitigation(rounds: int, conditions: list[str]) -> list[tuple]:
    """(c) what the AVX-512 mitigation costs: plain model.fit of a ResNet under each oneDNN setting, alternating.

    'oneDNN defaults' (`DNNL_MAX_CPU_ISA=ALL`: no limit) may crash on an AVX-512 CPU; that is the bug
    the mitigation is for, and the row then says how it died.
    """
    settings = {f"{ISA_ENV}={MITIGATION_ISA} (Aperture's choice)": {ISA_ENV: MITIGATION_ISA},
                f"{ONEDNN_ENV}=0 (oneDNN off)": {ONEDNN_ENV: "0"},
                "oneDNN defaults (no limit)": {ISA_ENV: "ALL"}}
    results: dict[str, list] = {label: [] for label in settings}
    for round_index in range(rounds):
        for label, overrides in settings.items():
            try:
                rates = run_worker("plain_fit", env_overrides=overrides, epochs=MITIGATION_EPOCHS,
                                   model=MITIGATION_MODEL)["rates"]
                results[label].append(steady(rates))
                print(f"  round {round_index + 1}: {label:<42} median {steady(rates):8,.0f} images/s", flush=True)
            except RuntimeError as error:
                results[label].append(str(error).splitlines()[0])
                print(f"  round {round_index + 1}: {label:<42} {str(error).splitlines()[0]}", flush=True)
    rates = {label: [v for v in values if isinstance(v, float)] for label, values in results.items()}
    defaults = "oneDNN defaults (no limit)"
    baseline = statistics.median(rates[defaults]) if rates[defaults] else None
    rows = []
    for label, values in rates.items():
        if not values:
            rows.append((f"resnet {label}", "crashed", "", "", "", ""))
            continue
        rate = statistics.median(values)
        rows.append((f"resnet {label}", f"{rate:,.0f}/s", f"{baseline:,.0f}/s" if baseline else "crashed",
                     f"{rate / baseline:.2f}" if baseline else "", "", ""))
    crashes = sum(isinstance(v, str) for v in results[defaults])
    conditions.append(
        f"mitigation = plain model.fit of resnet width {MITIGATION_MODEL['width']} depth {MITIGATION_MODEL['depth']} "
        f"on digits, {MITIGATION_EPOCHS} epochs x {rounds} alternating rounds per setting, median of epochs 2..N; "
        f"baseline = oneDNN defaults ({crashes} of {rounds} runs crashed); this CPU "
        f"{'has' if 'avx512f' in cpu_flags() else 'has no'} AVX-512, so Aperture "
        f"{'sets ' + ISA_ENV + '=' + MITIGATION_ISA if 'avx512f' in cpu_flags() else 'changes nothing'}.")
    return rows


if __name__ == "__main__":
    sys.exit(main())
