"""Which runs the server answers for, and their artifacts loaded once: cached by run, format and file time.

A run is served when it finished with a model (and, with `runs="published"`, when its demo is
published). Each loaded artifact gets its own `Batcher`; a re-export or retrain changes the
file's time, so the next request loads the new file and the old one is let go. Every batch is
written to the prediction log before its callers get their answers.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import secrets
import threading
import time
from pathlib import Path

import numpy as np

from engine.export.formats import FORMATS
from engine.export.runners import load_runner
from engine.runfolder import RunFolder
from engine.serve.batching import DEFAULT_MAX_BATCH, DEFAULT_WINDOW_MS, Batcher, Done, Pending
from engine.serve.client import png
from engine.serve.inputs import ServeError
from engine.store import COMPLETED, LoggedPrediction, PredictionLog, RunNotFound, Workspace

log = logging.getLogger(__name__)

RUN_CHOICES = ("all", "published")
DEFAULT_FORMAT = "keras"
MAX_LOADED = 8  # artifacts kept loaded at once (least recently used let go first)
SERVED_TTL_SECONDS = 2.0  # how long a run's lookup (store row, class names, exports) is reused between requests


@dataclasses.dataclass(frozen=True)
class ServedRun:
    """A run the server answers for: its classes, input size and the artifacts it can be served by."""

    run_id: str
    label: str
    class_names: list[str]
    image_size: int
    artifacts: dict[str, Path]  # format → file; "keras" is the run's own model
    parity: dict[str, dict] = dataclasses.field(default_factory=dict)  # format → what the export report measured

    def artifact(self, fmt: str | None) -> tuple[str, Path]:
        fmt = fmt or DEFAULT_FORMAT
        if fmt not in FORMATS:
            raise ServeError(400, f"format={fmt!r}: choose from {', '.join(FORMATS)}")
        if fmt not in self.artifacts:
            have = ", ".join(self.artifacts)
            raise ServeError(404, f"run {self.run_id} has no {fmt} export (it has: {have}); export it first")
        return fmt, self.artifacts[fmt]


@dataclasses.dataclass
class Loaded:
    """One artifact in memory: its runner and the batcher that feeds it."""

    runner: object
    batcher: Batcher


@dataclasses.dataclass(frozen=True)
class Request:
    """What the log needs to know about one request's images."""

    run_id: str
    fmt: str
    source: str
    log: bool = True


