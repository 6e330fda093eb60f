"""Model-server benchmark; run as `python tests/benchmarks/bench_serve.py [--quick]`.

A real `python -m engine serve` process (one per setting: batching on with its defaults, then
`--no-batching`) over a scratch workspace holding one run (a ResNet, width 8, at 32 px on digits,
trained for one epoch in this process) and its INT8 export. Clients are threads with plain
`http.client` keep-alive connections, each sending one image per `:predict` (TF Serving's row
format), in this process on the same machine.

(a) Throughput (requests/s) and p50/p99 latency with 1, 4 and 16 closed-loop clients, Keras vs
    INT8, batching on vs off, in interleaved rounds (1, 4, 16, 1, 4, 16, ...; medians); the
    median of the rounds' ratios of the 16-client throughput to the 1-client one (target >= 3x
    with batching) and the mean server-side batch size (from the prediction log).
(b) p99/p50 at half the saturating load (target <= 3): open-loop arrivals at half the best
    closed-loop throughput of that row, latency counted from each request's scheduled time.
(c) The Demo's round trip: `ServeClient.classify_image` (PNG bytes in, top-k out, what the
    Demo page calls) against the in-process call it replaces, `decode_image` + the artifact's
    `load_runner(path, fmt).predict` (target <= 1.3x). Rounds alternate; the ratio is the median
    of the rounds' ratios of medians.

No absolute-time asserts: the machine is shared and noisy, so the script prints figures, ratios
and targets, and exits 0. Not collected by pytest (the name does not match `test_*.py`).
"""

from __future__ import annotations

import argparse
import http.client
import io
import itertools
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

import engine  # noqa: E402,F401 - before TensorFlow (the AVX-512 rule)
import numpy as np  # noqa: E402

MODEL = {"name": "resnet", "width": 8, "depth": 1}
IMAGE_SIZE = 32
CLIENTS = (1, 4, 16)
SCALING_TARGET, TAIL_TARGET, ROUND_TRIP_TARGET = 3.0, 3.0, 1.3
SETTINGS = (("on", ()), ("off", ("--no-batching",)))
FORMATS = ("keras", "int8")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


