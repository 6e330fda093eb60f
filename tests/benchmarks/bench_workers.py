"""Two workers vs one on this host: `python tests/benchmarks/bench_workers.py [--quick] [--ray]`.

The same run (digits, LeNet-5, no augmentation, constant rate, the same global batch and
epochs) trained three ways, each in fresh processes, in rounds whose order alternates:

- `fit`: one process, `model.fit` (`engine.training.train`, the single-worker path);
- `loop x1`: one process, Aperture's custom loop (`engine.training_loop`) without a strategy;
- `loop x2`: two processes joined by `TF_CONFIG`, the same loop under `MultiWorkerMirroredStrategy`
  (ring all-reduce over loopback), each computing half of every global batch.

Each run's figure is the median training throughput (images/s of the epoch's training phase,
validation excluded, as the store records it) over its epochs 2..N, and the wall time of the
processes (TensorFlow's import and start-up included). `--ray` adds the whole train job through a
local Ray cluster (Ray Train starting two worker actors), wall time only. No asserts: it prints.
Not collected by pytest (the name does not match `test_*.py`).
"""

from __future__ import annotations

import argparse
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

from tests.engine.training.two_workers import free_ports, new_run, worker_env  # noqa: E402

IMAGE_SIZE, BATCH_SIZE = 24, 64
RUNNER = "tests.engine.training.two_workers"  # one worker (or the model.fit run) per process


def _config(workers: int, epochs: int):
    from engine.config import RunConfig

    return RunConfig.from_dict({
        "data": {"source": "digits", "image_size": IMAGE_SIZE}, "augment": {"rotation": 0, "shift": 0, "zoom": 0},
        "train": {"epochs": epochs, "batch_size": BATCH_SIZE, "schedule": "constant", "mixed_precision": "off",
                  "workers": workers}})


def _run(workspace, kind: str, epochs: int) -> dict:
    """Trains one run the `kind` way; returns its wall seconds and median training images/s (epochs 2..N)."""
    workers = 2 if kind == "loop x2" else 1
    run_id = new_run(workspace, _config(workers, epochs))
    root = str(workspace.root)
    if kind == "fit":
        commands = [[RUNNER, "single", root, run_id]]
    else:
        ports = ",".join(str(p) for p in free_ports(workers))
        commands = [[RUNNER, "worker", root, run_id, str(i), ports] for i in range(workers)]
    started = time.monotonic()
    processes = [subprocess.Popen([sys.executable, "-m", *c], cwd=PROJECT_ROOT, env=worker_env(),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for c in commands]
    for p in processes:
        _, err = p.communicate(timeout=1200)
        if p.returncode:
            raise RuntimeError(f"{kind} failed: {err[-2000:]}")
    wall = time.monotonic() - started
    epochs_done = workspace.epochs(run_id)
    rates = [m.images_per_second for m in epochs_done[1:] if m.images_per_second]
    return {"wall": wall, "images_per_second": statistics.median(rates) if rates else float("nan"),
            "val_accuracy": epochs_done[-1].val_accuracy}


def _ray_job_seconds(workspace, epochs: int) -> float:
    """The whole train job with `train.workers=2` on a local Ray cluster, from process start to its end."""
    os.environ.update(RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled")  # as the job process gets them
    import ray

    context = ray.init(address="local", num_cpus=4, object_store_memory=100 * 1024**2, include_dashboard=False,
                       _temp_dir=f"/tmp/ray_b{os.getpid()}", logging_level="WARNING")
    try:
        run = workspace.create_run(_config(2, epochs))
        job = workspace.claim_next_job(10)
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "engine", "job", job.id], cwd=PROJECT_ROOT, text=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              env=worker_env(APERTURE_HOME=str(workspace.root),
                                       RAY_ADDRESS=context.address_info["gcs_address"]))
        seconds = time.monotonic() - started
        if workspace.get_job(job.id).status != "completed" or len(workspace.epochs(run.id)) != epochs:
            raise RuntimeError(f"the Ray train job did not complete: {done.stderr[-2000:]}")
        return seconds
    finally:
        ray.shutdown()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 epochs, 1 round (default 8 epochs, 2 rounds)")
    parser.add_argument("--ray", action="store_true", help="also time the train job through a local Ray cluster")
    parser.add_argument("--ray-only", action="store_true", help="only time the train job through Ray")
    args = parser.parse_args()
    epochs, rounds = (4, 1) if args.quick else (8, 2)
    if args.ray_only:
        import engine.store

        with tempfile.TemporaryDirectory(prefix="bench_workers_") as root:
            seconds = _ray_job_seconds(engine.store.Workspace(root), epochs)
        print(f"the train job via Ray Train (2 workers, {epochs} epochs), start to end: {seconds:.1f} s")
        return 0
    from engine.store import Workspace

    kinds = ["fit", "loop x1", "loop x2"]
    results: dict[str, list[dict]] = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory(prefix="bench_workers_") as root:
        workspace = Workspace(root)
        for round_ in range(rounds):
            for kind in kinds if round_ % 2 == 0 else kinds[::-1]:
                results[kind].append(_run(workspace, kind, epochs))
                print(f"round {round_ + 1} {kind}: {results[kind][-1]}", file=sys.stderr)
        ray_seconds = _ray_job_seconds(workspace, epochs) if args.ray else None

    def median(kind: str, key: str) -> float:
        return statistics.median(r[key] for r in results[kind])

    print(f"digits {IMAGE_SIZE} px, LeNet-5, global batch {BATCH_SIZE}, {epochs} epochs, {rounds} round(s), "
          f"{os.cpu_count()} CPU cores")
    print(f"{'':10} {'images/s':>10} {'wall s':>8} {'val acc':>8}")
    for kind in kinds:
        print(f"{kind:10} {median(kind, 'images_per_second'):>10.0f} {median(kind, 'wall'):>8.1f} "
              f"{median(kind, 'val_accuracy'):>8.4f}")
    two = median("loop x2", "images_per_second")
    print(f"two workers / one (images/s): {two / median('fit', 'images_per_second'):.2f} vs model.fit, "
          f"{two / median('loop x1', 'images_per_second'):.2f} vs the same loop in one process")
    print(f"wall time, two workers / model.fit: {median('loop x2', 'wall') / median('fit', 'wall'):.2f}")
    if ray_seconds is not None:
        print(f"the train job via Ray Train (2 workers, {epochs} epochs), start to end: {ray_seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
