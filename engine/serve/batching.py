"""Server-side batching, as TF Serving does it: requests that arrive within a short window run as one batch.

One `Batcher` per loaded artifact owns the thread that calls its `predict` (LiteRT's interpreter
is not thread-safe, and one caller keeps a model's memory and threads bounded). A request waits
at most `window_s` for others to join it, and a batch holds at most `max_batch` images (a
request bigger than that runs alone). With batching off (`max_batch=1`), requests run one at a
time in arrival order. After each batch `on_batch` gets the requests and their results (the
prediction log), on the same thread.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import queue
import threading
import time
from concurrent.futures import Future
from typing import Callable

import numpy as np

log = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 32
DEFAULT_WINDOW_MS = 2.0


@dataclasses.dataclass
class Pending:
    """One request in the queue: its images, when it arrived, and the future its caller waits on."""

    images: np.ndarray
    context: object = None  # whatever the caller wants back in `on_batch` (e.g. log ids and thumbnails)
    arrived: float = dataclasses.field(default_factory=time.perf_counter)
    future: Future = dataclasses.field(default_factory=Future)


@dataclasses.dataclass(frozen=True)
class Done:
    """What a request's future resolves to: the probabilities and how the request was served."""

    probabilities: np.ndarray
    latency_ms: float  # from arrival to result: the wait for the batch plus the batch's run
    batch_size: int  # images in the batch it ran in


class Batcher:
    """Runs `predict` on batches of queued requests, on its own thread.

    Args:
        predict: `(N, H, W, 3)` float32 → `(N, classes)` probabilities.
        max_batch: most images per batch (1 turns batching off). Default 32.
        window_s: how long the first request of a batch waits for more. Default 2 ms.
        on_batch: called with `[(pending, done), ...]` after each batch (errors are logged, not raised).
        name: the thread's name.
    """

    def __init__(self, predict: Callable[[np.ndarray], np.ndarray], *, max_batch: int = DEFAULT_MAX_BATCH,
                 window_s: float = DEFAULT_WINDOW_MS / 1000,
                 on_batch: Callable[[list[tuple[Pending, Done]]], None] | None = None, name: str = "batcher"):
        if max_batch < 1:
            raise ValueError(f"max_batch={max_batch}: at least 1")
        self.predict, self.max_batch, self.window_s, self.on_batch = predict, max_batch, max(0.0, window_s), on_batch
        self._queue: queue.Queue[Pending | None] = queue.Queue()
        self._coming, self._coming_lock = 0, threading.Lock()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    @contextlib.contextmanager
    def expecting(self):
        """Announces a request being read; yields the `arrived` callable to hand to `submit` (or not, if the
        request fails before it gets there: leaving the block withdraws the announcement)."""
        with self._coming_lock:
            self._coming += 1
        done = []

        def arrived() -> None:
            if not done:
                done.append(True)
                with self._coming_lock:
                    self._coming -= 1

        try:
            yield arrived
        finally:
            arrived()

    def submit(self, images: np.ndarray, context: object = None, *, arrived=None) -> Future:
        """Queues `images` (one request); the future resolves to a `Done` or raises what `predict` raised."""
        pending = Pending(np.asarray(images, dtype=np.float32), context)
        if arrived is not None:
            arrived()  # before it is queued: a batch it joins must not wait for it
        self._queue.put(pending)
        return pending.future

    def close(self) -> None:
        """Stops the thread once the queue is drained (requests already queued still run)."""
        self._queue.put(None)

    def _collect(self, first: Pending) -> tuple[list[Pending], bool]:
        """`first` and the requests that join it within the window and the batch limit; and whether to stop."""
        batch, images = [first], len(first.images)
        deadline = time.perf_counter() + self.window_s
        while images < self.max_batch:
            if self._coming == 0 and self._queue.empty():
                break  # nobody else on the way: run now
            try:
                remaining = deadline - time.perf_counter()
                item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                return batch, True
            if images + len(item.images) > self.max_batch:
                self._queue.put(item)  # behind whatever arrived meanwhile: fine for a window this short
                break
            batch.append(item)
            images += len(item.images)
        return batch, False

    def _loop(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                return
            batch, stop = self._collect(first)
            try:
                probabilities = np.asarray(self.predict(np.concatenate([p.images for p in batch])), dtype=np.float32)
            except BaseException as error:  # noqa: BLE001 - handed to every waiting caller
                for pending in batch:
                    pending.future.set_exception(error)
                continue
            finished, total, start = time.perf_counter(), sum(len(p.images) for p in batch), 0
            results = []
            for pending in batch:
                done = Done(probabilities[start:start + len(pending.images)],
                            1000 * (finished - pending.arrived), total)
                start += len(pending.images)
                results.append((pending, done))
            if self.on_batch is not None:
                try:
                    self.on_batch(results)
                except Exception:  # noqa: BLE001 - the log must never fail a prediction
                    log.exception("recording a batch failed")
            for pending, done in results:
                pending.future.set_result(done)
