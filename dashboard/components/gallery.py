"""A paged thumbnail gallery of predictions with a detail view (the image larger, its top-5 probabilities)."""

from __future__ import annotations

from typing import Callable

import numpy as np
import streamlit as st

from dashboard.components.figures import display_scale, top_classes
from engine.evaluation import Predictions

PAGE_SIZE = 24
COLUMNS = 6


def upscale(image: np.ndarray, target: int) -> np.ndarray:
    """Nearest-neighbour upscale so an 8-32 px image stays crisp at about `target` px."""
    scale = display_scale(int(image.shape[0]), target)
    return image.repeat(scale, axis=0).repeat(scale, axis=1) if scale > 1 else image


def default_caption(predictions: Predictions, position: int) -> str:
    names = predictions.class_names
    true, predicted = int(predictions.labels[position]), int(predictions.predicted[position])
    confidence = float(predictions.probabilities[position, predicted])
    mark = "✓" if true == predicted else "✗"
    return f"{mark} true {names[true]} → {names[predicted]} · {100 * confidence:.1f}%"


def show(key: str, predictions: Predictions, positions: np.ndarray, images: np.ndarray | None, *,
         caption: Callable[[Predictions, int], str] = default_caption, empty: str = "No images here.",
         explain_run: str | None = None) -> None:
    """Draws `positions` (into `predictions`) as pages of thumbnails with a Details button under each.

    Args:
        key: widget-key prefix (state: `{key}.page`, `{key}.detail`).
        predictions: the predictions the positions index.
        positions: which samples to show, in display order.
        images: the run's dataset images (indexed by `predictions.indices`), or None to show text only.
        caption: one line under each thumbnail.
        empty: what to say when there is nothing to show.
        explain_run: the run whose dataset the ids come from; the detail view then links to the
            Explain page for that image (None: no link).
    """
    positions = np.asarray(positions, dtype=np.int64)
    if positions.size == 0:
        st.info(empty, icon=":material/check_circle:")
        return
    pages = max(1, -(-positions.size // PAGE_SIZE))
    page = min(int(st.session_state.get(f"{key}.page", 0)), pages - 1)
    detail = st.session_state.get(f"{key}.detail")
    if detail is not None and int(detail) in set(positions.tolist()):
        _detail(key, predictions, int(detail), images, caption, explain_run)

    start = page * PAGE_SIZE
    shown = positions[start:start + PAGE_SIZE]
    nav = st.columns([1, 1, 4], vertical_alignment="center")
    nav[0].button("Previous", key=f"{key}.prev", icon=":material/chevron_left:", width="stretch",
                  disabled=page == 0, on_click=_set_page, args=(key, page - 1))
    nav[1].button("Next", key=f"{key}.next", icon=":material/chevron_right:", width="stretch",
                  disabled=page >= pages - 1, on_click=_set_page, args=(key, page + 1))
    nav[2].caption(f"Images {start + 1}–{start + shown.size} of {positions.size} · page {page + 1} of {pages}")
    for row in range(0, shown.size, COLUMNS):
        cols = st.columns(COLUMNS)
        for col, position in zip(cols, shown[row:row + COLUMNS]):
            with col.container(border=True):
                if images is not None:
                    st.image(upscale(np.asarray(images[int(predictions.indices[position])]), 120), width="stretch")
                st.text(caption(predictions, int(position)))
                st.button("Details", key=f"{key}.open.{int(position)}", icon=":material/zoom_in:",
                          width="stretch", on_click=_open, args=(key, int(position)))


def _set_page(key: str, page: int) -> None:
    st.session_state[f"{key}.page"] = max(0, page)
    st.session_state.pop(f"{key}.detail", None)


def _open(key: str, position: int) -> None:
    st.session_state[f"{key}.detail"] = position


def reset(key: str) -> None:
    """Back to the first page, detail closed (call when the filter changes)."""
    st.session_state[f"{key}.page"] = 0
    st.session_state.pop(f"{key}.detail", None)


def _detail(key: str, predictions: Predictions, position: int, images: np.ndarray | None,
            caption: Callable[[Predictions, int], str], explain_run: str | None = None) -> None:
    names = predictions.class_names
    with st.container(border=True, key=f"{key}.detailbox"):
        left, right = st.columns([1, 2])
        with left:
            if images is not None:
                st.image(upscale(np.asarray(images[int(predictions.indices[position])]), 280), width="stretch")
            st.text(caption(predictions, position))
            st.text(f"Image id: {predictions.ids[position]}")
            if explain_run:
                st.page_link("views/explain.py", label="Explain this prediction", icon=":material/visibility:",
                             query_params={"run": explain_run, "image": str(predictions.ids[position])})
            st.button("Close", key=f"{key}.close", icon=":material/close:", on_click=st.session_state.pop,
                      args=(f"{key}.detail", None))
        with right:
            st.plotly_chart(top_classes(names, predictions.probabilities[position],
                                        title=f"Top-{min(5, len(names))} probabilities (green: the given label)",
                                        true=int(predictions.labels[position])),
                            key=f"{key}.detail.chart", width="stretch")
