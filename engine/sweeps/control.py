"""Starting, resuming, cancelling and reading sweeps, for the CLI and the pages (no Optuna, no TensorFlow)."""

from __future__ import annotations

from typing import Any

from engine import jobs
from engine import store
from engine.store.sweeps import Sweep, SweepStore
from engine.sweeps.spec import OBJECTIVES, SweepSpec


def submit_sweep(spec: SweepSpec, workspace: store.Workspace) -> Sweep:
    """Records a sweep with a queued sweep job and starts it (a sweep job takes no job slot)."""
    sweep = SweepStore(workspace).create(spec.name, spec.to_dict())
    jobs.refresh(workspace)
    return SweepStore(workspace).get(sweep.id)


def resume_sweep(sweep_id: str, workspace: store.Workspace) -> Sweep:
    """Queues a new job for a sweep that stopped (its process was killed, it failed or was cancelled).

    It continues with the remaining budget: trials that finished are kept, runs still going are followed.

    Raises:
        ValueError: the sweep is still active, or its whole budget is done.
    """
    sweeps = SweepStore(workspace)
    jobs.refresh(workspace)  # a killed sweep process is noticed here
    sweep = sweeps.get(sweep_id)
    spec = SweepSpec.from_dict(sweep.spec)
    trials = sweeps.trials(sweep_id)
    if sweep.job is not None and sweep.job.status == store.COMPLETED and len(trials) >= spec.trials \
            and all(t.finished for t in trials):
        raise ValueError(f"sweep {sweep_id} is complete: all {spec.trials} trials are done")
    sweeps.queue_job(sweep_id)
    jobs.refresh(workspace)
    return sweeps.get(sweep_id)


def cancel_sweep(sweep_id: str, workspace: store.Workspace) -> store.Job | None:
    """Asks a sweep to stop; its process cancels the queued trials and stops the running ones cooperatively.

    A sweep whose job is still queued is cancelled at once. Returns its job as it stands, or None if it
    was not active.
    """
    job = SweepStore(workspace).get(sweep_id).job
    if job is None or not job.active:
        return None
    return jobs.cancel_job(job.id, workspace)


def sweep_result(sweep_id: str, workspace: store.Workspace) -> dict[str, Any]:
    """The sweep as JSON: status, progress, `trials` ({run_id, status, params, values}) and `pareto` (run ids)."""
    sweeps = SweepStore(workspace)
    sweep = sweeps.get(sweep_id)
    spec = sweep.spec
    trials = sweeps.trials(sweep_id)
    job = sweep.job
    return {
        "sweep_id": sweep.id, "name": sweep.name, "status": sweep.status,
        "error": job.error if job is not None else None, "budget": spec["trials"],
        "done": sum(t.finished for t in trials), "objectives": spec["objectives"],
        "trials": [{"number": t.number, "run_id": t.run_id, "status": t.state, "params": t.params,
                    "values": t.values, **({"error": t.error} if t.error else {})} for t in trials],
        "pareto": [t.run_id for t in trials if t.pareto and t.run_id],
    }


def objective_label(name: str) -> str:
    """How pages and tables name an objective, with its unit."""
    return OBJECTIVES[name][0]
