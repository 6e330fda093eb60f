"""The `sweep` job: runs a sweep's trials (ordinary train runs) until its budget is used, with progress and cancel.

The job's `run_id` is the sweep's id; its request is the sweep file. Optuna is imported here, in the
job process only.
"""

from __future__ import annotations

from engine.jobs.context import JobCancelled, JobContext
from engine.jobs.kinds import JobKind
from engine.store.sweeps import SWEEP_JOB
from engine.sweeps.spec import SweepSpec


def run_sweep_job(context: JobContext, spec: SweepSpec) -> None:
    """The body of a `sweep` job: continues the sweep's study (a new one, or one a killed process left)."""
    from engine.sweeps.search import SweepRunner

    runner = SweepRunner(context.workspace, context.run_id, spec,
                         report=lambda progress, message: context.report(progress, message),
                         should_stop=context.should_stop)
    if not runner.run():
        raise JobCancelled()


KIND = JobKind(SWEEP_JOB, run=run_sweep_job, request_type=SweepSpec, doing="being swept")
