"""Training runs: `train`, `runs`, `show`, `cancel`, `resume`, `publish`, `delete`."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from engine import jobs
from engine import store
from engine.cli.common import UsageError, add_run_command
from engine.cli.data import describe_source
from engine.config import AugmentConfig, RunConfig, field_spec
from engine.runfolder import RunFolder
from engine.store import Run, Workspace

# `train` flags that set one config setting each: their type, choices and help come from its metadata.
CONFIG_FLAGS = {"--data": "data.source", "--model": "model.name", "--base": "model.base", "--epochs": "train.epochs",
                "--image-size": "data.image_size", "--batch-size": "train.batch_size",
                "--lr": "train.learning_rate", "--optimizer": "train.optimizer", "--name": "name"}


def register(subparsers) -> None:
    """Adds the run commands to the top-level parser's `subparsers`."""
    p = subparsers.add_parser("train", help="start a training run (prints its id)")
    p.add_argument("--config", type=Path, help="a run.json; flags below override it")
    for flag, key in CONFIG_FLAGS.items():
        add_setting_flag(p, flag, key)
    p.add_argument("--augment", help="comma list, e.g. flip,rotation=15,shift=0.1,zoom=0.1 (or none)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="any config setting, e.g. --set train.schedule=constant (repeatable)")
    p.add_argument("--seed", type=int, help="sets both data.seed and train.seed")
    p.add_argument("--wait", action="store_true", help="follow the run to its end with a progress bar")
    p.add_argument("--json", action="store_true", help="print one JSON object (with --wait: the final result)")
    p.set_defaults(handler=cmd_train)

    p = subparsers.add_parser("runs", help="list runs, newest first")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_runs)

    p = add_run_command(subparsers, "show", cmd_show, help="show one run (id or unique prefix/suffix)")
    p.add_argument("--json", action="store_true")

    p = add_run_command(subparsers, "cancel", cmd_cancel,
                        help="stop a queued or running run (keeps its best checkpoint)")
    p.add_argument("--wait", action="store_true", help="wait until it has stopped")

    p = add_run_command(subparsers, "resume", cmd_resume,
                        help="continue a failed or cancelled run from its last checkpoint")
    p.add_argument("--wait", action="store_true", help="follow the run to its end with a progress bar")

    p = add_run_command(subparsers, "publish", cmd_publish,
                        help="let anyone with the link open a run's demo page (read-only)")
    p.add_argument("--off", action="store_true", help="withdraw it (the demo then needs the password again)")

    add_run_command(subparsers, "delete", cmd_delete, help="delete a run and its files (cancels it first)")


def cmd_train(args, workspace: Workspace) -> int:
    config = config_from_args(args)
    data_line = describe_source(config, workspace)  # the layout, before anything is decoded
    if config.model.name == "transfer":  # refused now, not in the job: pretrained weights must be here
        from engine.zoo import resolve_weights

        resolve_weights(config.model.base, config.model.weights, config.data.image_size)
    run = jobs.submit(config, workspace)
    if not args.wait:
        if data_line and not args.json:
            print(f"data: {data_line}", file=sys.stderr)
        print(json.dumps({"run_id": run.id, "status": run.status}) if args.json else run.id)
        return 0
    print(f"run {run.id}: {config.model.name} on {config.data.source}", file=sys.stderr)
    if data_line:
        print(f"data: {data_line}", file=sys.stderr)
    run = jobs.wait(run.id, workspace, on_poll=_progress_printer(workspace))
    print(file=sys.stderr)
    result = run_summary(run)
    if args.json:
        print(json.dumps(result))
    else:
        _print_run(run, workspace)
    if run.status != store.COMPLETED:
        print(f"run {run.status}: {run.job.error if run.job else ''}", file=sys.stderr)
        return 1
    return 0


def cmd_runs(args, workspace: Workspace) -> int:
    jobs.refresh(workspace)
    runs = workspace.list_runs()
    if args.json:
        print(json.dumps([run_summary(r) for r in runs], indent=2))
        return 0
    if not runs:
        print("no runs yet: python -m engine train --data digits --model lenet5 --wait")
        return 0
    print(f"{'RUN':<21} {'STATUS':<10} {'DATASET':<14} {'MODEL':<12} {'EPOCHS':>7} {'VAL ACC':>8} {'TEST ACC':>8}")
    for r in runs:
        print(f"{r.id:<21} {r.status:<10} {r.dataset[:14]:<14} {r.model:<12} {r.epochs_done:>3}/{r.epochs_total:<3}"
              f" {_pct(r.best_val_accuracy):>8} {_pct(r.test_accuracy):>8}")
    return 0


