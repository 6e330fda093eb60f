"""The `weights` job: gets a transfer base's pretrained weights (`engine.weights`) with progress and cancel.

The Train page's Get button submits it (`submit_weights`), so a download survives a page-server
restart and every session sees it. Its `run_id` is the task id `weights-<base>` (no row in `runs`;
the folder holds its log), so a second Get attaches to the running download. A keras.applications
base downloads without TensorFlow (a cancel keeps the partial file, and the next job resumes it); a
KerasHub base (`hub:<preset>`) is fetched by KerasHub, which imports TensorFlow in the job process.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass

from engine import weights, zoo
from engine.config import ModelConfig
from engine.jobs.context import JobCancelled, JobContext
from engine.jobs.kinds import JobKind
from engine.store.records import Job
from engine.store.workspace import WEIGHTS_JOB, Workspace



@dataclass(frozen=True)
class WeightsRequest:
    """Which base's weights to get: a `model.base` (`efficientnet_v2b0`, `hub:<preset>`)."""

    base: str

    @classmethod
    def from_dict(cls, data: dict) -> WeightsRequest:
        return cls(**data)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def task_id(self) -> str:
        """`weights-<base>` (characters a folder name should not hold become `_`)."""
        return "weights-" + re.sub(r"[^A-Za-z0-9_.-]", "_", self.base)


def run_weights_job(context: JobContext, request: WeightsRequest) -> None:
    """The body of a `weights` job."""
    if zoo.is_hub_base(request.base):
        context.report(0.0, f"KerasHub is fetching {zoo.hub_preset(request.base)}")
        folder = weights.download_preset(request.base)
        context.report(1.0, f"preset in {folder}")
        return
    started = time.monotonic()

    def progress(done: int, total: int) -> None:
        rate = done / max(time.monotonic() - started, 1e-6) / 1e6
        size = f"{done / 1e6:,.1f} of {total / 1e6:,.1f} MB" if total else f"{done / 1e6:,.1f} MB"
        context.report_often(done / total if total else 0.0, f"{size} at {rate:,.1f} MB/s", final=done >= total)

    context.report(0.0, f"connecting to {zoo.get_base(request.base).url.rsplit('/', 1)[0]}")
    try:
        path = weights.download(request.base, progress=progress, should_stop=context.should_stop)
    except weights.DownloadCancelled:
        raise JobCancelled() from None
    context.report(1.0, f"checked and saved as {path.name}")


def submit_weights(workspace: Workspace, base: str) -> Job:
    """Queues the download of a base's weights (or returns its job already queued or running).

    Raises:
        ConfigError: `base` is not a transfer base.
    """
    from engine.jobs.queue import submit_task

    ModelConfig(name="transfer", base=base).validate()
    request = WeightsRequest(base)
    return submit_task(workspace, request.task_id, WEIGHTS_JOB, request)


KIND = JobKind(WEIGHTS_JOB, run=run_weights_job, request_type=WeightsRequest, doing="being downloaded")
