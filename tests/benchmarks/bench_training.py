"""Benchmarks Aperture against plain baselines; run as `python tests/benchmarks/bench_training.py [--quick]`.

(a) Training throughput: a real Aperture job (background process, store, callbacks,
    tf.data pipeline) against the same model, data and split in a plain `model.fit`
    script. Both measure each epoch's training phase (epoch begin -> last train batch
    end, validation excluded); a run's figure is the median of its epochs 2..N. Seven
    rounds, the order alternating (A P, P A, ...): the ratio is the median of the rounds'
    paired ratios, printed with their range, so a 10 % change stands out of the noise.
    The fixed cost after each epoch's last batch (validation, checkpoints, store,
    TensorBoard) is printed beside it, from the job log's per-epoch timing lines. The
    plain script runs at the job's CPU niceness, so other load slows both sides alike.
(b) Input pipeline: `load_images` (first decode and cache included) + `make_dataset` with
    augmentation against the legacy `ImageDataGenerator.flow_from_directory` recipe, on
    the same folder of JPEGs, over full epochs: the first 3 epochs and a 10-epoch run
    with a cold cache (decode included), and a second 10-epoch run on the same folder
    (the decode cache already warm, as every later run on a folder gets it). Rounds
    alternate; each row is the median over rounds of the paired ratio, with its range.
(c) The AVX-512 mitigation (`--part mitigation`): plain model.fit of a ResNet under each oneDNN setting.

Every measurement runs in a fresh Python process (so TensorFlow state, caches and
thread pools never leak between them). No absolute-time asserts: the machine is shared
and noisy, so the script prints figures, ratios and targets, and exits 0.
Not collected by pytest (the name does not match `test_*.py`).
"""

from __future__ import annotations

import argparse
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

PROJECT_ROOT = Path(__file__).resolve().parents[2]
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from engine.cpu import CHOICE_ENV, ISA_ENV, MITIGATION_ISA, ONEDNN_ENV, cpu_flags  # noqa: E402
from tests.benchmarks.photo_folder import write_synthetic_folder  # noqa: E402
from tests.benchmarks.training_workers import (BATCH_SIZE, IMAGE_SIZE, PIPELINE_SIZE, WORKERS,  # noqa: E402
                                               training_config)

TRAIN_TARGET = 0.97  # aperture / plain images per second
FIRST_EPOCH_TARGET = 1.0  # aperture's cold first epoch (decode included) / ImageDataGenerator's first epoch
TRAIN_EPOCHS, TRAIN_ROUNDS = 12, 7  # --quick: 5 epochs, 2 rounds
PIPELINE_ROUNDS, MITIGATION_ROUNDS = 3, 2  # --quick: 1 each
PIPELINE_TARGET = 3.0  # aperture / ImageDataGenerator images per second, 10 epochs, cold decode included
PIPELINE_EPOCHS = 10  # a realistic (short) training run
PIPELINE_SHORT = 3  # the first epochs of that run, reported on their own
RESULT_PREFIX = "BENCH_RESULT "
MITIGATION_MODEL = {"name": "resnet", "width": 16, "depth": 1}  # convolution-bound, where oneDNN matters
MITIGATION_EPOCHS = 5


def steady(values: list[float]) -> float:
    """Median of epochs 2..N (the first epoch pays for tracing)."""
    return statistics.median(values[1:] if len(values) > 1 else values)


def spread(values: list[float], fmt: str = "{:.2f}") -> str:
    """`min-max` of a few values (e.g. one ratio per round), for printing beside their median."""
    return f"{fmt.format(min(values))}-{fmt.format(max(values))}" if len(values) > 1 else ""


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
    from engine import store
    from engine.runfolder import RunFolder

    os.environ.pop("APERTURE_CPU_DEVICES", None)
    with tempfile.TemporaryDirectory(prefix="aperture-bench-") as home:
        workspace = store.Workspace(home)
        run = jobs.submit(training_config(epochs), workspace)
        run = jobs.wait(run.id, workspace, poll_seconds=2.0)  # seldom: the polls share its CPU
        if run.status != store.COMPLETED:
            raise RuntimeError(f"the Aperture job ended {run.status}: {run.job.error}\n"
                               f"{jobs.read_log_tail(workspace, run.id)}")
        rows = workspace.epochs(run.id)
        folder = RunFolder(workspace, run.id)
        report = json.loads(folder.data_report_file.read_text())
        timings = [tuple(float(v) for v in match.groups())
                   for match in TIMING_LINE.finditer(folder.log_file.read_text(errors="replace"))]
        if len(timings) != len(rows):  # an engine from before the timing lines: no fixed-cost figures
            print(f"  (the job log has {len(timings)} epoch timing lines for {len(rows)} epochs)", flush=True)
            timings = [(math.nan,) * 4] * len(rows)
        return {"rates": [row.images_per_second for row in rows], "device": run.device,
                "train_size": sum(report["counts"]["train"]), "after": [t[0] for t in timings],
                "validation": [t[1] for t in timings], "checkpoints": [t[2] for t in timings],
                "rest": [t[3] for t in timings]}