def cmd_show(args, workspace: Workspace) -> int:
    jobs.refresh(workspace)
    run = workspace.get_run(workspace.resolve_run_id(args.run))
    if args.json:
        summary = run_summary(run)
        summary["config"] = run.config.to_dict()
        summary["epochs_history"] = [e.__dict__ for e in workspace.epochs(run.id)]
        summary["data"] = RunFolder(workspace, run.id).data_summary()
        summary["weights"] = RunFolder(workspace, run.id).weights_record()
        print(json.dumps(summary, indent=2))
    else:
        _print_run(run, workspace)
    return 0


def cmd_cancel(args, workspace: Workspace) -> int:
    run_id = workspace.resolve_run_id(args.run)
    job = jobs.cancel(run_id, workspace)
    if job is None:
        raise UsageError(f"run {run_id} is not queued or running (status: {workspace.get_run(run_id).status})")
    if args.wait:
        jobs.wait(run_id, workspace, poll_seconds=0.5)
    print(f"{run_id}: {workspace.get_run(run_id).status if args.wait else 'cancel requested'}")
    return 0


def cmd_resume(args, workspace: Workspace) -> int:
    run_id = workspace.resolve_run_id(args.run)
    jobs.resume(run_id, workspace)
    print(f"{run_id}: resumed from epoch {workspace.get_run(run_id).epochs_done}")
    if not args.wait:
        return 0
    run = jobs.wait(run_id, workspace, on_poll=_progress_printer(workspace))
    print(file=sys.stderr)
    _print_run(run, workspace)
    return 0 if run.status == store.COMPLETED else 1


def cmd_publish(args, workspace: Workspace) -> int:
    run_id = workspace.resolve_run_id(args.run)
    RunFolder(workspace, run_id).set_published(not args.off)
    print(f"{run_id}: {'not ' if args.off else ''}published" + ("" if args.off else f" (/demo?run={run_id})"))
    return 0


def cmd_delete(args, workspace: Workspace) -> int:
    run_id = workspace.resolve_run_id(args.run)
    jobs.delete(run_id, workspace)
    print(f"{run_id}: deleted")
    return 0


# -- the run config from flags ----------------------------------------------------


