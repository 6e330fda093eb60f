"""Dataset health on the Data page: CleanVision's issues counted per issue and class, browsable, one click to exclude."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import streamlit as st

from dashboard.components import inspect_figures, inspect_grid, inspect_loop, state, widgets
from engine import inspect
from engine.data import versions as dv
from engine.store import Run

ISSUE_KEY, GRID_KEY = "data.health.issue", "data.health.grid"


def latest_run_on(source: str) -> Run | None:
    """The newest run trained (or training) on `source`: health is computed on a run's data."""
    def same(other: str) -> bool:
        return other == source or (os.path.sep in other and os.path.realpath(other) == os.path.realpath(source))

    return next((r for r in state.workspace().list_runs() if same(r.config.data.source)), None)


def show(source: str) -> None:
    """Draws the health of `source` (as its newest run loads it), or offers to check it."""
    st.subheader("Dataset health", anchor=False)
    run = latest_run_on(source)
    if run is None:
        st.info("Health is checked on a run's data: train a run on this dataset (or run `python -m engine inspect "
                "RUN`), then check it here.", icon=":material/health_and_safety:")
        return
    target = inspect_loop.for_run(run)
    if target is None:
        return
    health = inspect.read_health(state.workspace(), target.images.fingerprint)
    if health is None:
        _offer(run)
        return
    counts = health.counts()
    st.caption(f"{health.num_images:,} images of run {run.id}'s data checked by {health.engine or 'CleanVision'}"
               + (" (original files)" if health.checked_files else " (decoded images)") + ".")
    found = [issue for issue, n in counts.items() if n]
    if not found:
        st.success(f"No issue found in any image (checked: {', '.join(i.replace('_', ' ') for i in counts)}).",
                   icon=":material/task_alt:")
        inspect_loop.basket(target)
        return
    left, right = st.columns([2, 3])
    with left:
        st.dataframe(pd.DataFrame([{"Issue": issue.replace("_", " "), "Images": n} for issue, n in counts.items()]),
                     key="data.health.table", hide_index=True, width="stretch")
    with right:
        st.plotly_chart(inspect_figures.health_counts(health.per_class, target.images.class_names),
                        key="data.health.chart", width="stretch")
    issue = st.selectbox("Browse the images with", found, key=ISSUE_KEY, on_change=inspect_grid.reset,
                         args=(GRID_KEY,), format_func=lambda i: f"{i.replace('_', ' ')} ({counts[i]})")
    rows = np.asarray(health.issues.get(issue, []), dtype=np.int64)
    ids = [str(i) for i in health.ids.get(issue, [])]
    names, labels = target.images.class_names, np.asarray(target.images.labels)
    inspect_loop.actions(target, ids, "data.health.fix", what=f"with “{issue.replace('_', ' ')}”")

    def exclude(position: int) -> None:
        inspect_loop.add(target, [ids[position]], dv.EXCLUDE)

    inspect_grid.show(GRID_KEY, target.images.images, rows, [f"{names[labels[r]]} · {i}" for r, i in zip(rows, ids)],
                      button=("Exclude", ":material/block:", exclude))
    inspect_loop.basket(target)


def _offer(run: Run) -> None:
    workspace = state.workspace()
    job = workspace.latest_job(run.id, inspect.HEALTH_JOB)
    if job is None or not job.active:
        st.info(f"Not checked yet: look for blurry, dark, light, low-information, odd-sized, grayscale and duplicate "
                f"images in run {run.id}'s data (CleanVision, in the background).", icon=":material/health_and_safety:")
        if st.button("Check health", key="data.health.start", icon=":material/play_arrow:"):
            try:
                inspect.request_health(workspace, run.id)
            except inspect.InspectError as error:
                st.error(str(error), icon=":material/error:")
            else:
                st.rerun()
    widgets.job_progress(workspace, run, inspect.HEALTH_JOB, "health check")
