"""The registry of job kinds: what each kind runs, with which request, found by name.

Each stage declares its kind beside its code, e.g. in `engine/export/job.py`::

    KIND = JobKind("export", run=run_export_job, request_type=ExportRequest, doing="being exported")

The queue knows kinds only by name; the registry imports a kind's module when asked, so
the dashboard never imports TensorFlow through it and no stage imports the queue back.
`APERTURE_JOB_KINDS` ("name=module:ATTR,...") adds kinds (tests register a no-op kind).
The kinds in `engine.store.workspace.SLOTLESS_JOBS` (sweep, decode, weights) take no slot of the
job limit (`APERTURE_MAX_JOBS`); the claim decides that by name, in one SQL statement.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Any, Callable

from engine.store import TRAIN_JOB as TRAIN  # the kind every run starts with
from engine.store.workspace import DECODE_JOB, WEIGHTS_JOB

EXTRA_KINDS_ENV = "APERTURE_JOB_KINDS"

# name -> "module:attribute" of its JobKind. Resolved lazily (inside the job process, or on submit).
_BUILT_IN = {
    TRAIN: "engine.training_job:KIND",
    "export": "engine.export.job:KIND",
    "evaluate": "engine.evaluation.job:KIND",
    "explain": "engine.explain.batch:KIND",
    "compress": "engine.compress.job:KIND",
    "sweep": "engine.sweeps.job:KIND",
    "inspect": "engine.inspect.job:INSPECT_KIND",
    "health": "engine.inspect.job:HEALTH_KIND",
    DECODE_JOB: "engine.data.decode_job:KIND",  # jobs whose run_id is a task id, not a run
    WEIGHTS_JOB: "engine.weights_job:KIND",
}


@dataclass(frozen=True)
class JobKind:
    """One kind of job.

    Attributes:
        name: the kind's name, as stored in the jobs table.
        run: `run(context, request)`, the job's body; raises `JobCancelled` to stop.
        request_type: the request's class (`from_dict(dict)` and `to_dict()`), or None when the
            job needs nothing beyond its run (train reads the run's config).
        doing: what a run is while the job is active, for "run X is already being exported".
    """

    name: str
    run: Callable[[Any, Any], Any]
    request_type: type | None = None
    doing: str = "busy"

    def parse_request(self, data: dict) -> Any:
        """The typed request from its stored JSON (None for a kind without a request)."""
        return self.request_type.from_dict(data) if self.request_type is not None else None


def targets() -> dict[str, str]:
    """Every known kind name -> "module:attribute" of its `JobKind`."""
    extra = {}
    for item in filter(None, (os.environ.get(EXTRA_KINDS_ENV) or "").split(",")):
        name, _, target = item.partition("=")
        extra[name.strip()] = target.strip()
    return {**_BUILT_IN, **extra}


def resolve(name: str) -> JobKind:
    """Imports and returns the kind called `name`.

    Raises:
        ValueError: no such kind, naming the known ones.
    """
    known = targets()
    target = known.get(name)
    if target is None:
        raise ValueError(f"job kind {name!r} is not known (expected one of {', '.join(known)})")
    module, _, attribute = target.partition(":")
    kind = getattr(importlib.import_module(module), attribute)
    if not isinstance(kind, JobKind) or kind.name != name:
        raise ValueError(f"{target} is not the JobKind {name!r}")
    return kind
