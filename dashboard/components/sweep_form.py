"""The new-sweep form: base settings, the search space and the objectives, all from the config's field metadata.

It returns the sweep file as a dict (the same JSON `python -m engine sweep --config` reads); the page
validates it with `SweepSpec.from_dict` and submits it.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from dashboard.components import widgets
from engine.config import FieldSpec, describe_fields, field_spec, section_titles
from engine.sweeps.spec import MAX_PARALLEL, MAX_TRIALS, OBJECTIVES

BASE_KEYS = ("data.source", "data.image_size", "data.max_per_class", "model.name", "train.epochs", "train.batch_size")
DEFAULT_SPACE = ("train.learning_rate", "model.width", "model.name")
DEFAULT_OBJECTIVES = ("val_accuracy", "int8_latency_ms")
# Defaults for a first sweep that ends in minutes on a laptop CPU.
BASE_DEFAULTS = {"data.max_per_class": 100, "train.epochs": 4}
KEY = "sweep.form"


def searchable() -> list[FieldSpec]:
    """Every setting a sweep can search: the numbers (ranges) and the settings with choices."""
    return [spec for section in section_titles() for spec in describe_fields(section)
            if spec.range is not None or spec.choices is not None or spec.kind is bool]


def setting_label(key: str) -> str:
    """`Training · Learning rate`: how the form and the figures name a setting."""
    spec = field_spec(key)
    return f"{section_titles().get(spec.section, '')} · {spec.label}".strip(" ·")


def _base() -> dict[str, Any]:
    st.markdown("**Base run** · the settings every trial shares (the rest keep their defaults)")
    base: dict[str, Any] = {}
    columns = st.columns(3)
    for i, key in enumerate(BASE_KEYS):
        spec = field_spec(key)
        widget_key = f"{KEY}.base.{key}"
        if widget_key not in st.session_state:
            st.session_state[widget_key] = BASE_DEFAULTS.get(key, spec.default)
        value = widgets.setting_widget(spec, columns[i % 3], key=widget_key)
        section, _, name = key.partition(".")
        base.setdefault(section, {})[name] = value.strip() if isinstance(value, str) else value
    return base


def _range(spec: FieldSpec, where) -> dict[str, Any] | None:
    low, high = (spec.kind(bound) for bound in spec.range)
    integer = spec.kind is int
    default_low = spec.kind(max(low, spec.default / 4 if not integer else spec.default // 2)) if spec.default else low
    default_high = spec.kind(min(high, spec.default * 4 if spec.default else high))
    if spec.key == "train.learning_rate":
        default_low, default_high = 0.0003, 0.01
    c1, c2, c3 = where.columns([2, 2, 1], vertical_alignment="bottom")
    step = 1 if integer else None
    fmt = None if integer else "%g"
    bounds = {"min_value": low, "max_value": high, "step": step, "format": fmt}
    a = c1.number_input("From", value=default_low, key=f"{KEY}.low.{spec.key}", **bounds)
    b = c2.number_input("To", value=default_high, key=f"{KEY}.high.{spec.key}", **bounds)
    out: dict[str, Any] = {"low": a, "high": b}
    if integer:
        every = c3.number_input("Step", min_value=1, value=int(spec.ui.get("step", 1)), key=f"{KEY}.step.{spec.key}")
        if every > 1:
            out["step"] = every
    elif c3.toggle("Log", value=spec.key == "train.learning_rate" or a > 0 and b / max(a, 1e-12) >= 100,
                   key=f"{KEY}.log.{spec.key}", help="Sample evenly in log scale (for rates spanning decades)."):
        out["log"] = True
    return out


def _choices(spec: FieldSpec, where) -> dict[str, Any]:
    options = list(spec.choices) if spec.choices is not None else [True, False]
    default = [c for c in options if c in ("lenet5", "resnet")] or options
    chosen = where.multiselect("Values", options, default=default, key=f"{KEY}.choices.{spec.key}",
                               format_func=spec.choice_label if spec.choices else str)
    return {"choices": chosen}


def _space() -> dict[str, dict]:
    st.markdown("**Search space** · the settings each trial varies")
    specs = {spec.key: spec for spec in searchable()}
    chosen = st.multiselect("Settings to search", list(specs), default=list(DEFAULT_SPACE), key=f"{KEY}.space",
                            format_func=setting_label, placeholder="Pick settings such as the learning rate")
    space = {}
    for key in chosen:
        spec = specs[key]
        box = st.container(border=True)
        hint = f" · applies to {', '.join(spec.models)}" if spec.models else ""
        box.caption(f"**{setting_label(key)}** · {spec.allowed()}{hint}")
        space[key] = _choices(spec, box) if spec.range is None else _range(spec, box)
    return space


def _objectives() -> dict[str, str]:
    st.markdown("**Objectives** · what a good trial is (several give a Pareto front)")
    chosen = st.multiselect("Objectives", list(OBJECTIVES), default=list(DEFAULT_OBJECTIVES), key=f"{KEY}.objectives",
                            format_func=lambda name: OBJECTIVES[name][0],
                            help="INT8 size and latency export each trial's INT8 TFLite file and measure it.")
    out = {}
    columns = st.columns(max(1, len(chosen)))
    for column, name in zip(columns, chosen):
        default = OBJECTIVES[name][1]
        out[name] = column.segmented_control(OBJECTIVES[name][0], ["maximize", "minimize"], default=default,
                                             key=f"{KEY}.direction.{name}") or default
    return out


def sweep_form() -> dict[str, Any]:
    """Draws the form; returns the sweep file it describes (not yet validated)."""
    base = _base()
    space = _space()
    objectives = _objectives()
    st.markdown("**Budget**")
    c1, c2, c3 = st.columns([1, 1, 2])
    trials = c1.number_input("Trials", min_value=1, max_value=MAX_TRIALS, value=6, key=f"{KEY}.trials",
                             help="How many runs the sweep trains in all.")
    parallel = c2.number_input("At once", min_value=1, max_value=MAX_PARALLEL, value=1, key=f"{KEY}.parallel",
                               help="Trials queued at the same time (APERTURE_MAX_JOBS limits how many train at once).")
    name = c3.text_input("Sweep name", key=f"{KEY}.name", max_chars=100, placeholder="e.g. small and fast digits")
    return {"name": name.strip(), "base": base, "space": space, "objectives": objectives,
            "trials": int(trials), "parallel": int(parallel)}
