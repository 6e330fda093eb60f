"""A paged grid of dataset thumbnails by row, with a caption and an optional one-click button under each."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import streamlit as st

from dashboard.components.gallery import upscale

PAGE_SIZE = 24
COLUMNS = 6


def show(key: str, images: np.ndarray | None, rows: Sequence[int], captions: Sequence[str], *,
         button: tuple[str, str, Callable[[int], None]] | None = None, empty: str = "No images here.",
         page_size: int = PAGE_SIZE) -> None:
    """Draws dataset rows as pages of thumbnails.

    Args:
        key: widget-key prefix (state: `{key}.page`).
        images: the dataset's images (indexed by `rows`), or None for captions only.
        rows: the dataset rows to show, in display order.
        captions: one line per row.
        button: `(label, icon, on_click(position))` for a button under each tile (e.g. Exclude); None: none.
        empty: what to say when there is nothing to show.
        page_size: tiles per page.
    """
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size == 0:
        st.info(empty, icon=":material/info:")
        return
    pages = max(1, -(-rows.size // page_size))
    page = min(int(st.session_state.get(f"{key}.page", 0)), pages - 1)
    start = page * page_size
    nav = st.columns([1, 1, 4], vertical_alignment="center")
    nav[0].button("Previous", key=f"{key}.prev", icon=":material/chevron_left:", width="stretch",
                  disabled=page == 0, on_click=st.session_state.__setitem__, args=(f"{key}.page", page - 1))
    nav[1].button("Next", key=f"{key}.next", icon=":material/chevron_right:", width="stretch",
                  disabled=page >= pages - 1, on_click=st.session_state.__setitem__, args=(f"{key}.page", page + 1))
    shown = range(start, min(start + page_size, rows.size))
    nav[2].caption(f"Images {start + 1}–{shown.stop} of {rows.size} · page {page + 1} of {pages}")
    for first in range(shown.start, shown.stop, COLUMNS):
        for col, position in zip(st.columns(COLUMNS), range(first, min(first + COLUMNS, shown.stop))):
            with col.container(border=True):
                if images is not None:
                    st.image(upscale(np.asarray(images[int(rows[position])]), 110), width="stretch")
                st.caption(captions[position])
                if button is not None:
                    label, icon, on_click = button
                    st.button(label, key=f"{key}.tile.{position}", icon=icon, width="stretch", on_click=on_click,
                              args=(position,))


def reset(key: str) -> None:
    """Back to the first page (call when what the grid shows changes)."""
    st.session_state[f"{key}.page"] = 0
