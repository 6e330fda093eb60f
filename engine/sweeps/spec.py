"""A sweep's definition: a base config, a search space over its fields, objectives, a budget; validated.

The sweep file (the Sweeps page writes the same)::

    {"base": {"data": {"source": "digits"}, "model": {"name": "lenet5"}, "train": {"epochs": 4}},
     "space": {"train.learning_rate": {"low": 0.0003, "high": 0.01, "log": true},
               "model.width": {"low": 8, "high": 32, "step": 8},
               "model.name": {"choices": ["lenet5", "resnet"]}},
     "objectives": {"val_accuracy": "maximize", "int8_latency_ms": "minimize"},
     "trials": 6, "parallel": 1}

Every error is a `SweepError` whose message is one line naming the bad part. Imports no Optuna.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from engine.config import ConfigError, FieldSpec, RunConfig, field_spec

# objective -> (label with unit, the direction people usually want)
OBJECTIVES = {
    "val_accuracy": ("Validation accuracy", "maximize"),
    "test_accuracy": ("Test accuracy", "maximize"),
    "params": ("Parameters", "minimize"),
    "int8_size_kb": ("INT8 size (KiB)", "minimize"),
    "int8_latency_ms": ("INT8 latency (ms per image)", "minimize"),
}
EXPORT_OBJECTIVES = ("int8_size_kb", "int8_latency_ms")  # measured on the trial's exported INT8 file
DIRECTIONS = ("maximize", "minimize")
SAMPLERS = ("auto", "tpe", "nsga2", "random")  # auto: TPE for one objective, NSGA-II for several
PRUNERS = ("median", "halving", "none")
MAX_TRIALS = 1000
MAX_PARALLEL = 16
_KEYS = ("name", "base", "space", "objectives", "trials", "parallel", "sampler", "pruner", "seed")
_PARAM_KEYS = {"low", "high", "log", "step", "choices"}


class SweepError(ValueError):
    """The sweep definition is invalid; the message names the bad part in one line."""


@dataclass(frozen=True)
class Param:
    """One searched setting: a float range (linear or log), an integer range (with a step), or choices."""

    key: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] | None = None

    @property
    def kind(self) -> str:
        """`choice`, `int` or `float`."""
        if self.choices is not None:
            return "choice"
        return "int" if field_spec(self.key).kind is int else "float"

    def to_dict(self) -> dict[str, Any]:
        if self.choices is not None:
            return {"choices": list(self.choices)}
        out: dict[str, Any] = {"low": self.low, "high": self.high}
        if self.log:
            out["log"] = True
        if self.step is not None:
            out["step"] = self.step
        return out


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep. Build it with `SweepSpec.from_dict`; `to_dict` gives the sweep file back."""

    base: dict[str, Any]
    space: dict[str, Param]
    objectives: dict[str, str]
    trials: int
    parallel: int = 1
    sampler: str = "auto"
    pruner: str = "median"
    seed: int = 0
    name: str = ""

    @property
    def sampler_name(self) -> str:
        """The sampler in force: `tpe`, `nsga2` or `random`."""
        if self.sampler != "auto":
            return self.sampler
        return "tpe" if len(self.objectives) == 1 else "nsga2"

    @property
    def prunes(self) -> bool:
        """Whether poor trials are stopped early: one accuracy objective (validation curves predict it), a pruner."""
        return (self.pruner != "none" and len(self.objectives) == 1
                and next(iter(self.objectives)) in ("val_accuracy", "test_accuracy"))

    @property
    def exports(self) -> bool:
        """Whether each trial's INT8 file is exported and measured."""
        return any(name in EXPORT_OBJECTIVES for name in self.objectives)

    def config_for(self, params: dict[str, Any], *, name: str = "") -> RunConfig:
        """The trial's run config: the base with `params` (full setting names) applied.

        Raises:
            ConfigError: the combination is invalid (e.g. a transfer base on too small images).
        """
        values = RunConfig.from_dict(self.base).to_dict()
        for key, value in params.items():
            section, _, setting = key.rpartition(".")
            (values[section] if section else values)[setting] = value
        values["name"] = name or values.get("name", "")
        return RunConfig.from_dict(values)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "base": self.base, "space": {k: p.to_dict() for k, p in self.space.items()},
                "objectives": dict(self.objectives), "trials": self.trials, "parallel": self.parallel,
                "sampler": self.sampler, "pruner": self.pruner, "seed": self.seed}

    @classmethod
    def from_dict(cls, values: Any) -> SweepSpec:
        """Validates a sweep file's content.

        Raises:
            SweepError: one line naming the bad part (an unknown field, an empty range, an unknown objective,
                a budget of 0, ...).
        """
        if not isinstance(values, dict):
            raise SweepError(f"the sweep must be a JSON object, not {type(values).__name__}")
        unknown = [k for k in values if k not in _KEYS]
        if unknown:
            raise SweepError(f"{unknown[0]!r} is not a sweep setting (expected {', '.join(_KEYS)})")
        base = values.get("base", {})
        try:
            RunConfig.from_dict(base)
        except ConfigError as error:
            raise SweepError(f"base: {error}") from None
        space = _parse_space(values.get("space"))
        objectives = _parse_objectives(values.get("objectives"))
        trials = _integer(values.get("trials"), "trials", 1, MAX_TRIALS, "the trial budget")
        parallel = _integer(values.get("parallel", 1), "parallel", 1, MAX_PARALLEL, "trials at once")
        seed = _integer(values.get("seed", 0), "seed", 0, 2**31 - 1, "the sampler's seed")
        sampler, pruner = values.get("sampler", "auto"), values.get("pruner", "median")
        if sampler not in SAMPLERS:
            raise SweepError(f"sampler={sampler!r}: expected one of {', '.join(SAMPLERS)}")
        if pruner not in PRUNERS:
            raise SweepError(f"pruner={pruner!r}: expected one of {', '.join(PRUNERS)}")
        name = values.get("name", "")
        if not isinstance(name, str) or len(name) > 100:
            raise SweepError(f"name={str(name)[:40]!r}: expected text of at most 100 characters")
        spec = cls(base=base, space=space, objectives=objectives, trials=trials, parallel=parallel,
                   sampler=sampler, pruner=pruner, seed=seed, name=name.strip())
        _check_combinations(spec)
        return spec


