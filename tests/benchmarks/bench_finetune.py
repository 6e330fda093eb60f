"""Benchmarks fine-tuning throughput, in one run: `python tests/benchmarks/bench_finetune.py [--quick]`.

Epoch images/s of an Aperture transfer run against the Keras guide's plain recipe on the same folder of JPEGs
(issue 14; target: Aperture / Keras >= 1.0):

- Aperture: `python -m engine train --config run.json --wait --json`, as a user starts it (a queued job in its own
  process, at the job's niceness), `model.name=transfer` on a random-weights base (no ImageNet download here;
  with `random` the whole base trains, batch normalization included: Keras 3's Functional passes the outer
  `training` on to the nested base, whatever it was called with), 160 px, no augmentation.
  Its figures are the store's per-epoch `images_per_second` (training phase: epoch begin to the last training
  batch's end) and the job log's per-epoch timing lines (the fixed cost after the last batch: validation,
  checkpoints, store). The job process's CPU seconds are read from /proc whenever the store shows a new epoch.
- Keras: the transfer-learning guide's recipe in a plain script, in a fresh process at the same niceness and
  under the same TensorFlow settings (it imports `engine` first, which sets the oneDNN variables):
  `keras.utils.image_dataset_from_directory(image_size=(160, 160), batch_size=B, validation_split=0.2,
  subset="both")` + `.prefetch(AUTOTUNE)`, the same `keras.applications` base with `include_top=False,
  weights=None`, trainable and called with `training=False`, the same preprocessing inside the graph,
  GlobalAveragePooling2D + Dropout + Dense, Adam at a constant rate, `model.fit(validation_data=...)`.
  A callback times each epoch exactly as Aperture's `StoreProgress` does, and reads the process's CPU seconds.

Same base, folder, image size, batch size, optimizer, dropout and epochs on both sides; validation is 20 % of the
folder on both sides (Aperture also holds out a 5 % test split, so it trains on 75 % against Keras's 80 %).
Epoch 1 pays for tracing (and on the Keras side for decoding its JPEGs, which it does again every epoch; Aperture
decodes once into its cache before epoch 1): it is reported on its own, and the steady figure is the median of
epochs 2..N. Rounds alternate the order (A K, K A, ...); the ratio is the median of the rounds' paired ratios,
and a second row compares each side's best single epoch (the one least disturbed by other load).
The machine may be shared: compare ratios, not absolute figures. Images/s can move by half between two epochs
of one run (here, even with no other process busy in this machine); images per CPU-second (whole epochs,
validation and checkpoints included) move less, within about 10 %. The other processes' CPU use is printed.
Asserts nothing; exits 0. Not collected by pytest.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.benchmarks.photo_folder import write_photo_folder  # noqa: E402

TARGET = 1.0  # Aperture / Keras epoch images/s
IMAGE_SIZE = 160
BATCH_SIZE = 32
LEARNING_RATE = 1e-3
DROPOUT = 0.2
VALIDATION = 0.2
BASES = {"mobilenet_v2": "MobileNetV2", "mobilenet_v3_small": "MobileNetV3Small"}
RESCALED = {"mobilenet_v2"}  # bases Aperture feeds through Rescaling(1/127.5, offset=-1); the others preprocess
FULL = {"per_class": 150, "epochs": 3, "rounds": 2}
QUICK = {"per_class": 60, "epochs": 2, "rounds": 1}

# The job log's per-epoch timing line (engine/training_callbacks.py, StoreProgress).
TIMING_LINE = re.compile(r"epoch (\d+) timing: ([\d.]+) s training, then ([\d.]+) s until the next epoch: ([\d.]+) s "
                         r"validation, ([\d.]+) s checkpoints, ([\d.]+) s store")
JOB_STARTED = re.compile(r"engine\.jobs\.worker: job \S+ \(train\) for run \S+ started \(process (\d+)\)")
LOG_NAME = "job.log"  # a run folder's job log (engine.runfolder.RunFolder.log_file)


def busy_seconds() -> float:
    """CPU seconds all processes have used so far, from /proc/stat (user, nice, system, irq, softirq, steal)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:9]]
    return (sum(fields[:3]) + sum(fields[5:8])) / os.sysconf("SC_CLK_TCK")


