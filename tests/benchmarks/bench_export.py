"""Export benchmark: the parity table for every format on digits (and a ResNet on `shapes` with --shapes).

Trains each run through the CLI in a scratch workspace (or reuses `--run ID` from `$APERTURE_HOME`),
exports every format in-process and prints one row per artifact.

    .venv/bin/python tests/benchmarks/bench_export.py [--shapes] [--epochs 10]
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


def train(home: Path, *args: str) -> str:
    env = dict(os.environ, APERTURE_HOME=str(home), APERTURE_STANDBY="0", TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-m", "engine", "train", *args, "--wait", "--json"], cwd=ROOT, env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)["run_id"]


def table(title: str, workspace, run_id: str, *, acceptance: bool = False) -> None:
    from engine import export

    started = time.monotonic()
    report = export.export_run(workspace, run_id, export.ExportRequest(formats=export.FORMATS))
    sizes = {a.format: a.size_bytes for a in report.artifacts}
    print(f"\n{title}: Keras test accuracy {100 * report.reference_accuracy:.2f}% on {report.test_size} images, "
          f"INT8 calibrated on {report.calibration_size}; export + checks {time.monotonic() - started:.0f} s")
    print(f"{'format':<24} {'size KiB':>9} {'x f32':>6} {'acc %':>7} {'Δ pts':>6} {'flip':>5} {'|Δp|':>8} "
          f"{'1-img ms':>9} {'p95 ms':>7} {'b32 ms':>7} gate")
    for a in report.artifacts:
        if a.error:
            print(f"{a.label:<24} failed: {a.error}")
            continue
        print(f"{a.label:<24} {a.size_bytes / 1024:>9.1f} {a.size_bytes / sizes['float32']:>6.2f} "
              f"{100 * a.accuracy:>7.2f} {0.0 - a.accuracy_drop + 0.0:>+6.2f} {len(a.flipped):>5} {a.mean_abs_prob_diff:>8.5f} "
              f"{a.latency_ms_median:>9.2f} {a.latency_ms_p95:>7.2f} {a.batch_latency_ms_median:>7.1f} "
              f"{'pass' if a.passed else 'FAIL'}")
    int8 = report.artifact("int8")
    if acceptance:
        print(f"acceptance (digits): INT8 size {int8.size_bytes / sizes['float32']:.3f}x float32 (<= 0.30), "
              f"drop {int8.accuracy_drop:.2f} points (<= 0.5)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shapes", action="store_true", help="also a ResNet on the synthetic shapes set")
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import logging

    logging.basicConfig(level=logging.ERROR)
    from engine.store import Workspace

    with tempfile.TemporaryDirectory(prefix="aperture-bench-export-") as scratch:
        home = Path(scratch) / "workspace"
        workspace = Workspace(home)
        digits = train(home, "--data", "digits", "--model", "lenet5", "--epochs", str(args.epochs))
        table(f"digits · lenet5 · {args.epochs} epochs", workspace, digits, acceptance=True)
        if args.shapes:
            shapes = train(home, "--data", "shapes", "--model", "resnet", "--epochs", str(args.epochs),
                           "--image-size", "32")
            table(f"shapes · resnet · {args.epochs} epochs", workspace, shapes)


if __name__ == "__main__":
    main()
