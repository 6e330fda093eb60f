"""Sweeps: `sweep --config FILE | --resume ID | --cancel ID | --show ID` and `sweeps` (the list)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from engine import jobs
from engine import store
from engine.cli.common import UsageError, follow
from engine.store import Workspace
from engine.store.sweeps import SweepStore
from engine.sweeps import SweepError, SweepSpec, cancel_sweep, resume_sweep, submit_sweep, sweep_result
from engine.sweeps.spec import OBJECTIVES


def register(subparsers) -> None:
    """Adds `sweep` and `sweeps` to the top-level parser's `subparsers`."""
    p = subparsers.add_parser("sweep", help="search configurations (Optuna): start, resume, cancel or show a sweep")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--config", type=Path, help="a sweep.json: base, space, objectives, trials, parallel")
    what.add_argument("--resume", metavar="SWEEP", help="continue a stopped sweep with its remaining budget")
    what.add_argument("--cancel", metavar="SWEEP", help="stop a sweep (queued trials stop, running ones cancel)")
    what.add_argument("--show", metavar="SWEEP", help="print a sweep's trials and Pareto front")
    p.add_argument("--wait", action="store_true", help="follow the sweep to its end with a progress bar")
    p.add_argument("--json", action="store_true", help="print one JSON object (with --wait: the final result)")
    p.set_defaults(handler=cmd_sweep)

    p = subparsers.add_parser("sweeps", help="list sweeps, newest first")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_sweeps)


def read_spec(path: Path) -> SweepSpec:
    """The validated sweep file at `path` (UsageError with one line when it cannot be read or is invalid)."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"cannot read {path}: {error}") from None
    try:
        values = json.loads(text)
    except json.JSONDecodeError as error:
        raise UsageError(f"{path} is not valid JSON ({error})") from None
    try:
        return SweepSpec.from_dict(values)
    except SweepError as error:
        raise UsageError(f"{path}: {error}") from None


def cmd_sweep(args, workspace: Workspace) -> int:
    sweeps = SweepStore(workspace)
    if args.config is not None:
        sweep = submit_sweep(read_spec(args.config), workspace)
    else:
        sweep = sweeps.get(sweeps.resolve(args.resume or args.cancel or args.show))
    if args.cancel:
        job = cancel_sweep(sweep.id, workspace)
        if job is None:
            raise UsageError(f"sweep {sweep.id} is not queued or running (status: {sweep.status})")
        if not args.wait:
            print(f"{sweep.id}: cancel requested")
            return 0
    elif args.resume:
        sweep = resume_sweep(sweep.id, workspace)
    if args.show or not args.wait:
        jobs.refresh(workspace)
        result = sweep_result(sweep.id, workspace)
        print(json.dumps(result, indent=2) if args.json else (sweep.id if not args.show else _table(result)))
        return 0
    print(f"sweep {sweep.id}: {sweep_result(sweep.id, workspace)['budget']} trials", file=sys.stderr)
    job = follow(sweeps.get(sweep.id).job, workspace)
    result = sweep_result(sweep.id, workspace)
    print(json.dumps(result, indent=2) if args.json else _table(result))
    if job.status != store.COMPLETED:
        print(f"sweep {job.status}: {job.error or ''}", file=sys.stderr)
        return 1
    return 0


def cmd_sweeps(args, workspace: Workspace) -> int:
    jobs.refresh(workspace)
    sweeps = SweepStore(workspace).list()
    rows = [sweep_result(s.id, workspace) for s in sweeps]
    if args.json:
        print(json.dumps([{k: r[k] for k in ("sweep_id", "name", "status", "budget", "done", "objectives", "pareto")}
                          for r in rows], indent=2))
        return 0
    if not rows:
        print("no sweeps yet: python -m engine sweep --config sweep.json --wait")
        return 0
    print(f"{'SWEEP':<28} {'STATUS':<10} {'TRIALS':>7} {'PARETO':>6}  OBJECTIVES")
    for r in rows:
        goals = ", ".join(f"{name} ({direction[:3]})" for name, direction in r["objectives"].items())
        print(f"{r['sweep_id']:<28} {r['status']:<10} {r['done']:>3}/{r['budget']:<3} {len(r['pareto']):>6}  {goals}")
    return 0


def _table(result: dict) -> str:
    names = list(result["objectives"])
    lines = [f"sweep {result['sweep_id']} ({result['status']}): {result['done']}/{result['budget']} trials"]
    lines.append(f"{'#':>3} {'RUN':<21} {'STATUS':<10} " + " ".join(f"{n:>16}" for n in names) + "  PARAMS")
    pareto = set(result["pareto"])
    for t in result["trials"]:
        values = " ".join(f"{t['values'][n]:>16.4g}" if n in t["values"] else f"{'—':>16}" for n in names)
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in t["params"].items())
        mark = "*" if t["run_id"] in pareto else " "
        lines.append(f"{t['number']:>3} {str(t['run_id']):<21} {t['status']:<10} {values}{mark} {params}")
    lines.append("* on the Pareto front" if len(names) > 1 else "* the best trial")
    lines.append("objectives: " + ", ".join(f"{OBJECTIVES[n][0]} ({d})" for n, d in result["objectives"].items()))
    return "\n".join(lines)
