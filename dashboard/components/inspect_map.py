"""Evaluate's Map tab: the run's images on their 2-D embedding map; box/lasso a cluster to see and fix it."""

from __future__ import annotations

import numpy as np
import streamlit as st

from dashboard.components import inspect_figures, inspect_grid, inspect_loop, state, widgets
from dashboard.components.gallery import upscale
from engine import inspect
from engine.evaluation import NoPredictions
from engine.store import Run

CHART_KEY = "eval.map.chart"
COLOUR_KEY, CLASS_KEY, SPLITS_KEY = "eval.map.colour", "eval.map.class", "eval.map.splits"
GRID_KEY = "eval.map.grid"
SPLITS = ("train", "val", "test")


@st.cache_data(max_entries=4, show_spinner=False)
def _embeddings(root: str, run_id: str, mtime: float) -> inspect.Embeddings:
    return inspect.run_embeddings(state.folder(run_id))


def load(run: Run) -> inspect.Embeddings | None:
    """The run's stored embeddings (cached by file time), or None before its inspect job."""
    folder = state.folder(run)
    if not inspect.has_embeddings(folder):
        return None
    try:
        return _embeddings(str(state.workspace().root), run.id, folder.embeddings_file.stat().st_mtime)
    except (inspect.NoEmbeddings, OSError, ValueError, KeyError):
        return None


def offer_inspection(run: Run, what: str) -> None:
    """No embeddings yet: a button that queues the run's inspect job, and the job's live progress."""
    workspace = state.workspace()
    job = workspace.latest_job(run.id, inspect.INSPECT_JOB)
    if job is None or not job.active:
        st.info(f"Run {run.id} has no embeddings yet: compute them (features of every image, a 2-D map, "
                f"near duplicates) to see {what}.", icon=":material/scatter_plot:")
        if st.button("Compute embeddings and map", key=f"eval.inspect.start.{what[:3]}", type="primary",
                     icon=":material/play_arrow:"):
            try:
                inspect.request_inspection(workspace, run.id)
            except (inspect.InspectError, NoPredictions) as error:
                st.error(str(error), icon=":material/error:")
            else:
                st.rerun()
    widgets.job_progress(workspace, run, inspect.INSPECT_JOB, "inspection")


def _selected_rows() -> np.ndarray:
    event = st.session_state.get(CHART_KEY) or {}
    points = (event.get("selection") or {}).get("points") or []
    rows = []
    for point in points:
        value = point.get("customdata")
        if isinstance(value, (list, tuple)):
            value = value[0] if value else None
        if value is not None:
            rows.append(int(value))
    return np.array(sorted(set(rows)), dtype=np.int64)


def show(run: Run, images: np.ndarray | None, target: inspect_loop.FixTarget | None,
         cell: tuple[int | None, int | None] = (None, None)) -> None:
    """Draws the Map tab of `run`.

    Args:
        run: the run shown.
        images: the run's dataset images (thumbnails), or None.
        target: where fixes go (`inspect_loop.for_run`), or None.
        cell: a confusion-matrix cell `(true, predicted)` chosen on Overview, highlighted when set.
    """
    embeddings = load(run)
    if embeddings is None:
        offer_inspection(run, "the map")
        return
    names = embeddings.class_names
    c1, c2, c3 = st.columns([5, 2, 3], vertical_alignment="bottom")
    colour = c1.segmented_control("Colour by", inspect_figures.COLOUR_MODES, default=inspect_figures.COLOUR_MODES[0],
                                  key=COLOUR_KEY) or inspect_figures.COLOUR_MODES[0]
    options = [None, *range(len(names))]
    highlighted = c2.selectbox("Highlight class", options, key=CLASS_KEY,
                               format_func=lambda i: "No highlight" if i is None else names[i])
    splits = c3.multiselect("Splits", SPLITS, default=list(SPLITS), key=SPLITS_KEY)
    keep = np.isin(embeddings.split_names, splits or list(SPLITS))
    highlight = None
    if highlighted is not None:
        highlight = (embeddings.labels == highlighted) | (embeddings.predicted == highlighted)
    elif None not in cell:
        highlight = (embeddings.labels == cell[0]) & (embeddings.predicted == cell[1])
        st.caption(f"Highlighted: the confusion cell true **{names[cell[0]]}** → predicted **{names[cell[1]]}** "
                   "(chosen on Overview).")
    rows = np.flatnonzero(keep)
    hover = [f"{i} · {s} · true {names[t]} → {names[p]} · {100 * float(c):.0f}%" for i, s, t, p, c in
             zip(embeddings.ids[rows], embeddings.split_names[rows], embeddings.labels[rows],
                 embeddings.predicted[rows], embeddings.confidence[rows])]
    fig = inspect_figures.embedding_map(embeddings.xy[rows], embeddings.labels[rows], embeddings.predicted[rows],
                                        embeddings.confidence[rows], names, colour=colour, hover=hover,
                                        highlight=None if highlight is None else highlight[rows])
    for trace in fig.data:  # customdata back to embedding rows (the figure numbered the kept rows)
        trace.customdata = rows[np.asarray(trace.customdata, dtype=np.int64)]
    left, right = st.columns([4, 1])
    with left:
        st.plotly_chart(fig, key=CHART_KEY, on_select=lambda: inspect_grid.reset(GRID_KEY),
                        selection_mode=("points", "box", "lasso"), width="stretch")
        st.caption(f"{len(rows):,} images mapped by {embeddings.map_method.upper()} of the model's penultimate-layer "
                   "features. Lasso or box-select a cluster (toolbar, top right) to see its images below; click a "
                   "point to see it on the right.")
    selected = _selected_rows()
    with right:
        _point_detail(embeddings, images, selected)
    if selected.size == 0:
        st.info("Select points on the map (lasso or box) to see those images here and fix them.",
                icon=":material/gesture_select:")
        return
    st.markdown(f"**Selected: {selected.size} image{'s' * (selected.size != 1)}**")
    inspect_loop.choose_and_act(target, embeddings.ids[selected].tolist(), "eval.map.fix")
    captions = [f"{'✓' if embeddings.correct[r] else '✗'} {embeddings.split_names[r]} · {names[embeddings.labels[r]]}"
                f" → {names[embeddings.predicted[r]]}" for r in selected]
    inspect_grid.show(GRID_KEY, images, embeddings.indices[selected], captions)


def _point_detail(embeddings: inspect.Embeddings, images: np.ndarray | None, selected: np.ndarray) -> None:
    """The clicked (or first selected) point, larger: plotly's hover cannot show an image."""
    if selected.size == 0:
        st.caption("Click a point to see its image here.")
        return
    row = int(selected[0])
    names = embeddings.class_names
    with st.container(border=True, key="eval.map.detail"):
        if images is not None:
            st.image(upscale(np.asarray(images[int(embeddings.indices[row])]), 180), width="stretch")
        st.caption(f"{embeddings.ids[row]} · {embeddings.split_names[row]}\n\ntrue {names[embeddings.labels[row]]} · "
                   f"predicted {names[embeddings.predicted[row]]} ({100 * float(embeddings.confidence[row]):.0f}%)")
