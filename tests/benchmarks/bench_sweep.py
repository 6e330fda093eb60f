"""Sweep benchmark: TPE against random search with the same budget, the wall time pruning saves, and a
two-objective front (validation accuracy vs INT8 latency).

Every sweep runs through the CLI (`python -m engine sweep --config ... --wait --json`) in its own scratch
workspace, so trials are real train runs in job processes, exactly as users get them.

    .venv/bin/python tests/benchmarks/bench_sweep.py            # 16 trials each, 6 epochs, all digits, seeds 0-2
    .venv/bin/python tests/benchmarks/bench_sweep.py --quick    # 8 trials each, 5 epochs, 40 digits a class, seed 0
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

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

SPACE = {"model.name": {"choices": ["lenet5", "resnet"]},
         "model.width": {"low": 8, "high": 32, "step": 8},
         "train.learning_rate": {"low": 0.0001, "high": 0.03, "log": True}}


def sweep(spec: dict) -> tuple[dict, float, int]:
    """Runs one sweep in a scratch workspace; returns its JSON result, wall seconds and epochs trained in all."""
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as scratch:
        home = Path(scratch) / "workspace"
        path = Path(scratch) / "sweep.json"
        path.write_text(json.dumps(spec))
        env = dict(os.environ, APERTURE_HOME=str(home), APERTURE_STANDBY="0", TF_CPP_MIN_LOG_LEVEL="3",
                   PYTHONPATH=str(ROOT))
        started = time.monotonic()
        out = subprocess.run([sys.executable, "-m", "engine", "sweep", "--config", str(path), "--wait", "--json"],
                             cwd=ROOT, env=env, capture_output=True, text=True)
        seconds = time.monotonic() - started
        if out.returncode != 0:
            raise SystemExit(f"sweep failed: {out.stderr[-2000:]}")
        runs = json.loads(subprocess.run([sys.executable, "-m", "engine", "runs", "--json"], cwd=ROOT, env=env,
                                         capture_output=True, text=True, check=True).stdout)
        return json.loads(out.stdout), seconds, sum(r.get("epochs") or 0 for r in runs)


def best(result: dict, objective: str = "val_accuracy") -> float | None:
    values = [t["values"][objective] for t in result["trials"] if objective in t["values"]]
    return max(values) if values else None


def count(result: dict, status: str) -> int:
    return sum(t["status"] == status for t in result["trials"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="8 trials, 5 epochs, 40 images a class, one seed")
    parser.add_argument("--trials", type=int, help="trials per sweep (default 16, quick 8)")
    parser.add_argument("--seeds", type=int, help="sampler seeds (default 3, quick 1)")
    args = parser.parse_args()
    trials = args.trials or (8 if args.quick else 16)
    seeds = range(args.seeds or (1 if args.quick else 3))
    epochs, per_class = (5, 40) if args.quick else (6, 0)
    base = {"data": {"source": "digits", "max_per_class": per_class, "image_size": 16 if args.quick else 32},
            "model": {"name": "lenet5"}, "train": {"epochs": epochs}}
    common = {"base": base, "space": SPACE, "objectives": {"val_accuracy": "maximize"}, "trials": trials}
    print(f"digits, {'40 images a class' if args.quick else 'all images'}, {epochs} epochs a trial, {trials} trials "
          f"a sweep, LeNet-5 / ResNet widths 8-32 and learning rates 1e-4-3e-2 (log); one trial at a time")
    print(f"\n{'seed':>4}  {'sampler':<22} {'best val acc':>12} {'wall s':>7} {'epochs':>7} {'pruned':>6}")
    rows = []
    for seed in seeds:
        for label, extra in (("random", {"sampler": "random", "pruner": "none"}),
                             ("TPE", {"sampler": "tpe", "pruner": "none"}),
                             ("TPE + median pruning", {"sampler": "tpe", "pruner": "median"})):
            result, seconds, trained = sweep({**common, **extra, "seed": seed})
            rows.append((seed, label, best(result), seconds, trained, count(result, "pruned")))
            print(f"{seed:>4}  {label:<22} {100 * best(result):>11.2f}% {seconds:>7.0f} {trained:>7} "
                  f"{count(result, 'pruned'):>6}", flush=True)
    by = {label: [r for r in rows if r[1] == label] for label in ("random", "TPE", "TPE + median pruning")}
    mean = {label: (sum(r[2] for r in chosen) / len(chosen), sum(r[3] for r in chosen) / len(chosen),
                    sum(r[4] for r in chosen) / len(chosen)) for label, chosen in by.items()}
    print(f"\nmean best val accuracy: random {100 * mean['random'][0]:.2f}% · TPE {100 * mean['TPE'][0]:.2f}% · "
          f"TPE + pruning {100 * mean['TPE + median pruning'][0]:.2f}%")
    saved = mean["TPE"][1] - mean["TPE + median pruning"][1]
    print(f"pruning: {saved:+.0f} s wall time saved a sweep ({100 * saved / mean['TPE'][1]:.0f}%), epochs trained "
          f"{mean['TPE'][2]:.0f} -> {mean['TPE + median pruning'][2]:.0f}")

    front_trials = 6 if args.quick else trials
    result, seconds, _ = sweep({**common, "trials": front_trials, "seed": 0,
                                "objectives": {"val_accuracy": "maximize", "int8_latency_ms": "minimize"}})
    front = [t for t in result["trials"] if t["run_id"] in result["pareto"]]
    print(f"\ntwo objectives (NSGA-II, {front_trials} trials, {seconds:.0f} s): {len(front)} trials on the front")
    for t in sorted(front, key=lambda t: t["values"]["val_accuracy"]):
        print(f"  #{t['number']:<3} val acc {100 * t['values']['val_accuracy']:6.2f}%  INT8 "
              f"{t['values']['int8_latency_ms']:.3f} ms  {t['params']}")


if __name__ == "__main__":
    main()
