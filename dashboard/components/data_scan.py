"""The Data page's scan of a folder/zip/manifest (shown before decoding) and its decode: a job with progress and cancel."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard.components import state, task_job
from engine.data import DatasetError, DataScan, ImageSet, ManifestColumns, load_images, scan_source
from engine.data.decode_job import DecodeRequest, cached_images, submit_decode
from engine.data.layouts import IMBALANCE_RATIO, LAYOUTS, SPLIT_TITLES
from engine.data.manifest import NO_COLUMN
from engine.store import CACHE_DIR, CANCELLED, COMPLETED, FAILED, Job
from engine.store.workspace import DECODE_JOB

DETECT = "(detect)"
# A set at most this big decodes on the page (small PNGs: well under a second); a bigger one in a job.
INLINE_MAX_FILES = 200
INLINE_MAX_BYTES = 4_000_000


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


def _small(found: DataScan) -> bool:
    """Whether the set decodes on the page in well under a second: starting a job process costs more."""
    return len(found.files) <= INLINE_MAX_FILES and found.total_bytes() <= INLINE_MAX_BYTES


def _decoded(images: ImageSet, image_size: int) -> ImageSet:
    st.caption(f":material/check_circle: {len(images):,} images decoded at {image_size}×{image_size} "
               "(kept in the cache: the next load is instant).")
    return images


def decode(found: DataScan, source: str, image_size: int, max_per_class: int,
           columns: ManifestColumns) -> ImageSet | None:
    """The decoded set: from the cache at once, on the page for a tiny set, else by a `decode` job (progress, Cancel).

    The job (`engine.data.decode_job`) is keyed by what it decodes, so a reload or a second session
    follows the same job instead of starting another; once it completes the set loads from the cache.

    Returns:
        The `ImageSet` once decoded; None while the job runs, after a cancel, or on an error (shown).
    """
    request = DecodeRequest.of(source, image_size, max_per_class, columns)
    done = st.session_state.setdefault("data.decoded", {})  # task id -> set: a rerun rescans nothing
    if request.task_id in done:
        return _decoded(done[request.task_id], image_size)
    workspace = state.workspace()
    job = workspace.latest_job(request.task_id, DECODE_JOB)
    if job is None or not job.active:
        try:
            images = (load_images(source, image_size, max_per_class=max_per_class, cache_dir=workspace.cache_dir,
                                  columns=columns) if _small(found) else cached_images(workspace, request))
        except DatasetError as error:
            st.error(f"**{source}** can't be decoded: {error}", icon=":material/error:")
            return None
        if images is not None:
            done[request.task_id] = images
            return _decoded(images, image_size)
        dismissed = st.session_state.setdefault("data.decode.dismissed", set())
        if job is not None and job.status in (FAILED, CANCELLED) and job.id not in dismissed:
            _ended(job, dismissed)
            return None
        submitted = st.session_state.setdefault("data.decode.submitted", {})
        if job is not None and job.status == COMPLETED and submitted.get(request.task_id) == job.id:
            st.error(f"The decode of **{source}** completed but its cache is gone (pruned, or the files changed "
                     "meanwhile).", icon=":material/error:")
            return None
        try:
            job = submit_decode(workspace, request)
        except (OSError, ValueError) as error:
            st.error(f"The decode can't be started: {error}", icon=":material/error:")
            return None
        submitted[request.task_id] = job.id
    task_job.follow(workspace, job, "Decoding into the cache", cancel_key="data.decode.cancel",
                    cancel_label="Cancel decoding")
    return None


def _ended(job: Job, dismissed: set) -> None:
    """A failed or cancelled decode job, with Decode again."""
    if job.status == CANCELLED:
        st.warning(f"Decoding was cancelled ({job.message or 'before it started'}); nothing was kept.",
                   icon=":material/cancel:")
    else:
        st.error(f"The decode failed: {job.error or 'no reason was recorded'}", icon=":material/error:")
    if st.button("Decode again", key="data.decode.again", icon=":material/refresh:"):
        dismissed.add(job.id)
        st.rerun()
