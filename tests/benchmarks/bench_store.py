"""Benchmarks the store's queue claim, in one run: `python tests/benchmarks/bench_store.py [--quick] [--workers N]`.

50 worker processes (as 50 job slots across a cluster would be) drain one queue of jobs: each claims the
oldest queued job (`claim_next_job`, limit = the number of workers), heartbeats it once and finishes it, until
the queue is empty; then one worker alone drains a tenth as many (no contention). The same queues run on SQLite
(the workspace's file, WAL) and on PostgreSQL (a throwaway local server started here, one pool per worker
process). Prints jobs/s (claim + heartbeat + finish), the claim latency's median and 95th percentile, and how
many jobs were claimed twice or lost (must be 0), side by side with the PostgreSQL/SQLite ratio. Every process
shares this machine's cores with the server; asserts nothing about time; exits 0 (1 if a job was claimed twice
or lost). Not collected by pytest.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from engine import store  # noqa: E402
from engine.config import RunConfig  # noqa: E402
from tests import pg  # noqa: E402


def _worker(root: str, url: str | None, limit: int, ready, go, results) -> None:
    workspace = store.Workspace(root, database_url=url)
    claimed, latencies = [], []
    ready.wait()
    go.wait()
    while True:
        started = time.perf_counter()
        job = workspace.claim_next_job(limit)
        latencies.append(time.perf_counter() - started)
        if job is None:
            if not workspace.jobs(statuses=(store.QUEUED,)):
                break
            continue  # every slot was taken at that moment: the queue is not empty yet
        workspace.heartbeat(job.id, progress=0.5, message="working")
        workspace.finish_job(job.id, store.COMPLETED)
        claimed.append(job.id)
    results.put((claimed, latencies))


def drain(root: Path, url: str | None, jobs: int, workers: int) -> dict:
    """Queues `jobs` jobs, then lets `workers` processes drain the queue; returns the figures."""
    workspace = store.Workspace(root, database_url=url)
    run = workspace.create_run(RunConfig(name="bench"))
    workspace.finish_job(run.job.id, store.COMPLETED)
    with workspace._connect() as db:  # the queue itself, written in one transaction
        now = time.time()
        db.executemany("INSERT INTO jobs (id, run_id, kind, status, created_at) VALUES (?, ?, 'bench', ?, ?)",
                       [(f"job-{i:06d}", run.id, store.QUEUED, now + i * 1e-6) for i in range(jobs)])
    context = multiprocessing.get_context("spawn")
    ready, go, results = context.Barrier(workers + 1), context.Event(), context.Queue()
    processes = [context.Process(target=_worker, args=(str(root), url, workers, ready, go, results))
                 for _ in range(workers)]
    for process in processes:
        process.start()
    ready.wait()
    started = time.perf_counter()
    go.set()
    outcomes = [results.get(timeout=600) for _ in processes]
    seconds = time.perf_counter() - started
    for process in processes:
        process.join(30)
    claimed = [job_id for ids, _ in outcomes for job_id in ids]
    latencies = sorted(x for _, lat in outcomes for x in lat)
    completed = len(workspace.jobs(statuses=(store.COMPLETED,))) - 1
    return {"jobs": jobs, "seconds": seconds, "jobs_per_s": len(claimed) / seconds,
            "p50_ms": 1000 * statistics.median(latencies), "p95_ms": 1000 * latencies[int(0.95 * len(latencies))],
            "twice": len(claimed) - len(set(claimed)), "lost": jobs - completed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="500 jobs instead of 3,000")
    parser.add_argument("--workers", type=int, default=50)
    args = parser.parse_args()
    jobs = 500 if args.quick else 3000
    bindir = pg.find_bindir()
    if bindir is None:
        print("PostgreSQL's server binaries are not installed (apt-get install postgresql)")
        return 1
    server = pg.PostgresServer(bindir).start()
    cases = ((args.workers, jobs), (1, jobs // 10))
    figures: dict[tuple[str, int], dict] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for workers, count in cases:
                figures["SQLite", workers] = drain(Path(tmp, f"sqlite-{workers}"), None, count, workers)
                figures["PostgreSQL", workers] = drain(Path(tmp, f"postgresql-{workers}"),
                                                       server.create_database("bench"), count, workers)
    finally:
        server.stop()
    print("\nstore claim throughput: worker processes drain a queue (claim + heartbeat + finish each job)")
    print(f"{'store':<12}{'workers':>8}{'jobs':>6}{'seconds':>9}{'jobs/s':>9}{'claim p50 ms':>14}{'claim p95 ms':>14}"
          f"{'twice':>7}{'lost':>6}")
    for (name, workers), f in figures.items():
        print(f"{name:<12}{workers:>8}{f['jobs']:>6}{f['seconds']:>9.1f}{f['jobs_per_s']:>9.0f}{f['p50_ms']:>14.1f}"
              f"{f['p95_ms']:>14.1f}{f['twice']:>7}{f['lost']:>6}")
    for workers, _ in cases:
        sqlite, postgres = figures["SQLite", workers], figures["PostgreSQL", workers]
        print(f"{workers} worker(s), PostgreSQL / SQLite: {postgres['jobs_per_s'] / sqlite['jobs_per_s']:.2f}x jobs/s, "
              f"{postgres['p50_ms'] / sqlite['p50_ms']:.2f}x claim p50")
    return 1 if any(f["twice"] or f["lost"] for f in figures.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