def config_from_args(args) -> RunConfig:
    """Builds the RunConfig from `--config` and the flags that override it.

    Args:
        args: the parsed `train` arguments.

    Returns:
        The config, validated by `RunConfig.from_dict`.

    Raises:
        UsageError: an unreadable `--config`, a malformed `--set` or `--augment`, or a `--data` that is
            neither a built-in dataset nor an existing folder or .zip.
        ConfigError: a setting out of range.
    """
    values: dict = {}
    if args.config:
        try:
            values = json.loads(args.config.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise UsageError(f"cannot read --config {args.config}: {error}") from None
        if not isinstance(values, dict):
            raise UsageError(f"--config {args.config} must hold a JSON object")
    def put(section, key, value):
        if value is not None:
            values.setdefault(section, {})[key] = value

    for flag, key in CONFIG_FLAGS.items():
        value = getattr(args, _dest(flag))
        if value is None:
            continue
        section, _, name = key.rpartition(".")
        if section:
            put(section, name, resolve_source(value) if key == "data.source" else value)
        else:
            values[name] = value
    if args.seed is not None:
        put("train", "seed", args.seed)
        put("data", "seed", args.seed)
    if args.augment is not None:
        values["augment"] = parse_augment(args.augment)
    for item in args.set:
        key, sep, raw = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot:
            raise UsageError(f"--set {item!r}: expected SECTION.KEY=VALUE, e.g. train.schedule=constant")
        put(section, name, _parse_value(raw))
    return RunConfig.from_dict(values)


def add_setting_flag(parser, flag: str, key: str) -> None:
    """Adds `flag` to `parser` for the config setting `key`, typed and described by its metadata."""
    spec = field_spec(key)
    allowed = "" if spec.choices or spec.kind is str else f"; {spec.allowed()}"
    parser.add_argument(flag, dest=_dest(flag), type=None if spec.kind is str else spec.kind, choices=spec.choices,
                        help=f"{spec.help} ({spec.key}{allowed})".replace("%", "%%"))


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def resolve_source(text: str) -> str:
    """A built-in dataset name as is, or an existing folder/zip as an absolute path."""
    from engine.data import BUILTIN_SOURCES, DatasetError, check_source_allowed
    from engine.data.versions import load_version, version_id
    from engine.store import default_root

    if text in BUILTIN_SOURCES:
        return text
    try:
        if version_id(text) is not None:  # a dataset version: it must exist in this workspace
            return load_version(default_root(), text).name
        check_source_allowed(text)
    except DatasetError as error:
        raise UsageError(f"--data {error}") from None
    path = Path(text).expanduser()
    if not path.exists():
        raise UsageError(f"--data {text}: not a built-in dataset ({', '.join(BUILTIN_SOURCES)}) "
                         "and no such folder or .zip")
    return str(path.resolve())


def parse_augment(text: str) -> dict:
    """`flip,rotation=15,shift=0.1` -> AugmentConfig fields; `none` -> all off."""
    fields = {f: getattr(AugmentConfig(), f) for f in AugmentConfig.__dataclass_fields__}
    if text.strip().lower() in ("", "none", "off"):
        return {}
    result = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, raw = part.partition("=")
        if name not in fields:
            raise UsageError(f"--augment {part!r}: unknown option; use {', '.join(fields)}")
        if name == "flip":
            result[name] = True if not sep else _parse_value(raw)
        elif not sep:
            raise UsageError(f"--augment {part!r}: give a value, e.g. {name}=0.1")
        else:
            result[name] = _parse_value(raw)
    return result


def _parse_value(raw: str):
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


# -- printing runs ----------------------------------------------------------------


def run_summary(run: Run) -> dict:
    """A run's facts as the JSON object `train --json`, `runs --json` and `show --json` print."""
    job = run.job
    return {"run_id": run.id, "name": run.name, "status": run.status, "dataset": run.dataset, "model": run.model,
            "test_accuracy": run.test_accuracy, "best_val_accuracy": run.best_val_accuracy,
            "epochs": run.epochs_done, "epochs_total": run.epochs_total, "train_seconds": run.train_seconds,
            "params": run.params, "device": run.device, "workers": run.config.train.workers,
            "created_at": run.created_at,
            "host": job.host if job else None, "error": job.error if job else None}


def _print_run(run: Run, workspace: Workspace) -> None:
    print(f"run       {run.id}  ({run.label})")
    print(f"status    {run.status}" + (f": {run.job.message}" if run.job and run.job.active else ""))
    print(f"data      {run.config.data.source}   model {run.model}   params {run.params or '-'}")
    if (used := RunFolder(workspace, run.id).data_summary()) is not None:
        splits = " / ".join(f"{part} {n:,}" for part, n in used["splits"].items())
        print(f"          {used['layout'].replace('_', ' ')}: {len(used['class_names'])} classes; {splits}")
    print(f"device    {run.device or '-'}")
    print(f"epochs    {run.epochs_done}/{run.epochs_total}   train {_secs(run.train_seconds)}")
    print(f"accuracy  val {_pct(run.best_val_accuracy)}   test {_pct(run.test_accuracy)}")
    if run.job and run.job.error:
        print(f"reason    {run.job.error}")
    print(f"folder    {RunFolder(workspace, run.id).path}")


def _progress_printer(workspace: Workspace):
    state = {"started": time.monotonic()}

    def show(run: Run) -> None:
        job = run.job
        if job is None:
            return
        width = 30
        filled = int(width * job.progress)
        elapsed = time.monotonic() - state["started"]
        line = (f"\r[{'#' * filled}{'.' * (width - filled)}] {job.progress:4.0%} {run.status:<9} "
                f"{job.message[:40]:<40} {elapsed:5.0f}s")
        print(line, end="", file=sys.stderr, flush=True)

    return show


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"
