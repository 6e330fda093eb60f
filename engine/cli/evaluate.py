"""`evaluate`: metrics of a run's test predictions, or of its model on other images."""

from __future__ import annotations

import json

from engine.cli.common import UsageError, add_run_command
from engine.runfolder import RunFolder
from engine.store import Workspace


def register(subparsers) -> None:
    """Adds `evaluate` to the top-level parser's `subparsers`."""
    p = add_run_command(subparsers, "evaluate", cmd_evaluate,
                        help="metrics of a completed run's test predictions (or of a new folder)")
    p.add_argument("--data", help="an image folder or .zip (one sub-folder per class) to evaluate the model on, "
                   "or split:train / split:val / split:test to re-predict one of the run's own splits")
    p.add_argument("--batch-size", type=int, default=256, help="images per forward pass with --data")
    p.add_argument("--json", action="store_true", help="print the evaluation as one JSON object")


def cmd_evaluate(args, workspace: Workspace) -> int:
    from engine import evaluation

    run_id = workspace.resolve_run_id(args.run)
    try:
        if args.data is None:
            predictions = RunFolder(workspace, run_id).predictions()
        else:
            if args.batch_size < 1:
                raise UsageError(f"--batch-size {args.batch_size}: must be at least 1")
            predictions = evaluation.predict_source(workspace, run_id, args.data, batch_size=args.batch_size)
    except evaluation.NoPredictions as error:
        raise UsageError(str(error)) from None
    except evaluation.EvaluationError as error:
        raise UsageError(f"--data {error}") from None
    result = evaluation.evaluate(predictions)
    if args.json:
        print(json.dumps({"run_id": run_id, "data": args.data or "test split", **result.to_dict()}))
    else:
        print(f"run {run_id} on {args.data or 'its test split'}")
        print(evaluation.format_table(result))
    return 0
