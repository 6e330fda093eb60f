"""Showing the result of background work without blocking the script thread."""

from __future__ import annotations

from concurrent.futures import Future
from typing import Callable

import streamlit as st


def when_ready(future: Future, render: Callable[[object], None], *, waiting: Callable[[], None],
               failed: Callable[[BaseException], None], poll_seconds: float = 1.0) -> None:
    """Renders `future`'s result when done; until then `waiting()`, polled from a fragment.

    Once the work finishes the whole page reruns, so the poller stops ticking.
    """
    pending = not future.done()

    def body() -> None:
        if not future.done():
            waiting()
            return
        if pending:
            st.rerun()  # the next full run draws the result without a timer
        error = future.exception()
        if error is not None:
            failed(error)
        else:
            render(future.result())

    st.fragment(body, run_every=poll_seconds if pending else None)()