_KERAS = """
import json, os, sys, time
args = json.loads(sys.argv[1])
os.nice(max(0, args["niceness"] - os.nice(0)))  # the job's niceness, so other load slows both sides alike
import engine  # noqa: F401 - the oneDNN setting, before TensorFlow, as in every Aperture process
import keras
import tensorflow as tf
from tests.benchmarks.epoch_timer import EpochTimer

""" + inspect.getsource(busy_seconds) + """

keras.utils.set_random_seed(0)
size = (args["image_size"], args["image_size"])
train_ds, val_ds = keras.utils.image_dataset_from_directory(
    args["folder"], validation_split=args["validation"], subset="both", seed=1337, image_size=size,
    batch_size=args["batch_size"], verbose=False)
train_size, classes = len(train_ds.file_paths), len(train_ds.class_names)
train_ds = train_ds.prefetch(tf.data.AUTOTUNE)
val_ds = val_ds.prefetch(tf.data.AUTOTUNE)

options = {} if args["rescale"] else {"include_preprocessing": True}
base = getattr(keras.applications, args["constructor"])(include_top=False, weights=None, input_shape=(*size, 3),
                                                         **options)
base.trainable = True  # as Aperture's random-weights base: every base weight trains
inputs = keras.Input(shape=(*size, 3))
x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs) if args["rescale"] else inputs
x = base(x, training=False)  # as the guide and Aperture call it (Keras 3 still trains this trainable base's BN)
x = keras.layers.GlobalAveragePooling2D()(x)
x = keras.layers.Dropout(args["dropout"])(x)
outputs = keras.layers.Dense(classes, activation="softmax")(x)
model = keras.Model(inputs, outputs)
model.compile(optimizer=keras.optimizers.Adam(args["learning_rate"]),
              loss=keras.losses.SparseCategoricalCrossentropy(), metrics=["accuracy"])


class MarkedEpochTimer(EpochTimer):
    # Also marks, at each epoch's begin and at the end of training, this process's CPU seconds (all threads),
    # the machine's busy CPU seconds and the time.

    def __init__(self):
        super().__init__()
        self.cpu, self.busy, self.clock = [], [], []

    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)
        self.mark()

    def on_train_end(self, logs=None):
        super().on_train_end(logs)
        self.mark()

    def mark(self):
        self.cpu.append(time.process_time())
        self.busy.append(busy_seconds())
        self.clock.append(time.monotonic())


timer = MarkedEpochTimer()
model.fit(train_ds, validation_data=val_ds, epochs=args["epochs"], callbacks=[timer], verbose=0)
print(json.dumps({"train_size": train_size, "training": timer.training, "after": timer.after,
                  "validation": timer.validation, "params": model.count_params(),
                  "marks": list(zip(timer.cpu, timer.busy, timer.clock))}))
"""


def job_niceness() -> int:
    from engine.jobs.worker import JOB_NICENESS  # engine.jobs imports no TensorFlow

    return JOB_NICENESS


def child_env(home: Path | None = None) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1",
               APERTURE_STANDBY="0")  # no pre-warmed standby importing TensorFlow beside the other side's run
    env.pop("APERTURE_CPU_DEVICES", None)
    if home is not None:
        env["APERTURE_HOME"] = str(home)
    return env


def warm(folder: Path) -> None:
    """Reads every file of `folder` once, so both sides find them in the page cache."""
    for path in folder.rglob("*.jpg"):
        path.read_bytes()


