"""The Explain page's batch mode: explain a run's N most confident mistakes as a job, then browse the stored batch.

Showing a stored batch reads PNGs, `.npy` maps and one JSON file from the run folder: no TensorFlow.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image

from dashboard.components import state, widgets
from dashboard.components.gallery import upscale
from engine.explain import batch
from engine.explain.methods import METHODS, SIDE_BY_SIDE, Explanation, method_label
from engine.runfolder import RunFolder
from engine.store import Run

COUNT_KEY, METHODS_KEY, START_KEY = "explain.batch.count", "explain.batch.methods", "explain.batch.start"
PAGE_KEY = "explain.batch.page"
MAX_COUNT = 64  # the gallery gets long beyond this; the CLI takes up to batch.MAX_COUNT
PAGE_SIZE = 12
OPACITY = 0.5  # as the single-image view's default
THUMB_SIDE = 150
START_SECONDS = 10  # the job's start-up (TensorFlow, the model); each method's own costs are in METHODS


def _test_mistakes(run: Run) -> tuple[int, int] | str:
    """(mistakes, test images) of the run, or why there are none to explain."""
    try:
        predictions, ranked = batch.mistakes_to_explain(state.workspace(), run.id)
    except batch.ExplanationError as error:
        return str(error)
    return int(ranked.size), len(predictions)


def _estimate(count: int, methods: list[str]) -> str:
    seconds = START_SECONDS + sum(count * METHODS[m].seconds_per_image + METHODS[m].warm_up_seconds for m in methods)
    return f"{seconds:.0f} s" if seconds < 60 else widgets.duration(seconds)


def request_form(run: Run) -> None:
    """How many mistakes and which methods, and the button that queues the `explain` job."""
    workspace = state.workspace()
    found = _test_mistakes(run)
    if isinstance(found, str):
        if "makes no mistakes" in found:
            st.success("This run makes no mistakes on its test set: there is nothing to explain in batch.",
                       icon=":material/check_circle:")
        else:
            st.info(found[0].upper() + found[1:] + ".", icon=":material/info:")
        return
    mistakes, total = found
    st.caption(f"The model gets **{mistakes} of {total}** test images wrong. The batch explains the most "
               "confident mistakes first, each for the class the model wrongly predicted.")
    most = min(MAX_COUNT, mistakes)
    if int(st.session_state.get(COUNT_KEY) or 0) > most:
        st.session_state[COUNT_KEY] = most
    st.session_state.setdefault(COUNT_KEY, min(batch.DEFAULT_COUNT, most))
    st.session_state.setdefault(METHODS_KEY, list(batch.MistakesRequest().methods))
    c1, c2 = st.columns([1, 2], vertical_alignment="bottom")
    count = int(c1.number_input(f"Mistakes (1–{most})", min_value=1, max_value=most, step=1, key=COUNT_KEY))
    methods = c2.pills("Methods", list(SIDE_BY_SIDE), selection_mode="multi", format_func=method_label,
                       key=METHODS_KEY)
    methods = [m for m in SIDE_BY_SIDE if m in (methods or [])]
    latest = workspace.latest_job(run.id, batch.EXPLAIN_JOB)
    busy = latest is not None and latest.active
    start = st.button(f"Explain {count} mistake{'s' * (count != 1)}", key=START_KEY, type="primary",
                      icon=":material/play_arrow:", disabled=busy or not methods)
    st.caption("Pick at least one method." if not methods else
               f"About {_estimate(count, methods)}, as a background job: you can leave the page meanwhile.")
    if start:
        try:
            batch.request_mistakes(workspace, run.id, batch.MistakesRequest(count=count, methods=tuple(methods)))
        except batch.ExplanationError as error:
            st.error(str(error), icon=":material/error:")
        else:
            st.rerun()


def _stored(run: Run) -> batch.MistakeExplanations | None:
    try:
        mtime = state.folder(run).explanations_record.stat().st_mtime
    except OSError:
        return None
    return _load(str(state.workspace().root), run.id, mtime)


@st.cache_data(max_entries=16, show_spinner=False)
def _load(root: str, run_id: str, mtime: float) -> batch.MistakeExplanations | None:
    return batch.load_mistakes(state.workspace(), run_id)


def show_batch(run: Run, open_image: Callable[[str, str], None]) -> None:
    """The batch job's live progress, then the stored batch: a summary per method and a gallery of the mistakes.

    Args:
        run: the run whose batch is shown.
        open_image: called with `(run id, sample id)` by a mistake's button to open it in the single-image
            view (a page link cannot reopen the page it is on with other query parameters).
    """
    workspace = state.workspace()
    widgets.job_progress(workspace, run, batch.EXPLAIN_JOB, "batch explanation",
                         on_completed=lambda job: st.session_state.pop(PAGE_KEY, None))
    stored = _stored(run)
    if stored is None or not stored.rows:
        if not isinstance(_test_mistakes(run), str):
            st.info("No mistakes explained yet: pick how many and which methods, then start the batch. The results "
                    "are kept with the run.", icon=":material/image_search:")
        return
    latest = workspace.latest_job(run.id, batch.EXPLAIN_JOB)
    if latest is not None and latest.active and latest.id != stored.job_id:
        st.caption(":material/history: Below: the batch stored before; the running one replaces it when it ends.")
    _summary(run, stored)
    _gallery(run, stored, open_image)


def _summary(run: Run, stored: batch.MistakeExplanations) -> None:
    labels = ", ".join(method_label(m) for m in stored.methods)
    st.subheader(f"The {len(stored.rows)} most confident mistake{'s' * (len(stored.rows) != 1)}", anchor=False)
    warm_up = f" ({widgets.duration(stored.warm_up_seconds)} of it warming up)" if stored.warm_up_seconds >= 1 else ""
    st.caption(f"Explained with {labels} · {widgets.timestamp(stored.created_at)} · took "
               f"{widgets.duration(stored.seconds)}{warm_up} · {stored.mistakes} mistakes among {stored.test_images} "
               "test images")
    if not stored.complete:
        st.warning(f"This batch stopped after {len(stored.rows)} of the {min(stored.requested, stored.mistakes)} "
                   "images asked for (cancelled or failed); these are the ones it finished.", icon=":material/warning:")
    model = state.folder(run).model_file
    if stored.model_mtime is not None and model.exists() and abs(model.stat().st_mtime - stored.model_mtime) > 1:
        st.caption(":material/history: Explained with an earlier version of this run's model; run the batch again "
                   "to refresh it.")
    rows = [{"Method": s.label, "Images": s.images, "Mean seconds": s.mean_seconds,
             "Deletion AUC ↓": s.mean_deletion_auc, "Random deletion": s.mean_random_deletion_auc,
             "Insertion AUC ↑": s.mean_insertion_auc, "Random insertion": s.mean_random_insertion_auc,
             "Beats random": 100 * s.beats_random_share} for s in stored.summary.values()]
    auc = st.column_config.NumberColumn(format="%.3f")
    st.dataframe(pd.DataFrame(rows), key="explain.batch.summary", hide_index=True, width="stretch",
                 column_config={
                     "Mean seconds": st.column_config.NumberColumn(format="%.2f s", help="Time to compute one map"),
                     "Deletion AUC ↓": st.column_config.NumberColumn(
                         format="%.3f", help="Mean area under the deletion curve: lower is better"),
                     "Random deletion": auc, "Random insertion": auc,
                     "Insertion AUC ↑": st.column_config.NumberColumn(
                         format="%.3f", help="Mean area under the insertion curve: higher is better"),
                     "Beats random": st.column_config.ProgressColumn(
                         format="%.0f%%", min_value=0, max_value=100,
                         help="Share of images whose map beats a random pixel order (deletion and insertion together)"),
                 })


def _gallery(run: Run, stored: batch.MistakeExplanations, open_image: Callable[[str, str], None]) -> None:
    rows = stored.rows
    pages = max(1, -(-len(rows) // PAGE_SIZE))
    page = min(int(st.session_state.get(PAGE_KEY, 0)), pages - 1)
    shown = rows[page * PAGE_SIZE:(page + 1) * PAGE_SIZE]
    st.caption("Each map shows what supports the class the model wrongly predicted (untinted = none, blue = weak, "
               "red = strongest). Under the maps: each method's seconds, its deletion AUC (del, lower is better) and "
               "insertion AUC (ins, higher is better), with a random pixel order's in brackets.")
    per_row = 3 if len(stored.methods) == 1 else 2  # cards side by side: six to eight pictures a row
    folder = state.folder(run)
    for start in range(0, len(shown), per_row):
        for column, row in zip(st.columns(per_row), shown[start:start + per_row]):
            with column, st.container(border=True, key=f"explain.batch.card.{row.rank}"):
                _card(run, row, stored.methods, folder, open_image)
    if pages > 1:
        nav = st.columns([1, 1, 4], vertical_alignment="center")
        nav[0].button("Previous", key="explain.batch.prev", icon=":material/chevron_left:", width="stretch",
                      disabled=page == 0, on_click=st.session_state.__setitem__, args=(PAGE_KEY, page - 1))
        nav[1].button("Next", key="explain.batch.next", icon=":material/chevron_right:", width="stretch",
                      disabled=page >= pages - 1, on_click=st.session_state.__setitem__, args=(PAGE_KEY, page + 1))
        nav[2].caption(f"Mistakes {page * PAGE_SIZE + 1}–{page * PAGE_SIZE + len(shown)} of {len(rows)} · "
                       f"page {page + 1} of {pages}")


def _card(run: Run, row: batch.ExplainedMistake, methods: list[str], folder: RunFolder,
          open_image: Callable[[str, str], None]) -> None:
    st.markdown(f"**#{row.rank}** · true **{row.true_name}** → predicted **{row.predicted_name}** "
                f"({100 * row.confidence:.1f}%)")
    try:
        pixels = np.asarray(Image.open(folder.resolve(row.image)).convert("RGB"))
    except (OSError, ValueError):
        st.caption("The stored image is missing.")
        return
    columns = st.columns(1 + len(methods))
    columns[0].image(upscale(pixels, THUMB_SIDE), caption="Image", width="stretch")
    lines = []
    for column, method in zip(columns[1:], methods):
        result = row.methods.get(method)
        try:
            attribution = np.load(folder.resolve(result.map)) if result else None
        except (OSError, ValueError):
            attribution = None
        if attribution is None:
            column.caption(f"{method_label(method)}: {'its map is missing' if result else 'not run'}")
            continue
        column.image(upscale(_overlay(pixels, attribution), THUMB_SIDE), caption=result.label, width="stretch")
        mark = ":green[✓ beats random]" if result.beats_random else ":orange[✗ no better than random]"
        lines.append(f"**{result.label}** {result.seconds:.2f} s · del {result.deletion_auc:.2f} "
                     f"({result.random_deletion_auc:.2f}) · ins {result.insertion_auc:.2f} "
                     f"({result.random_insertion_auc:.2f}) · {mark}")
    if lines:
        st.caption("  \n".join(lines))
    st.button("Open in the single-image view", key=f"explain.batch.open.{row.rank}", icon=":material/zoom_in:",
              help=f"Image {row.id} on its own: all three methods, for any class",
              on_click=open_image, args=(run.id, row.id))


def _overlay(pixels: np.ndarray, attribution: np.ndarray) -> np.ndarray:
    """The map over the image as the single-image view draws it (tint scaled by the attribution)."""
    from engine.explain.gradcam import overlay  # NumPy only; the module imports TensorFlow inside gradcam()

    heat = Explanation("", np.asarray(attribution, np.float32), 0, "", 0.0).heatmap()
    return overlay(pixels, heat, alpha=OPACITY, weighted=True)