class Load:
    """Requests to one server's `:predict` from threads, each with its own keep-alive connection."""

    def __init__(self, port: int, run_id: str, fmt: str, bodies: list[bytes]):
        self.port, self.path, self.bodies = port, f"/v1/models/{run_id}:predict?format={fmt}", bodies

    def _connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)

    def _send(self, connection: http.client.HTTPConnection, index: int) -> None:
        connection.request("POST", self.path, self.bodies[index % len(self.bodies)],
                           {"Content-Type": "application/json"})
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"{response.status}: {body[:200]!r}")

    def closed(self, clients: int, seconds: float) -> tuple[float, list[float]]:
        """`clients` threads sending back to back for `seconds`: (requests/s, latencies in ms)."""
        latencies: list[list[float]] = [[] for _ in range(clients)]
        ready, go = threading.Barrier(clients + 1), threading.Event()
        window = [0.0, 0.0]

        def client(c: int) -> None:
            connection = self._connect()
            for i in range(3):  # warm: connection open, model loaded, batcher running
                self._send(connection, c + i)
            ready.wait()
            go.wait()
            i = 0
            while time.perf_counter() < window[1]:
                started = time.perf_counter()
                self._send(connection, c * 31 + i)
                latencies[c].append(1000 * (time.perf_counter() - started))
                i += 1
            connection.close()

        threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
        for thread in threads:
            thread.start()
        ready.wait()
        window[0], window[1] = time.perf_counter(), time.perf_counter() + seconds
        go.set()
        for thread in threads:
            thread.join()
        done = [x for per_client in latencies for x in per_client]
        return len(done) / (time.perf_counter() - window[0]), done

    def open(self, rate: float, seconds: float, workers: int = 32) -> list[float]:
        """Arrivals every 1/`rate` s for `seconds`; latency from each request's scheduled time (no omission)."""
        start = time.perf_counter() + 0.2
        count = int(rate * seconds)
        counter, lock = itertools.count(), threading.Lock()
        latencies: list[float] = []

        def worker() -> None:
            connection = self._connect()
            while True:
                with lock:
                    i = next(counter)
                if i >= count:
                    break
                scheduled = start + i / rate
                time.sleep(max(0.0, scheduled - time.perf_counter()))
                self._send(connection, i)
                latencies.append(1000 * (time.perf_counter() - scheduled))
            connection.close()

        threads = [threading.Thread(target=worker) for _ in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return latencies


def prepare(home: Path) -> tuple:
    """Trains the run and exports INT8; returns (workspace, run id, test images)."""
    from engine import export
    from engine.runfolder import RunFolder
    from engine.store import Workspace
    from tests.helpers.runs import train_tiny_run

    workspace = Workspace(home)
    started = time.perf_counter()
    run_id = train_tiny_run(workspace, model=MODEL, epochs=1, image_size=IMAGE_SIZE)
    report = export.export_run(workspace, run_id, export.ExportRequest(formats=("int8",), latency_runs=5))
    folder = RunFolder(workspace, run_id)
    predictions = folder.predictions()
    images = np.asarray(folder.dataset(predictions).images[predictions.indices][:64])
    print(f"run {run_id}: resnet width 8 at {IMAGE_SIZE} px, 1 epoch, Keras test accuracy "
          f"{report.reference_accuracy:.1%}, INT8 {report.artifact('int8').accuracy:.1%} "
          f"({time.perf_counter() - started:.0f} s to train and export)", flush=True)
    return workspace, run_id, images


def measure_setting(server, workspace, run_id: str, bodies: list[bytes], seconds: float, rounds: int) -> dict:
    """Per format: each client count `rounds` times, interleaved (1, 4, 16, 1, 4, 16, ...) so a neighbour's burst
    hits every count alike; medians over rounds, and the median of the rounds' 16/1 ratios."""
    from engine.store import PredictionLog

    log = PredictionLog(workspace)
    rows = {}
    for fmt in FORMATS:
        load = Load(server.port, run_id, fmt, bodies)
        cells: dict[int, list[dict]] = {c: [] for c in CLIENTS}
        for _ in range(rounds):
            for clients in CLIENTS:
                since = time.time()
                throughput, latencies = load.closed(clients, seconds)
                batches = [r.batch_size for r in log.recent(run_id, since=since) if r.format == fmt]
                cells[clients].append({"rps": throughput, "p50": percentile(latencies, 50),
                                       "p99": percentile(latencies, 99),
                                       "batch": statistics.fmean(batches) if batches else float("nan")})
        row = {c: {k: statistics.median(cell[k] for cell in cells[c]) for k in cells[c][0]} for c in CLIENTS}
        ratios = [big["rps"] / one["rps"] for one, big in zip(cells[1], cells[16])]
        row["scaling"] = {"ratio": statistics.median(ratios), "low": min(ratios), "high": max(ratios)}
        saturating = max(row[c]["rps"] for c in CLIENTS)
        half = load.open(saturating / 2, seconds * rounds)
        row["half"] = {"rate": saturating / 2, "p50": percentile(half, 50), "p95": percentile(half, 95),
                       "p99": percentile(half, 99)}
        rows[fmt] = row
        print(f"  {fmt}: measured", flush=True)
    return rows


def round_trip(server, workspace, run_id: str, images: np.ndarray, rounds: int, calls: int) -> dict:
    """Median over rounds of (server round trip median / in-process median), per format."""
    from PIL import Image

    from engine.data.images import decode_image
    from engine.export import load_runner
    from engine.runfolder import RunFolder
    from engine.serve.client import ServeClient

    files = []
    for image in images[:calls]:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        files.append(buffer.getvalue())
    client = ServeClient(server.url, token=None)
    folder = RunFolder(workspace, run_id)
    results = {}
    for fmt in FORMATS:
        runner = load_runner(folder.model_file if fmt == "keras" else folder.exports()[fmt], fmt)
        runner.predict(decode_image(files[0], IMAGE_SIZE)[None].astype(np.float32))
        client.classify_image(run_id, files[0], fmt=fmt, log=False)
        ratios, served_ms, local_ms = [], [], []
        for r in range(rounds):
            sides = {}
            for side in (("server", "local") if r % 2 == 0 else ("local", "server")):
                times = []
                for data in files:
                    started = time.perf_counter()
                    if side == "server":
                        client.classify_image(run_id, data, fmt=fmt, source="demo")
                    else:
                        probabilities = runner.predict(decode_image(data, IMAGE_SIZE)[None].astype(np.float32))
                        np.argsort(-probabilities[0])[:5]
                    times.append(1000 * (time.perf_counter() - started))
                sides[side] = statistics.median(times)
            ratios.append(sides["server"] / sides["local"])
            served_ms.append(sides["server"])
            local_ms.append(sides["local"])
        results[fmt] = {"ratio": statistics.median(ratios), "low": min(ratios), "high": max(ratios),
                        "server_ms": statistics.median(served_ms), "local_ms": statistics.median(local_ms)}
    return results


def print_tables(measured: dict, trips: dict, seconds: float, rounds: int) -> None:
    print(f"\n(a) closed loop, one 32x32 image per :predict, {rounds} interleaved rounds of {seconds:g} s per cell, "
          f"medians (req/s, p50/p99 ms, mean server batch)")
    head = " | ".join(f"{c:>2} client{'s' if c > 1 else ' '}: req/s  p50   p99  batch" for c in CLIENTS)
    print(f"{'format':<6} {'batching':<8} | {head} | 16/1 (range) (target >= {SCALING_TARGET:g} batching on)")
    for fmt in FORMATS:
        for setting, _ in SETTINGS:
            row = measured[setting][fmt]
            cells = " | ".join(f"{row[c]['rps']:>16.0f} {row[c]['p50']:>5.1f} {row[c]['p99']:>5.1f} "
                               f"{row[c]['batch']:>5.1f}" for c in CLIENTS)
            scaling = row["scaling"]
            verdict = ("met" if scaling["ratio"] >= SCALING_TARGET else "MISSED") if setting == "on" else "-"
            print(f"{fmt:<6} {setting:<8} | {cells} | {scaling['ratio']:>5.2f}x "
                  f"({scaling['low']:.2f}-{scaling['high']:.2f}) {verdict}")
    print(f"\n(b) open loop at half the saturating load (p99/p50 target <= {TAIL_TARGET:g})")
    print(f"{'format':<6} {'batching':<8} {'rate/s':>7} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'p99/p50':>8}")
    for fmt in FORMATS:
        for setting, _ in SETTINGS:
            half = measured[setting][fmt]["half"]
            tail = half["p99"] / half["p50"]
            print(f"{fmt:<6} {setting:<8} {half['rate']:>7.0f} {half['p50']:>7.2f} {half['p95']:>7.2f} {half['p99']:>7.2f} "
                  f"{tail:>7.2f}x {'met' if tail <= TAIL_TARGET else 'MISSED'}")
    print(f"\n(c) the Demo's round trip, :classify_image through the server vs in process "
          f"(target <= {ROUND_TRIP_TARGET:g}x; batching on)")
    print(f"{'format':<6} {'server ms':>10} {'in-process ms':>14} {'ratio':>7} {'range':>12}")
    for fmt in FORMATS:
        t = trips[fmt]
        print(f"{fmt:<6} {t['server_ms']:>10.2f} {t['local_ms']:>14.2f} {t['ratio']:>6.2f}x "
              f"{t['low']:>5.2f}-{t['high']:<5.2f} {'met' if t['ratio'] <= ROUND_TRIP_TARGET else 'MISSED'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter cells and fewer rounds (about 2 minutes)")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from tests.engine.serve.conftest import Server

    seconds, rounds, trip_rounds, calls = (1.0, 2, 3, 20) if args.quick else (2.0, 3, 5, 40)
    started = time.perf_counter()
    print(f"bench_serve{' --quick' if args.quick else ''}: {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="aperture-bench-serve-") as scratch:
        workspace, run_id, images = prepare(Path(scratch) / "workspace")
        bodies = [json.dumps({"instances": [image.tolist()]}).encode() for image in images]
        measured, trips = {}, {}
        for setting, flags in SETTINGS:
            server = Server(workspace.root, *flags).wait_ready()
            try:
                print(f"batching {setting}: server on port {server.port}", flush=True)
                measured[setting] = measure_setting(server, workspace, run_id, bodies, seconds, rounds)
                if setting == "on":
                    trips = round_trip(server, workspace, run_id, images, trip_rounds, calls)
            finally:
                server.stop()
    print_tables(measured, trips, seconds, rounds)
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}; {time.perf_counter() - started:.0f} s in all")


if __name__ == "__main__":
    main()
