"""The Data page's scan of a folder/zip/manifest (shown before decoding) and its decode with progress and cancel."""

from __future__ import annotations

import uuid
from concurrent import futures

import pandas as pd
import streamlit as st

from dashboard.components import state
from dashboard.components.polling import when_ready
from engine.data import DataScan, DecodeCancelled, DecodeProgress, ImageSet, ManifestColumns, load_images, scan_source
from engine.data.layouts import IMBALANCE_RATIO, LAYOUTS, SPLIT_TITLES
from engine.data.manifest import NO_COLUMN
from engine.store import CACHE_DIR

DETECT = "(detect)"


@st.cache_data(ttl=20, max_entries=16, show_spinner=False)
def _scan(source: str, columns: ManifestColumns, root: str) -> DataScan:
    from pathlib import Path

    return scan_source(source, cache_dir=Path(root) / CACHE_DIR, columns=columns)


def scan(source: str, columns: ManifestColumns) -> DataScan:
    """The source's scan (layout, classes, splits, skipped files): no image is decoded. Raises DatasetError."""
    return _scan(source, columns, str(state.workspace().root))


def manifest_columns(source: str) -> ManifestColumns:
    """The manifest columns chosen on the page (blank = detect)."""
    s = st.session_state
    return ManifestColumns(*(("" if s.get(f"data.manifest.{k}", DETECT) == DETECT else s[f"data.manifest.{k}"])
                             for k in ("path", "label", "split")))


def show(found: DataScan) -> str:
    """Draws the layout, counts per class and split, sizes, formats and notes; returns the class weighting chosen."""
    given = found.given_splits
    counts = found.counts()
    st.markdown(f"**Layout:** {LAYOUTS[found.layout]}"
                + (f" · `{found.manifest.name}`" if found.manifest is not None else ""))
    cols = st.columns(4)
    cols[0].metric("Classes", len(found.class_names))
    cols[1].metric("Image files", f"{len(found.files):,}")
    cols[2].metric("On disk", f"{found.total_bytes() / 1e6:,.1f} MB")
    cols[3].metric("Formats", ", ".join(f"{ext} {n:,}" for ext, n in list(found.formats().items())[:2]) or "-")
    if given:
        st.markdown("**Splits given by the data:** " + " · ".join(
            f"{SPLIT_TITLES[p]} {sum(counts[p].values()):,}" for p in given))
        st.caption("They are used as they are: the validation and test shares above apply only to a split "
                   "that has to be carved from train.")
    else:
        st.markdown("**No splits in the data:** train, validation and test are drawn from all images "
                    "(stratified, by the shares below).")
    for note in found.notes:
        st.info(note, icon=":material/info:")
    if found.layout == "manifest":
        _column_pickers(found)
    table = pd.DataFrame(counts).rename(columns=lambda p: SPLIT_TITLES.get(p, p))
    table.index.name = "class"
    st.dataframe(table, key="data.scan.counts", width="stretch", height=min(38 + 35 * len(table), 300))
    ratio = found.imbalance()
    if ratio is not None and ratio > IMBALANCE_RATIO:
        part = counts.get("train") or counts["all"]
        big, small = max(part, key=part.get), min(part, key=part.get)
        st.warning(f"The classes are imbalanced: {big!r} has {ratio:.1f}× as many training images as {small!r} "
                   f"({part[big]:,} vs {part[small]:,}).", icon=":material/balance:")
        if st.toggle("Balance the classes in training (train.class_weight = balanced)", value=True,
                     key="data.class_weight"):
            return "balanced"
    return "none"


def _column_pickers(found: DataScan) -> None:
    options = [DETECT, *found.header]
    used = found.columns
    cols = st.columns(3)
    cols[0].selectbox("Path column", options, key="data.manifest.path", help=f"Detected: {used.path}")
    cols[1].selectbox("Label column", options, key="data.manifest.label", help=f"Detected: {used.label}")
    cols[2].selectbox("Split column", [DETECT, NO_COLUMN, *found.header], key="data.manifest.split",
                      help=f"Detected: {used.split}")


@st.cache_resource(show_spinner=False)
def _progress_by_task() -> dict[str, DecodeProgress]:
    return {}


def _decode_task(source: str, image_size: int, max_per_class: int, columns: ManifestColumns, root: str,
                 progress: DecodeProgress) -> ImageSet:
    from pathlib import Path

    return load_images(source, image_size, max_per_class=max_per_class, cache_dir=Path(root) / CACHE_DIR,
                       columns=columns, progress=progress)


def decode(source: str, image_size: int, max_per_class: int, columns: ManifestColumns) -> ImageSet | None:
    """Decodes on a background thread into the memmapped cache, showing done/total, images/s and ETA, with Cancel.

    Returns:
        The `ImageSet` once decoded; None while decoding, after a cancel, or on an error (shown).
    """
    attempt_key = f"data.decode.attempt.{source}.{image_size}.{max_per_class}.{columns}"
    attempt = st.session_state.setdefault(attempt_key, "0")
    key = f"decode:{source}:{image_size}:{max_per_class}:{columns}:{attempt}"
    progress = _progress_by_task().setdefault(key, DecodeProgress())
    future = state.start_task(key, _decode_task, source, image_size, max_per_class, columns,
                              str(state.workspace().root), progress)
    futures.wait([future], timeout=1.0)  # a small or cached set is ready at once: no progress bar flashes by
    result: list[ImageSet] = []

    def waiting() -> None:
        st.progress(progress.fraction, text=f"Decoding into the cache: {progress.line()}")
        if st.button("Cancel decoding", key="data.decode.cancel", icon=":material/cancel:"):
            progress.cancel()

    def failed(error: BaseException) -> None:
        if isinstance(error, DecodeCancelled):
            st.warning(f"Decoding was cancelled after {progress.done:,} of {progress.total:,} images.",
                       icon=":material/cancel:")
        else:
            st.error(f"**{source}** can't be decoded: {error}", icon=":material/error:")
        if st.button("Decode again", key="data.decode.again", icon=":material/refresh:"):
            st.session_state[attempt_key] = uuid.uuid4().hex[:8]
            st.rerun()

    when_ready(future, result.append, waiting=waiting, failed=failed, poll_seconds=0.5)
    if result:
        st.caption(f":material/check_circle: {len(result[0]):,} images decoded at {image_size}×{image_size} "
                   "(kept in the cache: the next load is instant).")
        return result[0]
    return None