# StoreProgress's line per epoch in the job log (engine/training_callbacks.py).
TIMING_LINE = re.compile(r"epoch \d+ timing: [\d.]+ s training, then ([\d.]+) s until the next epoch: ([\d.]+) s "
                         r"validation, ([\d.]+) s checkpoints, ([\d.]+) s store")


# -- main --------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer epochs and rounds (a smoke test: too noisy to judge)")
    parser.add_argument("--part", choices=("all", "training", "pipeline", "mitigation"), default="all",
                        help="run only the training, the input-pipeline or the oneDNN-mitigation benchmark")
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--args", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        result = WORKERS[args.worker](**json.loads(args.args))
        print(RESULT_PREFIX + json.dumps(result), flush=True)
        return 0

    began = time.monotonic()
    load_before = os.getloadavg()[0]
    print(f"Aperture benchmarks: {os.cpu_count()} cores, Python {sys.version.split()[0]}, "
          f"{'quick' if args.quick else 'full'} mode", flush=True)
    rows, conditions = [], []
    if args.part in ("all", "training"):
        rows += benchmark_training(*((5, 2) if args.quick else (TRAIN_EPOCHS, TRAIN_ROUNDS)), conditions)
    if args.part in ("all", "pipeline"):
        rows += benchmark_pipeline(1 if args.quick else PIPELINE_ROUNDS, conditions)
    if args.part in ("all", "mitigation"):
        rows += benchmark_mitigation(1 if args.quick else MITIGATION_ROUNDS, conditions)

    print()
    header = ("benchmark", "aperture", "baseline", "ratio", "range", "target", "")
    widths = [50, 13, 13, 8, 11, 9, 5]
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
    """(a) training throughput, Aperture and plain runs alternating (A P, P A, ...), and the per-epoch fixed cost."""
    aperture_runs, plain_runs = [], []
    for round_index in range(rounds):
        order = ("aperture", "plain") if round_index % 2 == 0 else ("plain", "aperture")
        for side in order:
            if side == "aperture":
                aperture_runs.append(run_aperture_job(train_epochs))
                result, label = aperture_runs[-1], "aperture job"
            else:
                plain_runs.append(run_worker("plain_fit", epochs=train_epochs))
                result, label = plain_runs[-1], "plain fit   "
            print(f"  round {round_index + 1}: {label}  median {steady(result['rates']):8,.0f} images/s, "
                  f"{statistics.median(result['after']):.3f} s per epoch after the last batch; per epoch "
                  f"{[round(r) for r in result['rates']]}", flush=True)
    ratios = [steady(a["rates"]) / steady(p["rates"]) for a, p in zip(aperture_runs, plain_runs)]
    train_ratio = statistics.median(ratios)

    def pooled(runs, key, first=1):  # every run's epochs first+1..N together
        return statistics.median(v for r in runs for v in r[key][first:])

    def fixed_row(name, key, fmt="{:.3f} s"):
        ours = pooled(aperture_runs, key)
        theirs = pooled(plain_runs, key) if key in plain_runs[0] else None
        return (name, fmt.format(ours), fmt.format(theirs) if theirs is not None else "",
                f"{ours - theirs:+.3f} s" if theirs is not None else "", "", "", "")

    a_rate, p_rate = pooled(aperture_runs, "rates"), pooled(plain_runs, "rates")
    a_wall = statistics.median(r["train_size"] / rate + after for r in aperture_runs
                               for rate, after in zip(r["rates"][1:], r["after"][1:]))
    p_wall = statistics.median(r["train_size"] / rate + after for r in plain_runs
                               for rate, after in zip(r["rates"][1:], r["after"][1:]))
    conditions.append(
        f"{os.cpu_count()} cores, no GPU; training = digits ({aperture_runs[0]['train_size']} train "
        f"images) at {IMAGE_SIZE}x{IMAGE_SIZE}, lenet5, batch {BATCH_SIZE}, Adam constant lr, no augmentation, "
        f"{train_epochs} epochs x {rounds} rounds each (order alternating), images/s = median of epochs "
        f"2..{train_epochs} of a run; ratio = median of the {rounds} rounds' paired ratios, range = their min-max; "
        f"the images/s columns and the epoch rows pool epochs 2..{train_epochs} of every run (their medians); "
        f"fixed cost = last train batch end to the next epoch's begin; Aperture device "
        f"'{aperture_runs[0]['device']}'.")
    return [
        ("training images/s (lenet5, training phase)", f"{a_rate:,.0f}/s", f"{p_rate:,.0f}/s", f"{train_ratio:.2f}",
         spread(ratios), f">= {TRAIN_TARGET}", ok(train_ratio, TRAIN_TARGET)),
        ("  epoch wall time (training + fixed cost)", f"{a_wall:.3f} s", f"{p_wall:.3f} s",
         f"{p_wall / a_wall:.2f}", "", "", ""),
        fixed_row("  fixed cost per epoch, after its last batch", "after"),
        fixed_row("    validation", "validation"),
        fixed_row("    checkpoints (best if improved, last)", "checkpoints"),
        fixed_row("    store, TensorBoard and the rest", "rest"),
    ]