class ModelRegistry:
    """The runs of a workspace as the server sees them, and their loaded artifacts.

    Args:
        workspace: the workspace whose runs are served.
        runs: "all" finished runs, or only "published" ones.
        max_batch: most images per server-side batch (1: no batching).
        window_ms: how long a request waits for others to join its batch.
    """

    def __init__(self, workspace: Workspace, *, runs: str = "all", max_batch: int = DEFAULT_MAX_BATCH,
                 window_ms: float = DEFAULT_WINDOW_MS):
        if runs not in RUN_CHOICES:
            raise ValueError(f"runs={runs!r}: choose from {', '.join(RUN_CHOICES)}")
        self.workspace, self.runs, self.max_batch, self.window_s = workspace, runs, max_batch, window_ms / 1000
        self.log = PredictionLog(workspace, hold_open=True)
        self._served: dict[str, tuple[float, ServedRun]] = {}
        self._loaded: collections.OrderedDict[tuple, Loaded] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[tuple, threading.Lock] = collections.defaultdict(threading.Lock)

    def served(self, name: str) -> ServedRun:
        """The run `name` (an id, or a unique prefix of one); 404 unless it is served here. Looked up again after
        `SERVED_TTL_SECONDS`, so a new export, a deletion or a withdrawn publication shows within that."""
        now = time.monotonic()
        hit = self._served.get(name)
        if hit is not None and now - hit[0] < SERVED_TTL_SECONDS:
            return hit[1]
        served = self._look_up(name)
        self._served[name] = (now, served)
        if len(self._served) > 256:
            self._served.pop(next(iter(self._served)))
        return served

    def _look_up(self, name: str) -> ServedRun:
        try:
            run = self.workspace.get_run(self.workspace.resolve_run_id(name))
        except (RunNotFound, ValueError):
            raise ServeError(404, f"no run {name!r} in this workspace") from None
        folder = RunFolder(self.workspace, run.id)
        if run.status != COMPLETED or not folder.has_model:
            raise ServeError(404, f"run {run.id} has no trained model to serve (it is {run.status})")
        if self.runs == "published" and not folder.published:
            raise ServeError(404, f"run {run.id} is not published (this server serves published runs only)")
        names = folder.class_names() or [str(i) for i in range(run.num_classes or 0)]
        artifacts = {fmt: path for fmt, path in folder.exports().items() if fmt in FORMATS}
        artifacts[DEFAULT_FORMAT] = folder.model_file
        report = folder.export_report() or {}
        parity = {a["format"]: {k: a.get(k) for k in ("accuracy", "accuracy_drop", "latency_ms_median", "size_bytes",
                                                      "passed")}
                  for a in report.get("artifacts", []) if a.get("format") in artifacts}
        return ServedRun(run.id, run.label, names, run.config.data.image_size, artifacts, parity)

    def served_runs(self) -> list[ServedRun]:
        """Every run served here, newest first."""
        found = []
        for run in self.workspace.list_runs():
            try:
                found.append(self.served(run.id))
            except ServeError:
                continue
        return found

    def loaded(self, served: ServedRun, fmt: str | None) -> tuple[str, Loaded]:
        """The artifact of `served` in format `fmt` (default Keras), loaded on first use (blocking)."""
        fmt, path = served.artifact(fmt)
        try:
            key = (served.run_id, fmt, str(path), path.stat().st_mtime)
        except OSError:
            raise ServeError(404, f"run {served.run_id}'s {fmt} file is gone") from None
        with self._loading[key[:2]]:  # one load per run and format at a time
            with self._lock:
                if key in self._loaded:
                    self._loaded.move_to_end(key)
                    return fmt, self._loaded[key]
            started = time.perf_counter()
            runner = load_runner(path, fmt)
            batcher = Batcher(runner.predict, max_batch=self.max_batch, window_s=self.window_s,
                              on_batch=self._record, name=f"batcher-{served.run_id}-{fmt}")
            log.info("loaded %s %s in %.1f s", served.run_id, fmt, time.perf_counter() - started)
            with self._lock:
                for old in [k for k in self._loaded if k[:2] == key[:2]]:  # an older file of the same artifact
                    self._loaded.pop(old).batcher.close()
                self._loaded[key] = Loaded(runner, batcher)
                while len(self._loaded) > MAX_LOADED:
                    self._loaded.popitem(last=False)[1].batcher.close()
                return fmt, self._loaded[key]

    def keras_model(self, served: ServedRun):
        """The run's Keras model (for explanations), loaded once as the Keras artifact."""
        return self.loaded(served, DEFAULT_FORMAT)[1].runner.model

    def _record(self, results: list[tuple[Pending, Done]]) -> None:
        rows = []
        now = time.time()
        for pending, done in results:
            request, ids = pending.context
            if not request.log:
                continue
            for image, probabilities, log_id in zip(pending.images, done.probabilities, ids):
                rows.append(_row(log_id, request, now, done, image, probabilities))
        self.log.add(rows)


def log_ids(count: int) -> list[str]:
    """Fresh ids for the log rows of `count` images (returned to the caller for feedback)."""
    return [secrets.token_hex(8) for _ in range(count)]


def _row(log_id: str, request: Request, now: float, done: Done, image: np.ndarray,
         probabilities: np.ndarray) -> LoggedPrediction:
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 1e-12, 1.0)
    top = int(np.argmax(p))
    return LoggedPrediction(
        id=log_id, run_id=request.run_id, created_at=now, format=request.fmt, source=request.source,
        latency_ms=round(done.latency_ms, 3), batch_size=done.batch_size, top1=top,
        top1_probability=float(probabilities[top]), entropy=float(-(p * np.log(p)).sum()),
        pixel_mean=float(image.mean()), pixel_std=float(image.std()), image=png(image))
