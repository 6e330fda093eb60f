"""Evaluate's Duplicates tab: exact and near duplicate pairs under a movable threshold, and what leakage costs."""

from __future__ import annotations

import numpy as np
import streamlit as st

from dashboard.components import inspect_loop, inspect_map, state
from dashboard.components.gallery import upscale
from engine import inspect
from engine.data import versions as dv
from engine.store import Run

SIGNAL_KEY, SCOPE_KEY, PAGE_KEY = "eval.dups.signal", "eval.dups.scope", "eval.dups.page"
SCOPES = {"Train ↔ test (leaks)": ("train", "test"), "All pairs": None}
# signal -> (label, slider range, step, what the similarity is)
SIGNALS = {"hash": ("Perceptual hash", (0.5, 1.0), 1 / 64, "1 − differing bits / 64 of the images' perceptual hashes"),
           "embedding": ("Embedding cosine", (0.8, 1.0), 0.001, "cosine similarity of the model's features")}
PAIRS_PER_PAGE = 8


@st.cache_data(max_entries=8, show_spinner=False)
def _pairs(root: str, run_id: str, mtime: float, signal: str, threshold: float,
           scope: str) -> list[inspect.DuplicatePair]:
    embeddings = inspect_map.load(state.workspace().get_run(run_id))
    neighbours = inspect.run_neighbours(state.folder(run_id), signal)
    return inspect.duplicate_pairs(embeddings, neighbours, threshold, splits=SCOPES[scope])


def headline(leak: inspect.Leakage) -> str:
    """`Test accuracy 94.1 % → 88.7 % without 212 near-copies of training images` (or that none leaked)."""
    if leak.test_with_train_duplicate == 0:
        return (f"Test accuracy {100 * leak.test_accuracy:.1f} %: no test image has a near-copy in the training "
                "split at this threshold.")
    if leak.test_with_train_duplicate >= leak.test_count:
        return (f"Test accuracy {100 * leak.test_accuracy:.1f} %, but every test image has a near-copy in the "
                "training split: the test score says little.")
    return (f"Test accuracy {100 * leak.test_accuracy:.1f} % → {100 * leak.test_accuracy_without_leaks:.1f} % "
            f"without {leak.test_with_train_duplicate:,} near-cop{'ies' if leak.test_with_train_duplicate != 1 else 'y'}"
            f" of training images ({leak.test_with_train_duplicate:,} of {leak.test_count:,} test images).")


def show(run: Run, images: np.ndarray | None, target: inspect_loop.FixTarget | None) -> None:
    """Draws the Duplicates tab of `run` (needs its embeddings: offers the inspect job otherwise)."""
    embeddings = inspect_map.load(run)
    if embeddings is None:
        inspect_map.offer_inspection(run, "duplicates")
        return
    first_page = {"on_change": st.session_state.__setitem__, "args": (PAGE_KEY, 0)}
    c1, c2, c3 = st.columns([2, 4, 3], vertical_alignment="bottom")
    signal = c1.selectbox("Compared by", list(SIGNALS), key=SIGNAL_KEY, format_func=lambda s: SIGNALS[s][0],
                          **first_page)
    label, (low, high), step, meaning = SIGNALS[signal]
    threshold = c2.slider("Near-duplicate threshold (similarity)", low, high, float(inspect.default_threshold(signal)),
                          step=step, format="%.3f", key=f"eval.dups.threshold.{signal}", help=meaning, **first_page)
    scope = c3.segmented_control("Pairs", list(SCOPES), default=list(SCOPES)[0], key=SCOPE_KEY,
                                 **first_page) or list(SCOPES)[0]
    mtime = state.folder(run).embeddings_file.stat().st_mtime
    root = str(state.workspace().root)
    try:
        leaks = _pairs(root, run.id, mtime, signal, threshold, list(SCOPES)[0])
    except (inspect.NoEmbeddings, KeyError, ValueError, OSError) as error:
        st.warning(f"This run's stored duplicates do not load ({error}): compute them again.", icon=":material/block:")
        return
    leak = inspect.leakage(embeddings, leaks)
    box = st.warning if leak.test_with_train_duplicate else st.success
    box(f"**{headline(leak)}**", icon=":material/content_copy:")
    pairs = leaks if SCOPES[scope] == SCOPES[list(SCOPES)[0]] else _pairs(root, run.id, mtime, signal, threshold,
                                                                           scope)
    exact = sum(p.kind == "exact" for p in pairs)
    st.caption(f"{len(pairs):,} pair{'s' * (len(pairs) != 1)} ({exact:,} exact, {len(pairs) - exact:,} near) at "
               f"{label.lower()} similarity ≥ {threshold:.3f}; most similar first.")
    if target is not None and leak.leaked_ids:
        st.button(f"Exclude the {len(leak.leaked_ids):,} test images with a training copy", key="eval.dups.exclude",
                  icon=":material/block:", on_click=inspect_loop.add,
                  args=(target, leak.leaked_ids, dv.EXCLUDE))
    _pairs_gallery(pairs, images, target)


def _pairs_gallery(pairs: list[inspect.DuplicatePair], images: np.ndarray | None,
                   target: inspect_loop.FixTarget | None) -> None:
    if not pairs:
        st.info("No pairs at this threshold: lower it to see more.", icon=":material/info:")
        return
    pages = -(-len(pairs) // PAIRS_PER_PAGE)
    page = min(int(st.session_state.get(PAGE_KEY, 0)), pages - 1)
    nav = st.columns([1, 1, 4], vertical_alignment="center")
    nav[0].button("Previous", key="eval.dups.prev", icon=":material/chevron_left:", width="stretch",
                  disabled=page == 0, on_click=st.session_state.__setitem__, args=(PAGE_KEY, page - 1))
    nav[1].button("Next", key="eval.dups.next", icon=":material/chevron_right:", width="stretch",
                  disabled=page >= pages - 1, on_click=st.session_state.__setitem__, args=(PAGE_KEY, page + 1))
    nav[2].caption(f"Pairs {page * PAIRS_PER_PAGE + 1}–{min(len(pairs), (page + 1) * PAIRS_PER_PAGE)} of "
                   f"{len(pairs):,} · page {page + 1} of {pages}")
    shown = pairs[page * PAIRS_PER_PAGE:(page + 1) * PAIRS_PER_PAGE]
    for first in range(0, len(shown), 2):
        for col, pair in zip(st.columns(2), shown[first:first + 2]):
            with col.container(border=True):
                left, right = st.columns(2)
                for side, sample_id, index, split in ((left, pair.id_a, pair.index_a, pair.split_a),
                                                      (right, pair.id_b, pair.index_b, pair.split_b)):
                    with side:
                        if images is not None:
                            st.image(upscale(np.asarray(images[int(index)]), 110), width="stretch")
                        st.caption(f"{split} · {sample_id}")
                        if target is not None:
                            st.button("Exclude", key=f"eval.dups.x.{pair.a}.{pair.b}.{index}", icon=":material/block:",
                                      width="stretch", on_click=inspect_loop.add,
                                      args=(target, [sample_id], dv.EXCLUDE))
                st.caption(f"**{pair.kind}** · similarity {pair.similarity:.3f}")

