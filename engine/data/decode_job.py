"""The `decode` job: decodes a folder/zip/manifest source into the workspace's memmapped cache, with progress.

The Data page and `python -m engine data decode` submit it (`submit_decode`), so a decode of 50,000
images survives a page-server restart, shows in every session and can run on a cluster node. Its
`run_id` is the task id `decode-<hash of the request>` (no row in `runs`; the folder holds its log),
so asking again for the same decode attaches to the running job. No TensorFlow.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from engine.data.imageset import ImageSet
from engine.data.manifest import ManifestColumns
from engine.data.progress import DecodeProgress
from engine.data.sources import load_images
from engine.jobs.context import JobCancelled, JobContext
from engine.jobs.kinds import JobKind
from engine.store.records import Job
from engine.store.workspace import DECODE_JOB, Workspace



@dataclass(frozen=True)
class DecodeRequest:
    """What to decode: `load_images`'s arguments.

    Args:
        source: a folder, `.zip`, `.csv`/`.tsv` manifest or `version:ID` (absolute paths: the job may run elsewhere).
        image_size: side of the square images in pixels.
        max_per_class: at most this many images per class (0 = all).
        path_column, label_column, split_column: a manifest's columns (blank: detected).
    """

    source: str
    image_size: int
    max_per_class: int = 0
    path_column: str = ""
    label_column: str = ""
    split_column: str = ""

    @classmethod
    def from_dict(cls, data: dict) -> DecodeRequest:
        return cls(**data)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def of(cls, source: str, image_size: int, max_per_class: int = 0,
           columns: ManifestColumns | None = None) -> DecodeRequest:
        columns = columns or ManifestColumns()
        return cls(str(source), int(image_size), int(max_per_class), columns.path, columns.label, columns.split)

    @property
    def columns(self) -> ManifestColumns:
        return ManifestColumns(self.path_column, self.label_column, self.split_column)

    @property
    def task_id(self) -> str:
        """`decode-<12 hex>`: the same for the same decode, so a second submit finds the first one's job."""
        digest = hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()
        return f"decode-{digest[:12]}"


class JobDecodeProgress(DecodeProgress):
    """`load_images`'s progress callback inside a job: reports to the store a few times a second, and raises
    `JobCancelled` once the user asked to stop (the decode then leaves no partial cache)."""

    def __init__(self, context: JobContext):
        super().__init__()
        self.context = context

    def __call__(self, done: int, total: int) -> None:
        super().__call__(done, total)
        if self.context.should_stop():
            raise JobCancelled()
        self.context.report_often(self.fraction, self.line(), final=done >= total)


def run_decode_job(context: JobContext, request: DecodeRequest) -> None:
    """The body of a `decode` job."""
    context.report(0.0, "scanning the source")
    progress = JobDecodeProgress(context)
    images = load_images(request.source, request.image_size, max_per_class=request.max_per_class,
                         cache_dir=context.workspace.cache_dir, columns=request.columns, progress=progress)
    context.report(1.0, f"{len(images):,} images decoded at {request.image_size}×{request.image_size}")


def submit_decode(workspace: Workspace, request: DecodeRequest) -> Job:
    """Queues the decode (or returns its job already queued or running)."""
    from engine.jobs.queue import submit_task

    return submit_task(workspace, request.task_id, DECODE_JOB, request)


class _NotCached(Exception):
    pass


def _refuse_to_decode(done: int, total: int) -> None:
    if done < total:
        raise _NotCached()


def cached_images(workspace: Workspace, request: DecodeRequest) -> ImageSet | None:
    """The decoded set if the cache holds it (a scan and a read of the cache), else None.

    It asks `load_images` itself, whose cache key this module does not know: a cached set reports
    done == total before any decode, and a decode that starts is stopped after its first chunk of
    images (its partial file removed). A set no bigger than one chunk is just decoded.

    Raises:
        DatasetError: the source cannot be used.
    """
    try:
        return load_images(request.source, request.image_size, max_per_class=request.max_per_class,
                           cache_dir=Path(workspace.cache_dir), columns=request.columns, progress=_refuse_to_decode)
    except _NotCached:
        return None


KIND = JobKind(DECODE_JOB, run=run_decode_job, request_type=DecodeRequest, doing="being decoded")