def _integer(value: Any, name: str, low: int, high: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SweepError(f"{name}={value!r}: {what} must be a whole number from {low} to {high:,}")
    if not low <= value <= high:
        raise SweepError(f"{name}={value!r}: {what} must be from {low} to {high:,}")
    return value


def _parse_objectives(values: Any) -> dict[str, str]:
    if not isinstance(values, dict) or not values:
        raise SweepError(f"objectives: give at least one, e.g. {{\"val_accuracy\": \"maximize\"}} "
                         f"(known: {', '.join(OBJECTIVES)})")
    for name, direction in values.items():
        if name not in OBJECTIVES:
            raise SweepError(f"objectives: {name!r} is not an objective (expected one of {', '.join(OBJECTIVES)})")
        if direction not in DIRECTIONS:
            raise SweepError(f"objectives.{name}={direction!r}: expected maximize or minimize")
    return dict(values)


def _parse_space(values: Any) -> dict[str, Param]:
    if not isinstance(values, dict) or not values:
        raise SweepError("space: give at least one setting to search, e.g. {\"train.learning_rate\": "
                         "{\"low\": 0.0003, \"high\": 0.01, \"log\": true}}")
    return {key: _parse_param(key, spec) for key, spec in values.items()}


def _parse_param(key: Any, values: Any) -> Param:
    try:
        spec = field_spec(key) if isinstance(key, str) and key != "name" else None
    except KeyError:
        spec = None
    if spec is None:
        raise SweepError(f"space: {key!r} is not a config setting (e.g. train.learning_rate, model.width)")
    if not isinstance(values, dict) or not values or set(values) - _PARAM_KEYS:
        extra = sorted(set(values) - _PARAM_KEYS) if isinstance(values, dict) else []
        raise SweepError(f"space.{key}: expected {{\"low\", \"high\"[, \"log\" or \"step\"]}} or {{\"choices\": [...]}}"
                         + (f", not {extra[0]!r}" if extra else ""))
    if "choices" in values:
        return _parse_choices(key, spec, values)
    if spec.range is None:
        raise SweepError(f"space.{key}: {spec.label} is not a number; search it with \"choices\"")
    if "low" not in values or "high" not in values:
        raise SweepError(f"space.{key}: a range needs both \"low\" and \"high\"")
    low, high, log, step = values["low"], values["high"], values.get("log", False), values.get("step")
    for bound in (low, high):
        try:
            spec.check(bound)
        except ConfigError as error:
            raise SweepError(f"space.{key}: {bound!r} {error.reason} ({spec.allowed()})") from None
    if not low < high:
        raise SweepError(f"space.{key}: empty range (low {low:g} is not below high {high:g})")
    if not isinstance(log, bool):
        raise SweepError(f"space.{key}: \"log\" must be true or false")
    if log and (step is not None or low <= 0):
        raise SweepError(f"space.{key}: a log range needs low > 0 and no step")
    if step is not None:
        integer = spec.kind is int
        if (isinstance(step, bool) or not isinstance(step, int if integer else (int, float))
                or not math.isfinite(step) or step <= 0 or step > high - low):
            raise SweepError(f"space.{key}: step={step!r} must be a positive {'whole ' if integer else ''}number "
                             f"no larger than the range ({high - low:g})")
    return Param(key=key, low=low, high=high, log=log, step=step)


def _parse_choices(key: str, spec: FieldSpec, values: dict) -> Param:
    choices = values["choices"]
    if len(values) > 1:
        raise SweepError(f"space.{key}: give either \"choices\" or a range, not both")
    if not isinstance(choices, list) or not choices:
        raise SweepError(f"space.{key}: \"choices\" must be a non-empty list")
    for choice in choices:
        if isinstance(choice, (dict, list)):
            raise SweepError(f"space.{key}: {choice!r} is not a single value")
        try:
            spec.check(choice)
        except ConfigError as error:
            raise SweepError(f"space.{key}: {choice!r} {error.reason}") from None
    if len(set(map(repr, choices))) != len(choices):
        raise SweepError(f"space.{key}: \"choices\" lists a value twice")
    return Param(key=key, choices=tuple(choices))


def _check_combinations(spec: SweepSpec) -> None:
    """Each searched value must make a valid config on top of the base (catches cross-field rules early), and
    every data source must lie inside `$APERTURE_DATA_ROOTS` (as the Train form and `train` require)."""
    from engine.data import DatasetError, check_source_allowed

    sources = {spec.config_for({}).data.source, *(spec.space["data.source"].choices if "data.source" in spec.space
                                                  else ())}
    for source in sorted(sources):
        try:
            check_source_allowed(source)
        except DatasetError as error:
            raise SweepError(f"data.source: {error}") from None
    for key, param in spec.space.items():
        for value in param.choices or (param.low, param.high):
            try:
                spec.config_for({key: value})
            except ConfigError as error:
                raise SweepError(f"space.{key}={value!r} with the base config: {error}") from None
