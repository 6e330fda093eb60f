"""The accuracy–latency–size trade-off of a run's family: every checked artifact of a run and its compressed runs.

No TensorFlow: it reads the export reports (`exports/report.json`) and compress reports of the
runs. The family of a run is its root (followed up through `parent_id`) and every run below it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from engine.export.formats import format_label
from engine.export.report import read_report
from engine.runfolder import RunFolder
from engine.store import Run, Workspace


@dataclass(frozen=True)
class ParetoPoint:
    """One exported artifact as a point: test accuracy (0..1), median single-image latency (ms), size (bytes)."""

    run_id: str
    run_label: str
    method: str  # "original", or the compression: "distilled", "pruned"
    format: str
    accuracy: float
    latency_ms: float
    size_bytes: int
    batch_latency_ms: float | None
    passed: bool
    path: str  # relative to the run's folder
    optimal: bool = False  # on the Pareto front: no other point is at least as accurate and as fast, and better in one

    @property
    def label(self) -> str:
        return f"{self.method} · {format_label(self.format)}"


def family(workspace: Workspace, run_id: str) -> list[Run]:
    """The run's root and every run compressed from it (at any depth), root first, then by age."""
    runs = {r.id: r for r in workspace.list_runs()}
    root = runs[run_id] if run_id in runs else workspace.get_run(run_id)
    above = {root.id}
    while root.parent_id and root.parent_id in runs and root.parent_id not in above:  # a cycle cannot loop
        root = runs[root.parent_id]
        above.add(root.id)
    seen, members, frontier = {root.id}, [root], [root.id]
    while frontier:
        children = sorted((r for r in runs.values() if r.parent_id in frontier and r.id not in seen),
                          key=lambda r: r.created_at)
        seen.update(r.id for r in children)
        members.extend(children)
        frontier = [r.id for r in children]
    return members


def method_of(workspace: Workspace, run: Run) -> str:
    report = RunFolder(workspace, run.id).compress_report()
    if not report:
        return "original"
    return {"distill": "distilled", "prune": "pruned"}.get(report.get("method"), str(report.get("method")))


def family_points(workspace: Workspace, run_id: str) -> list[ParetoPoint]:
    """Every artifact with a measured accuracy and latency in the family of `run_id`, the front marked."""
    points = []
    for run in family(workspace, run_id):
        report = read_report(workspace, run.id)
        if report is None:
            continue
        method = method_of(workspace, run)
        for a in report.artifacts:
            if a.error or a.accuracy is None or a.latency_ms_median is None:
                continue
            points.append(ParetoPoint(run.id, run.label, method, a.format, float(a.accuracy),
                                      float(a.latency_ms_median), int(a.size_bytes), a.batch_latency_ms_median,
                                      bool(a.passed), a.path))
    return mark_front(points)


def mark_front(points: list[ParetoPoint]) -> list[ParetoPoint]:
    """The points with `optimal` set on the non-dominated ones (higher accuracy and lower latency are better)."""
    def dominated(p: ParetoPoint) -> bool:
        return any(q.accuracy >= p.accuracy and q.latency_ms <= p.latency_ms
                   and (q.accuracy > p.accuracy or q.latency_ms < p.latency_ms) for q in points)

    return [replace(p, optimal=not dominated(p)) for p in points]
