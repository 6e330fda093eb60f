"""The fix-and-retrain loop on planted label errors: `python tests/benchmarks/bench_label_loop.py [--epochs N]`.

scikit-learn's digits as a split-folder dataset (train/ validation/ test/, 16 px PNGs); 5 % of the train
images are moved into a wrong class folder. Then, all through the real CLI in a temporary workspace:
train the parent → re-predict its train split (`predict_source(..., 'split:train')`) → rank suspected label
errors there (confident learning) → relabel the top k = the number planted (`relabel --csv`) → retrain
on the new version → both runs on the untouched, clean test split, side by side, with McNemar.
Prints figures, asserts nothing, exits 0. Not collected by pytest.
"""

from __future__ import annotations

import argparse
import csv
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
sys.path.insert(0, str(ROOT))

FLIP_SHARE = 0.05


def make_folder(root: Path, seed: int = 0) -> set[str]:
    """Writes digits as train/validation/test class folders; flips 5 % of train; returns the flipped ids."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(digits.target))
    parts = {"train": order[:1200], "validation": order[1200:1450], "test": order[1450:]}
    flipped = set()
    flip_rows = set(rng.choice(parts["train"], int(FLIP_SHARE * len(parts["train"])), replace=False).tolist())
    for split, rows in parts.items():
        for row in rows:
            label = int(digits.target[row])
            if row in flip_rows:
                label = int((label + rng.integers(1, 10)) % 10)
            folder = root / split / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            pixels = (digits.images[row] * (255 / 16)).astype(np.uint8)
            Image.fromarray(pixels).convert("RGB").save(folder / f"d{row}.png")
            if row in flip_rows:
                flipped.add(f"d{row}.png")
    return flipped


def cli(home: Path, *args: str) -> dict:
    env = dict(os.environ, APERTURE_HOME=str(home), APERTURE_STANDBY="0", TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-m", "engine", *args, "--json"], env=env, cwd=ROOT, capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise SystemExit(f"engine {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    from engine.evaluation import find_label_issues
    from engine.evaluation.job import predict_source
    from engine.evaluation.compare import compare_runs, shared_test_images
    from engine.runfolder import RunFolder
    from engine.store import Workspace

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        flipped = make_folder(tmp / "digits")
        home = tmp / "workspace"
        train = ("--model", "lenet5", "--image-size", "16", "--epochs", str(args.epochs),
                 "--augment", "rotation=0,shift=0,zoom=0", "--wait")  # `--augment none` keeps the defaults (noted)
        started = time.time()
        parent = cli(home, "train", "--data", str(tmp / "digits"), *train)["run_id"]
        workspace = Workspace(home)
        issues = find_label_issues(predict_source(workspace, parent, "split:train"))
        top = issues[:len(flipped)]
        hits = sum(Path(issue.id).name in flipped for issue in top)
        fixes = tmp / "fixes.csv"
        with open(fixes, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["file", "new_label"])
            writer.writerows([issue.id, issue.suggested] for issue in top)
        version = cli(home, "relabel", parent, "--csv", str(fixes))
        child = cli(home, "train", "--data", f"version:{version['id']}", *train)["run_id"]
        a, b, relabelled = shared_test_images(*(RunFolder(workspace, run).predictions() for run in (parent, child)))
        comparison = compare_runs(a, b)
        print(f"planted: {len(flipped)} flipped train labels of 1,200 ({FLIP_SHARE:.0%}); suspects ranked: "
              f"{len(issues)}; top {len(top)} relabelled, of which truly flipped: {hits} "
              f"({hits / max(1, len(top)):.0%})")
        print(f"{'':24}{'parent':>10}{'child (fixed)':>16}")
        print(f"{'clean test accuracy':24}{comparison.a.accuracy:>10.4f}{comparison.b.accuracy:>16.4f}")
        test = comparison.test
        print(f"McNemar on {len(a)} shared test images ({relabelled} labelled differently): parent-only right {test.a_only}, child-only right "
              f"{test.b_only}, p = {test.p_value:.3g} ({test.method}); wall {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
