"""Small shared widgets and formatters: page headers, status badges, config settings and tables."""

from __future__ import annotations

import time
from collections.abc import Callable

import pandas as pd
import streamlit as st

from engine import jobs
from engine.config import FieldSpec, RunConfig, describe_fields, field_spec, section_titles
from engine.store import CANCELLED, COMPLETED, FAILED, QUEUED, RUNNING, Job, Run, Workspace

PAGES = {"data": "views/data.py", "train": "views/train.py", "runs": "views/runs.py"}

STATUS_STYLE = {  # status -> (badge colour, material icon)
    QUEUED: ("gray", ":material/schedule:"),
    RUNNING: ("blue", ":material/autorenew:"),
    COMPLETED: ("green", ":material/check_circle:"),
    FAILED: ("red", ":material/error:"),
    CANCELLED: ("orange", ":material/cancel:"),
}


def page_header(icon: str, title: str, caption: str) -> None:
    """The one-line title with an icon and a one-sentence caption every page starts with."""
    st.title(f"{icon} {title}", anchor=False)
    st.caption(caption)


def runs_page(icon: str, title: str, subtitle: str, runs: list, empty: str) -> bool:
    """A page's header, then its empty state (`empty`, with a link to Train) if `runs` is empty; True if it is not."""
    page_header(icon, title, subtitle)
    if not runs:
        no_runs_yet(empty)
    return bool(runs)


def no_runs_yet(message: str) -> None:
    """The empty state of a page that needs a finished run: what is missing, and a link to Train."""
    st.info(message, icon=":material/info:")
    st.page_link(PAGES["train"], label="Go to Train", icon=":material/model_training:")


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
        rows.append(("Run", field_spec("name").label, config.name))
    for section, title in section_titles().items():
        part = getattr(config, section)
        for spec in describe_fields(section):
            if spec.applies_to(config.model.name):
                rows.append((title, spec.label, format_value(getattr(part, spec.name))))
    return pd.DataFrame(rows, columns=["Section", "Setting", "Value"])


def setting_key(spec: FieldSpec) -> str:
    """The Train form's widget key of a config setting: `cfg.train.epochs`, `cfg.name`."""
    return f"cfg.{spec.key}"


def setting_widget(spec: FieldSpec, where=st, *, key: str | None = None, label: str | None = None):
    """Draws the input for one config setting from its metadata: label, help, range or choices, widget hints.

    Args:
        spec: the setting, from `engine.config.describe_fields` or `field_spec`.
        where: `st` or a container (a column) to draw in. Default `st`.
        key: the widget key. Default: `setting_key(spec)`; its value lives in session state.
        label: the widget label. Default: the setting's label.

    Returns:
        The widget's value.
    """
    label = label or spec.label
    common = {"key": key or setting_key(spec), "help": spec.help or None, **spec.ui}
    if spec.widget == "toggle":
        return where.toggle(label, **common)
    if spec.widget == "select":
        return where.selectbox(label, spec.choices, format_func=spec.choice_label, **common)
    if spec.widget == "text":
        return where.text_input(label, max_chars=spec.max_length, **common)
    low, high = (spec.kind(bound) for bound in spec.range)  # Streamlit wants one numeric type throughout
    draw = where.slider if spec.widget == "slider" else where.number_input
    return draw(label, **{"min_value": low, "max_value": high, **common})


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
    linked = st.query_params.get("run")
    wanted = _resolve_run(linked, by_id)
    if linked and wanted is None:
        shown = "".join(c for c in linked if c.isalnum() or c == "-")[:40]  # never markup from a URL
        st.warning(f"The link names run `{shown}`, which is not one of these runs (it may be unfinished or "
                   "deleted): showing another.", icon=":material/link_off:")
    if wanted is None:  # no link: the run picked earlier in this session, else the newest
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


def _resolve_run(linked: str | None, by_id: dict[str, Run]) -> str | None:
    """The run a link names, by full id or a unique prefix/suffix of one, if it is among `by_id`."""
    if not linked:
        return None
    if linked in by_id:
        return linked
    matches = [i for i in by_id if i.startswith(linked) or i.endswith(linked)]
    return matches[0] if len(matches) == 1 else None


def job_bar(workspace: Workspace, job: Job, text: str, *, cancel_key: str, cancel_label: str = "Cancel") -> None:
    """An active job's progress bar with `text` on it, and its Cancel button (the store's cooperative flag)."""
    c1, c2 = st.columns([6, 1], vertical_alignment="bottom")
    c1.progress(min(max(job.progress, 0.0), 1.0), text=text)
    c2.button(cancel_label, key=cancel_key, icon=":material/stop_circle:", width="stretch",
              on_click=jobs.cancel_job, args=(job.id, workspace))


def job_progress(workspace: Workspace, run: Run, kind: str, noun: str, *,
                 on_completed: Callable[[Job], None] | None = None, show_completed: bool = False) -> None:
    """A run's latest job of one kind, live: progress bar and Cancel while it is active, then the outcome.

    Polls every second while the job is queued or running and redraws the whole page once when it
    ends, so the results it wrote appear without a click.

    Args:
        workspace: where the run lives.
        run: the run whose job is shown.
        kind: the job kind (`evaluate`, `export`, `explain`, ...).
        noun: what the job does, for messages ("evaluation" gives "The evaluation failed: ...").
        on_completed: called with the job when it completes while the page watches, before the redraw.
        show_completed: show the completed job's last message as a caption.
    """
    first = workspace.latest_job(run.id, kind)
    active = first is not None and first.active

    def body() -> None:
        jobs.refresh(workspace)
        job = workspace.latest_job(run.id, kind)
        if job is None:
            return
        if active and not job.active:
            if job.status == COMPLETED and on_completed is not None:
                on_completed(job)
            st.rerun()
        if job.active:
            text = "Queued: waits for the running job" if job.status == QUEUED else (
                f"{(job.message or 'starting').capitalize()} · {job.progress:.0%}")
            job_bar(workspace, job, text, cancel_key=f"{kind}.job.cancel.{run.id}")
        elif job.status == FAILED:
            st.error(f"**The {noun} failed:** {job.error or 'no reason was recorded'}", icon=":material/error:")
            if job.traceback:
                with st.expander("Traceback", icon=":material/bug_report:"):
                    st.code(job.traceback, language="text")
        elif job.status == COMPLETED:
            if show_completed and job.message:
                st.caption(f"Last {noun}: {job.message}")
        else:
            st.info(f"The last {noun} was {job.status}.", icon=":material/info:")

    st.fragment(body, run_every="1s" if active else None)()