def benchmark_pipeline(rounds: int, conditions: list[str]) -> list[tuple]:
    """(b) input pipeline on one folder of JPEGs, alternating.

    Each round: ImageDataGenerator for 10 epochs; Aperture for 10 epochs on a fresh
    (cold) cache directory, decode included; then Aperture again, a new process on the
    same folder and cache directory (warm). Both sides iterate every batch of every epoch.
    """

    def total_rate(result, epochs=None):
        seconds = result["seconds"][:epochs]
        return result["images"] * len(seconds) / sum(seconds)

    def first_epoch(result):
        return result["images"] / result["seconds"][0]

    def later_epochs(result):
        return statistics.median(result["images"] / s for s in result["seconds"][1:])

    idg_runs, cold_runs, warm_runs = [], [], []
    with tempfile.TemporaryDirectory(prefix="aperture-bench-photos-") as scratch:
        folder = write_synthetic_folder(Path(scratch) / "photos")
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

    def row(name, measure, runs, target=None):
        """Median over rounds of the ratio to that round's ImageDataGenerator run, with the range."""
        ratios = [measure(ours) / measure(idg) for ours, idg in zip(runs, idg_runs)]
        ratio = statistics.median(ratios)
        return (name, f"{statistics.median(measure(r) for r in runs):,.0f}/s",
                f"{statistics.median(measure(r) for r in idg_runs):,.0f}/s", f"{ratio:.2f}x", spread(ratios),
                f">= {target:g}x" if target else "", ok(ratio, target) if target else "")

    conditions.append(
        f"input pipeline = 10 classes x 100 JPEGs (~120x90, varied) -> {PIPELINE_SIZE}x{PIPELINE_SIZE}, "
        f"batch {BATCH_SIZE}, rotation 20 / shift 0.2 / flip / zoom 0.2, both sides iterate every batch; "
        f"images/s over whole epochs; 'cold' = first run on the folder, its epoch 1 includes decoding and caching "
        f"the folder; 'warm' = a second run (new process) on the same folder; the {PIPELINE_SHORT}-epoch rows are "
        f"the first {PIPELINE_SHORT} epochs of the 10-epoch runs; {rounds} rounds, each row the median of the "
        f"rounds' ratios to that round's ImageDataGenerator run (range = min-max).")
    return [
        row(f"input pipeline ({PIPELINE_EPOCHS} ep, cold decode incl.)", total_rate, cold_runs, PIPELINE_TARGET),
        row(f"input pipeline ({PIPELINE_SHORT} ep, cold decode incl.)", lambda r: total_rate(r, PIPELINE_SHORT),
            cold_runs),
        row(f"input pipeline ({PIPELINE_EPOCHS} ep, 2nd run, warm cache)", total_rate, warm_runs),
        row("  cold first epoch (decode incl.)", first_epoch, cold_runs, FIRST_EPOCH_TARGET),
        row("  warm first epoch", first_epoch, warm_runs),
        row(f"  steady epochs 2..{PIPELINE_EPOCHS} (median)", later_epochs, cold_runs),
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
            rows.append((f"resnet {label}", "crashed", "", "", "", "", ""))
            continue
        rate = statistics.median(values)
        rows.append((f"resnet {label}", f"{rate:,.0f}/s", f"{baseline:,.0f}/s" if baseline else "crashed",
                     f"{rate / baseline:.2f}" if baseline else "", spread(values, "{:,.0f}"), "", ""))
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
