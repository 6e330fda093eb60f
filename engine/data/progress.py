"""`DecodeProgress`: how far a decode has got (done / total, images/s, ETA), and a way to stop it."""

from __future__ import annotations

import threading
import time


class DecodeCancelled(Exception):
    """The decode was stopped on request; no partial cache is left behind."""


class DecodeProgress:
    """A `progress(done, total)` callback for `load_images` that records the rate and can cancel the decode.

    Thread-safe: decoding threads call it, a page or a job reads it.
    """

    def __init__(self) -> None:
        self.done = 0
        self.total = 0
        self.started = time.monotonic()
        self._cancelled = threading.Event()

    def __call__(self, done: int, total: int) -> None:
        self.done, self.total = max(self.done, done), total
        if self._cancelled.is_set():
            raise DecodeCancelled("the decode was cancelled")

    def cancel(self) -> None:
        """Asks the decode to stop at its next chunk of images."""
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 0.0

    def rate(self) -> float:
        """Images decoded per second so far."""
        return self.done / max(time.monotonic() - self.started, 1e-9)

    def eta_seconds(self) -> float | None:
        """Seconds left at the rate so far; None before the first images are done."""
        rate = self.rate()
        return (self.total - self.done) / rate if self.done and rate > 0 else None

    def line(self) -> str:
        """`1,234 / 5,000 images · 850 images/s · about 4 s left`."""
        eta = self.eta_seconds()
        left = f" · about {eta:,.0f} s left" if eta is not None else ""
        return f"{self.done:,} / {self.total:,} images · {self.rate():,.0f} images/s{left}"
