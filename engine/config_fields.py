"""Config field metadata: `setting(...)` declares a setting with its label, range and choices; `FieldSpec` reads it.

`engine.config` re-exports everything here; import from there.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

WIDGETS = ("number", "slider", "select", "toggle", "text")


class ConfigError(ValueError):
    """A config value is invalid; `field` names it, e.g. `train.learning_rate`."""

    def __init__(self, field: str, value: Any, reason: str):
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(f"{field}={value!r}: {reason}")


def _check(ok: bool, field: str, value: Any, reason: str) -> None:
    if not ok:
        raise ConfigError(field, value, reason)


def _check_number(field: str, value: Any, low: float, high: float, *, integer: bool = False) -> None:
    kind = int if integer else (int, float)
    _check(isinstance(value, kind) and not isinstance(value, bool), field, value,
           "must be an integer" if integer else "must be a number")
    _check(math.isfinite(value), field, value, "must be finite")
    _check(low <= value <= high, field, value, f"must be between {low:g} and {high:g}")


# -- field metadata ---------------------------------------------------------------


def setting(default: Any, *, label: str, help: str = "", range: tuple[float, float] | None = None,
            low_exclusive: bool = False, choices: tuple[str, ...] | None = None,
            choice_labels: Mapping[str, str] | None = None, models: tuple[str, ...] | None = None,
            required: bool = False, max_length: int | None = None, reason: str = "", widget: str | None = None,
            **ui: Any) -> Any:
    """Declares one config setting: its default and the metadata everything else is generated from.

    Args:
        default: the default value; its type (bool, int, float or str) is the setting's type.
        label: the name people read (form widget, config table, error messages).
        help: one sentence for the form's tooltip and the CLI's `--help`.
        range: `(low, high)`, both allowed, for a number. Required for numbers.
        low_exclusive: `low` itself is not allowed (a learning rate of 0).
        choices: the allowed values of a text setting.
        choice_labels: how the form shows some of the choices (others show as themselves).
        models: the architectures (`model.name`) the setting applies to. Default: all.
        required: a free text setting must not be blank.
        max_length: the most characters a free text setting may have. Default: no limit.
        reason: the error for a free text setting that breaks `required` or `max_length`.
        widget: the form widget, one of `WIDGETS`. Default: `toggle` for a bool, `select` with
            choices, `text` for other text, else `number`.
        **ui: more keyword arguments for the form widget, e.g. `step`, `format`, `min_value`.

    Returns:
        A `dataclasses.field` carrying the metadata.
    """
    if widget is None:
        widget = ("toggle" if isinstance(default, bool) else "select" if choices else
                  "text" if isinstance(default, str) else "number")
    if widget not in WIDGETS or (widget in ("number", "slider")) != (range is not None):
        raise ValueError(f"{label!r}: widget={widget!r} needs one of {', '.join(WIDGETS)}, and a range for numbers")
    metadata = {"label": label, "help": help, "range": range, "low_exclusive": low_exclusive,
                "choices": choices, "choice_labels": dict(choice_labels or {}), "models": models,
                "required": required, "max_length": max_length, "reason": reason, "widget": widget, "ui": ui}
    return field(default=default, metadata=metadata)


@dataclass(frozen=True, eq=False)
class FieldSpec:
    """One setting's metadata as `setting(...)` declared it, with its `section` ("" at the top) and `name`."""

    section: str
    name: str
    default: Any
    label: str
    help: str
    range: tuple[float, float] | None
    low_exclusive: bool
    choices: tuple[str, ...] | None
    choice_labels: Mapping[str, str]
    models: tuple[str, ...] | None
    required: bool
    max_length: int | None
    reason: str
    widget: str
    ui: Mapping[str, Any]

    @property
    def key(self) -> str:
        """The setting's full name, as errors and `--set` spell it: `train.learning_rate`."""
        return f"{self.section}.{self.name}" if self.section else self.name

    @property
    def kind(self) -> type:
        """`bool`, `int`, `float` or `str`: the type of the default."""
        return type(self.default)

    def applies_to(self, model_name: str) -> bool:
        """Whether the setting matters for the architecture `model_name`."""
        return self.models is None or model_name in self.models

    def choice_label(self, value: Any) -> str:
        return self.choice_labels.get(value, str(value))

    def allowed(self) -> str:
        """The allowed values in words, e.g. `1 to 10000` or `one of adam, adamw, sgd`."""
        if self.choices:
            return f"one of {', '.join(self.choices)}"
        if self.range:
            low, high = (f"{v:,}" if isinstance(v, int) else f"{v:g}" for v in self.range)
            return f"more than {low}, up to {high}" if self.low_exclusive else f"{low} to {high}"
        return "true or false" if self.kind is bool else "text"

    def check(self, value: Any) -> None:
        """Raises `ConfigError` naming the setting and `value` when the metadata does not allow it."""
        if self.kind is bool:
            _check(isinstance(value, bool), self.key, value, "must be true or false")
        elif self.choices is not None:
            _check(value in self.choices, self.key, value, f"must be one of {', '.join(self.choices)}")
        elif self.range is not None:
            low, high = self.range
            _check_number(self.key, value, low, high, integer=self.kind is int)
            _check(value > low or not self.low_exclusive, self.key, value, f"must be greater than {low:g}")
        else:
            ok = (isinstance(value, str) and (value.strip() != "" or not self.required)
                  and (self.max_length is None or len(value) <= self.max_length))
            limit = f" of at most {self.max_length} characters" if self.max_length else ""
            _check(ok, self.key, value, self.reason or f"must be text{limit}")
