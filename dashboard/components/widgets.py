"""Small shared widgets and formatters: page headers, status badges, config tables."""

from __future__ import annotations

import dataclasses
import time

import pandas as pd
import streamlit as st

from engine.config import RunConfig
from engine.store import CANCELLED, COMPLETED, FAILED, QUEUED, RUNNING, Run

PAGES = {"data": "views/data.py", "train": "views/train.py", "runs": "views/runs.py"}

STATUS_STYLE = {  # status -> (badge colour, material icon)
    QUEUED: ("gray", ":material/schedule:"),
    RUNNING: ("blue", ":material/autorenew:"),
    COMPLETED: ("green", ":material/check_circle:"),
    FAILED: ("red", ":material/error:"),
    CANCELLED: ("orange", ":material/cancel:"),
}

SECTION_TITLES = {"data": "Data", "augment": "Augmentation", "model": "Model", "train": "Training"}
FIELD_LABELS = {
    "source": "Source", "image_size": "Image size (px)", "val_fraction": "Validation share",
    "test_fraction": "Test share", "max_per_class": "Max images per class", "seed": "Seed",
    "rotation": "Rotation (°)", "shift": "Shift (share of side)", "flip": "Horizontal flip", "zoom": "Zoom",
    "contrast": "Contrast", "brightness": "Brightness", "name": "Architecture", "activation": "Activation",
    "pooling": "Pooling", "width": "Width (filters)", "depth": "Depth (blocks per stage)", "base": "Base network",
    "fine_tune_layers": "Fine-tuned base layers", "dropout": "Dropout", "epochs": "Epochs",
    "batch_size": "Batch size", "optimizer": "Optimizer", "learning_rate": "Learning rate",
    "schedule": "Schedule", "weight_decay": "Weight decay", "label_smoothing": "Label smoothing",
    "early_stopping": "Early-stopping patience (epochs)", "mixed_precision": "Mixed precision",
    "deterministic": "Bit-exact reruns",
}
# Model fields that only matter for some architectures.
MODEL_FIELDS = {"lenet5": ("activation", "pooling", "dropout"), "resnet": ("width", "depth", "dropout"),
                "resnet_cbam": ("width", "depth", "dropout"), "transfer": ("base", "fine_tune_layers", "dropout")}


def page_header(icon: str, title: str, caption: str) -> None:
    """The one-line title with an icon and a one-sentence caption every page starts with."""
    st.title(f"{icon} {title}", anchor=False)
    st.caption(caption)


def status_badge(status: str) -> None:
    color, icon = STATUS_STYLE.get(status, ("gray", None))
    st.badge(status.capitalize(), icon=icon, color=color)


def pct(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{100 * value:.{digits}f}%"


def duration(seconds: float | None) -> str:
    """`1h 02m`, `3m 05s` or `12.3 s`; `—` when unknown."""
    if seconds is None:
        return "—"
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def timestamp(epoch_seconds: float | None) -> str:
    if epoch_seconds is None:
        return "—"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch_seconds))


def run_duration(run: Run) -> float | None:
    """Wall time of the run's job so far (or in total once finished)."""
    job = run.job
    if job is None or job.started_at is None:
        return run.train_seconds
    end = job.finished_at or time.time()
    return end - job.started_at


def format_value(value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def config_table(config: RunConfig) -> pd.DataFrame:
    """The config as rows of section / setting / value, skipping model fields the architecture ignores."""
    rows = []
    if config.name:
        rows.append(("Run", "Name", config.name))
    for section, title in SECTION_TITLES.items():
        part = getattr(config, section)
        for field in dataclasses.fields(part):
            if section == "model" and field.name not in ("name", *MODEL_FIELDS.get(part.name, ())):
                continue
            rows.append((title, FIELD_LABELS.get(field.name, field.name), format_value(getattr(part, field.name))))
    return pd.DataFrame(rows, columns=["Section", "Setting", "Value"])


def run_option_label(run: Run) -> str:
    """How a run is named in pickers: label, status and a short id."""
    return f"{run.label} · {run.status} · {run.id}"


def run_picker(runs: list[Run], key: str, *, on_change=None, label: str = "Run") -> Run:
    """A run selectbox tied to `?run=` in the URL, so reloads and shared links keep the choice.

    Args:
        runs: the runs to choose from, newest first. Default: the run in the URL, else the one
            picked earlier in this session, else the newest.
        key: the widget key.
        on_change: called after the URL is updated when the user picks another run.
        label: the widget label.

    Returns:
        The chosen run.
    """
    by_id = {r.id: r for r in runs}
    wanted = st.query_params.get("run")
    if wanted not in by_id:  # no link: the run picked earlier in this session, else the newest
        wanted = st.session_state.get(key) if st.session_state.get(key) in by_id else runs[0].id
    st.session_state[key] = wanted

    def sync() -> None:
        st.query_params["run"] = st.session_state[key]
        if on_change:
            on_change()

    st.selectbox(label, list(by_id), key=key, on_change=sync, format_func=lambda i: run_option_label(by_id[i]))
    if st.query_params.get("run") != wanted:
        st.query_params["run"] = wanted
    return by_id[wanted]
