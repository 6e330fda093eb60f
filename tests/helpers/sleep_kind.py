"""A job kind that needs no TensorFlow, so the queue's tests can run real job processes in about a second.

Registered for a test with `APERTURE_JOB_KINDS=sleep=tests.helpers.sleep_kind:KIND` (the job
processes inherit it).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass

from engine.jobs.context import JobContext
from engine.jobs.kinds import JobKind

REGISTRATION = "sleep=tests.helpers.sleep_kind:KIND"


@dataclass(frozen=True)
class SleepRequest:
    """Sleep `seconds` in steps of 0.1 s, reporting progress; then end as `outcome` says.

    `outcome`: `complete`, `fail` (raise), or `abort` (a native crash: SIGABRT).
    """

    seconds: float = 0.5
    outcome: str = "complete"

    @classmethod
    def from_dict(cls, data: dict) -> SleepRequest:
        return cls(**data)

    def to_dict(self) -> dict:
        return asdict(self)


def run_sleep(context: JobContext, request: SleepRequest) -> None:
    steps = max(1, round(request.seconds / 0.1))
    for step in range(steps):
        context.raise_if_cancelled()
        context.report((step + 1) / steps, f"slept {step + 1} of {steps}")
        time.sleep(0.1)
    if request.outcome == "fail":
        raise RuntimeError("asked to fail")
    if request.outcome == "abort":
        print("free(): invalid pointer", flush=True)
        os.abort()


KIND = JobKind("sleep", run=run_sleep, request_type=SleepRequest, doing="sleeping")
