"""Queue overhead, local processes vs a Ray cluster, side by side, with no-op jobs (the `sleep` kind, 0.1 s).

    .venv/bin/python tests/benchmarks/bench_queue.py            # 7 latency rounds, 12 jobs a burst, 2 bursts
    .venv/bin/python tests/benchmarks/bench_queue.py --quick    # 3 rounds, 6 jobs, 1 burst

(a) submit -> running: from `submit_job` until the job's own code has reported its first progress to
    the store (process started, engine imported, kind resolved), one job at a time on an idle queue.
(b) dispatch throughput: a burst of jobs submitted back to back; jobs/s from the first submit until
    every job has completed. Both backends run two jobs at once (APERTURE_MAX_JOBS=2 locally; two
    one-CPU worker nodes on Ray, which queues the rest itself).
The Ray cluster (a head and two worker nodes on this host, `tests.helpers.ray_cluster`) is started once,
before any timing. The rounds alternate local / Ray so load from elsewhere hits both alike. No targets:
figures are printed, and the script exits 0. Not collected by pytest.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from engine import jobs, store  # noqa: E402
from engine.config import RunConfig  # noqa: E402
from engine.jobs import kinds  # noqa: E402
from engine.store import Workspace  # noqa: E402
from tests.helpers.ray_cluster import dashboard_address, start_cluster, stop_cluster  # noqa: E402
from tests.helpers.sleep_kind import REGISTRATION, SleepRequest  # noqa: E402

POLL_SECONDS = 0.01
NOOP = SleepRequest(seconds=0.1)


class Busy(ValueError):
    pass


def use_backend(name: str, address: str) -> None:
    os.environ["APERTURE_BACKEND"] = name
    os.environ["RAY_ADDRESS"] = address
    os.environ[jobs.MAX_JOBS_ENV] = "2" if name == "local" else ""


def idle_runs(workspace: Workspace, count: int) -> list[str]:
    """Runs whose train job is done, one per job of a burst (a run holds one active job of a kind)."""
    runs = [workspace.create_run(RunConfig()) for _ in range(count)]
    for run in runs:
        workspace.finish_job(run.job.id, store.COMPLETED)
    return [run.id for run in runs]


def wait_for(workspace: Workspace, job_ids: list[str], done, timeout: float = 120.0) -> float:
    """Polls (refreshing the queue, as pages do) until `done(job)` holds for every job; returns the time then."""
    deadline = time.monotonic() + timeout
    pending = set(job_ids)
    while pending and time.monotonic() < deadline:
        jobs.refresh(workspace)
        pending = {j for j in pending if not done(workspace.get_job(j))}
        if pending:
            time.sleep(POLL_SECONDS)
    if pending:
        raise RuntimeError(f"{len(pending)} jobs not done after {timeout:.0f} s")
    return time.monotonic()


def submit_to_running(workspace: Workspace, run_id: str) -> float:
    started = time.monotonic()
    job = jobs.submit_job(workspace, run_id, "sleep", NOOP, busy_error=Busy)
    seen = wait_for(workspace, [job.id], lambda j: j.progress > 0 or not j.active)
    wait_for(workspace, [job.id], lambda j: not j.active)
    if workspace.get_job(job.id).status != store.COMPLETED:
        raise RuntimeError(f"job {job.id}: {workspace.get_job(job.id).error}")
    return seen - started


def burst(workspace: Workspace, count: int) -> float:
    run_ids = idle_runs(workspace, count)
    started = time.monotonic()
    job_ids = [jobs.submit_job(workspace, r, "sleep", NOOP, busy_error=Busy).id for r in run_ids]
    ended = wait_for(workspace, job_ids, lambda j: not j.active, timeout=60 + 10 * count)
    failed = [j for j in job_ids if workspace.get_job(j).status != store.COMPLETED]
    if failed:
        raise RuntimeError(f"{len(failed)} jobs did not complete: {workspace.get_job(failed[0]).error}")
    return count / (ended - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rounds, burst_size, bursts = (3, 6, 1) if args.quick else (7, 12, 2)
    os.environ[kinds.EXTRA_KINDS_ENV] = REGISTRATION
    os.environ["APERTURE_STANDBY"] = "0"  # the standby is for TensorFlow jobs; a no-op job gains nothing
    started = time.monotonic()
    cluster = start_cluster(nodes=2)
    address = dashboard_address(cluster)
    print(f"Ray cluster: a head and 2 one-CPU worker nodes on this host, up in {time.monotonic() - started:.1f} s")
    latency: dict[str, list[float]] = {"local": [], "ray": []}
    rates: dict[str, list[float]] = {"local": [], "ray": []}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-queue-") as scratch:
            spaces = {name: Workspace(Path(scratch) / name) for name in ("local", "ray")}
            for name, workspace in spaces.items():  # one unmeasured job each: caches, Ray's worker pool
                use_backend(name, address)
                submit_to_running(workspace, idle_runs(workspace, 1)[0])
            for round_ in range(rounds):
                order = ("local", "ray") if round_ % 2 == 0 else ("ray", "local")
                for name in order:
                    use_backend(name, address)
                    latency[name].append(submit_to_running(spaces[name], idle_runs(spaces[name], 1)[0]))
            for round_ in range(bursts):
                for name in (("local", "ray") if round_ % 2 == 0 else ("ray", "local")):
                    use_backend(name, address)
                    rates[name].append(burst(spaces[name], burst_size))
    finally:
        stop_cluster(cluster)
    print(f"\nno-op jobs ({NOOP.seconds} s each); {rounds} latency rounds, {bursts} burst(s) of {burst_size}")
    print(f"{'':<28} {'local':>18} {'ray':>18} {'ray / local':>12}")
    lo, ra = statistics.median(latency["local"]), statistics.median(latency["ray"])
    print(f"{'submit -> running, median':<28} {lo:>16.2f} s {ra:>16.2f} s {ra / lo:>12.2f}")
    print(f"{'  range':<28} {_range(latency['local']):>18} {_range(latency['ray']):>18}")
    lo, ra = statistics.median(rates["local"]), statistics.median(rates["ray"])
    print(f"{'burst: jobs/s to completion':<28} {lo:>14.2f} /s {ra:>14.2f} /s {ra / lo:>12.2f}")


def _range(values: list[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f} s"


if __name__ == "__main__":
    main()