def run_config(folder: Path, base: str, epochs: int) -> dict:
    return {
        "name": "bench-finetune",
        "data": {"source": str(folder), "image_size": IMAGE_SIZE, "val_fraction": VALIDATION, "test_fraction": 0.05},
        "augment": {"rotation": 0, "shift": 0, "zoom": 0, "flip": False},
        "model": {"name": "transfer", "base": base, "weights": "random", "dropout": DROPOUT},
        "train": {"epochs": epochs, "batch_size": BATCH_SIZE, "optimizer": "adam", "learning_rate": LEARNING_RATE,
                  "schedule": "constant", "mixed_precision": "off", "head_epochs": 0},
    }


def _cpu_seconds(pid: int) -> float | None:
    """A process's CPU seconds so far (user + system, all threads), from /proc; None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def watch_cpu(home: Path, process: subprocess.Popen, poll: float = 0.05) -> list[float]:
    """The job process's CPU seconds at each of its log's "epoch N timing" lines, until `process` (the CLI) ends.

    StoreProgress logs epoch N's timing line first thing when epoch N + 1 begins (and at the end of training),
    so two marks in a row bracket one whole epoch, its validation and checkpoints included. The job log names
    the job's process ("... started (process PID)"). Cheap: a stat of the log file per poll, no store queries.
    """
    log, pid, size, text, marks = None, None, 0, "", []
    while process.poll() is None:
        time.sleep(poll)
        if log is None:
            log = next(iter(sorted((home / "runs").glob(f"*/{LOG_NAME}"))), None) if (home / "runs").is_dir() else None
            continue
        try:
            grown = log.stat().st_size
        except OSError:
            continue
        if grown == size:
            continue
        with open(log, "rb") as f:
            f.seek(size)
            text += f.read(grown - size).decode("utf-8", "replace")
        size = grown
        if pid is None and (started := JOB_STARTED.search(text)):
            pid = int(started.group(1))
        if pid is not None:
            for _ in range(len(TIMING_LINE.findall(text)) - len(marks)):
                seconds = _cpu_seconds(pid)
                if seconds is not None:
                    marks.append((seconds, busy_seconds(), time.monotonic()))
    return marks


def run_aperture(scratch: Path, folder: Path, base: str, epochs: int, index: int) -> dict:
    """One transfer run through the CLI in a fresh workspace (so its decode cache starts cold)."""
    from engine.runfolder import RunFolder
    from engine.store import Workspace

    home = scratch / f"workspace-{index}"
    config_file = scratch / f"run-{index}.json"
    config_file.write_text(json.dumps(run_config(folder, base, epochs)))
    warm(folder)
    with open(scratch / f"cli-{index}.out", "w+") as out, open(scratch / f"cli-{index}.err", "w+") as err:
        process = subprocess.Popen([sys.executable, "-m", "engine", "train", "--config", str(config_file), "--wait",
                                    "--json"], cwd=ROOT, env=child_env(home), stdout=out, stderr=err, text=True)
        cpu = watch_cpu(home, process)
        out.seek(0), err.seek(0)
        stdout, stderr = out.read(), err.read()
    if process.returncode != 0:
        raise SystemExit(f"the Aperture run failed (exit {process.returncode}):\n{stderr[-3000:]}")
    run_id = json.loads(stdout.strip().splitlines()[-1])["run_id"]
    workspace = Workspace(home)
    rows = workspace.epochs(run_id)
    folder_ = RunFolder(workspace, run_id)
    log = folder_.log_file.read_text(errors="replace")
    timings = {int(m.group(1)): [float(v) for v in m.groups()[1:]] for m in TIMING_LINE.finditer(log)}
    report = json.loads(folder_.data_report_file.read_text())
    train_size = sum(report["counts"]["train"])
    # Before epoch 1, not in it: the decode into the cache (engine.data.folders logs it; absent when cached).
    decoded = re.search(r"decoded \d+ images in ([\d.]+) s", log)
    decode = float(decoded.group(1)) if decoded else 0.0
    return {"train_size": train_size, "training": [train_size / r.images_per_second for r in rows],
            "after": [timings.get(r.epoch, [math.nan] * 2)[1] for r in rows],
            "validation": [timings.get(r.epoch, [math.nan] * 3)[2] for r in rows],
            "checkpoints": [timings.get(r.epoch, [math.nan] * 4)[3] for r in rows],
            "decode": decode, "params": workspace.get_run(run_id).params,
            "marks": [None, *cpu][:len(rows) + 1]}


def run_keras(folder: Path, base: str, epochs: int) -> dict:
    args = {"folder": str(folder), "constructor": BASES[base], "rescale": base in RESCALED, "epochs": epochs,
            "image_size": IMAGE_SIZE, "batch_size": BATCH_SIZE, "learning_rate": LEARNING_RATE, "dropout": DROPOUT,
            "validation": VALIDATION, "niceness": job_niceness()}
    warm(folder)
    result = subprocess.run([sys.executable, "-c", _KERAS, json.dumps(args)], cwd=ROOT, env=child_env(),
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"the Keras recipe failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def rate(result: dict, epoch: int, *, whole: bool = False) -> float:
    """Images/s of one epoch: the training phase, or (`whole`) training + the fixed cost until the next epoch."""
    seconds = result["training"][epoch] + (result["after"][epoch] if whole else 0.0)
    return result["train_size"] / seconds


def steady(result: dict, *, whole: bool = False) -> float:
    """Median images/s of epochs 2..N."""
    return statistics.median(rate(result, e, whole=whole) for e in range(1, len(result["training"])))


def whole_epochs(result: dict) -> list[tuple[float, float, float]]:
    """(process CPU s, machine busy CPU s, wall s) of each whole epoch 2..N (begin to the next begin)."""
    marks = result["marks"]
    return [tuple(b - a for a, b in zip(marks[k], marks[k + 1])) for k in range(1, len(marks) - 1)
            if marks[k] is not None and marks[k + 1] is not None]


def cpu_rate(result: dict) -> float:
    """Training images per CPU-second of the process over epochs 2..N (whole epochs, validation included)."""
    epochs = whole_epochs(result)
    return result["train_size"] * len(epochs) / sum(cpu for cpu, _, _ in epochs) if epochs else math.nan


def other_load(result: dict) -> float:
    """Cores' worth of CPU that other processes used during epochs 2..N (the machine's busy time less this one's)."""
    epochs = whole_epochs(result)
    if not epochs:
        return math.nan
    return max(0.0, sum(busy - cpu for cpu, busy, _ in epochs) / sum(wall for _, _, wall in epochs))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK['per_class']} images per class, {QUICK['epochs']} epochs, one round "
                             f"(default {FULL['per_class']}, {FULL['epochs']}, {FULL['rounds']})")
    parser.add_argument("--base", choices=sorted(BASES), default="mobilenet_v3_small",
                        help="the transfer base on both sides (default mobilenet_v3_small)")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    began = time.monotonic()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="aperture-bench-finetune-") as scratch:
        scratch = Path(scratch)
        folder = write_photo_folder(scratch / "photos", per_class=plan["per_class"])
        count = sum(1 for _ in folder.rglob("*.jpg"))
        print(f"wrote {count:,} JPEGs (10 classes, 80-200 px photo crops) in {time.monotonic() - began:.0f} s; "
              f"{args.base} (random weights, all trainable) at {IMAGE_SIZE} px, batch {BATCH_SIZE}, Adam "
              f"{LEARNING_RATE:g} constant, dropout {DROPOUT}, {plan['epochs']} epochs x {plan['rounds']} "
              f"round(s)", flush=True)
        ours, theirs = [], []
        for index in range(plan["rounds"]):
            order = ("aperture", "keras") if index % 2 == 0 else ("keras", "aperture")
            for side in order:
                if side == "aperture":
                    ours.append(run_aperture(scratch, folder, args.base, plan["epochs"], index))
                    result = ours[-1]
                else:
                    theirs.append(run_keras(folder, args.base, plan["epochs"]))
                    result = theirs[-1]
                epochs = range(len(result["training"]))
                print(f"  round {index + 1}: {side:<8} images/s per epoch {[round(rate(result, e)) for e in epochs]} "
                      f"(training phase), {[round(rate(result, e, whole=True)) for e in epochs]} (whole epoch); "
                      f"epochs 2-{plan['epochs']}: {cpu_rate(result):.0f} images per CPU-second, other processes "
                      f"used {other_load(result):.1f} cores"
                      + (f"; decode before epoch 1 {result['decode']:.1f} s" if side == "aperture" else ""),
                      flush=True)

    def row(label, measure, target=None):
        ratios = [measure(a) / measure(k) for a, k in zip(ours, theirs)]
        ratio = statistics.median(ratios)
        spread = f"{min(ratios):.2f}-{max(ratios):.2f}" if len(ratios) > 1 else ""
        verdict = ("ok" if ratio >= target else "BELOW") if target else ""
        return (label, f"{statistics.median(measure(a) for a in ours):,.1f}/s",
                f"{statistics.median(measure(k) for k in theirs):,.1f}/s", f"{ratio:.2f}", spread,
                f">= {target:g}" if target else "", verdict)

    def best_row():  # the least disturbed epoch 2..N of all rounds, each side: robust to bursts of other load
        best = [max(rate(r, e) for r in runs for e in range(1, len(r["training"]))) for runs in (ours, theirs)]
        return ("  best single epoch 2-N of all rounds (least disturbed)", f"{best[0]:,.1f}/s", f"{best[1]:,.1f}/s",
                f"{best[0] / best[1]:.2f}", "", "", "")

    def load_row():
        return ("other processes' CPU use meanwhile (cores, epochs 2-N)", *(
            "/".join(f"{other_load(r):.1f}" for r in runs) for runs in (ours, theirs)), "", "", "", "")

    epochs = plan["epochs"]
    rows = [
        row(f"epoch images/s, epochs 2-{epochs} (training phase)", steady, TARGET),
        best_row(),
        row("  whole epoch (+ validation, checkpoints, store)", lambda r: steady(r, whole=True)),
        row("  images per CPU-second of the process, whole epoch", cpu_rate),
        row("first epoch images/s (training phase; tracing)", lambda r: rate(r, 0)),
        row("first epoch, Aperture's decode before it included",
            lambda r: r["train_size"] / (r["training"][0] + r.get("decode", 0.0))),
        load_row(),
    ]
    print()
    header = ("fine-tuning benchmark", "aperture", "keras", "ratio", "range", "target", "")
    widths = [56, 11, 11, 7, 11, 8, 5]
    for cells in (header, *rows):
        print("".join(str(cell).ljust(width) for cell, width in zip(cells, widths)).rstrip())
    fixed = statistics.median(v for r in ours for v in r["after"][1:])
    keras_fixed = statistics.median(v for r in theirs for v in r["after"][1:])
    print(f"\nfixed cost per epoch after its last batch (epochs 2-{epochs}): Aperture {fixed:.2f} s (validation "
          f"{statistics.median(v for r in ours for v in r['validation'][1:]):.2f} s, checkpoints "
          f"{statistics.median(v for r in ours for v in r['checkpoints'][1:]):.2f} s), Keras {keras_fixed:.2f} s "
          f"(validation {statistics.median(v for r in theirs for v in r['validation'][1:]):.2f} s)")
    print(f"train images: Aperture {ours[0]['train_size']}, Keras {theirs[0]['train_size']}; parameters: Aperture "
          f"{ours[0]['params']:,}, Keras {theirs[0]['params']:,}; {os.cpu_count()} cores; load average "
          f"{load_before:.1f} at start, {os.getloadavg()[0]:.1f} at end; {time.monotonic() - began:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
