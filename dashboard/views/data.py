"""Data: pick a dataset, look at it, preview augmentation, and carry it to the Train page."""

from __future__ import annotations

import hashlib
import re
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from dashboard.components import data_scan, figures, inspect_health, state, widgets
from dashboard.components.polling import when_ready
from engine.config import AugmentConfig, DataConfig, describe_fields
from engine.data import (BUILTIN_SOURCES, DatasetError, ImageSet, ManifestColumns, check_upload_size, download_source,
                         extract_zip, split_dataset)
from engine.store import UPLOADS_DIR

BUILTIN, UPLOAD, FOLDER = "Built-in dataset", "Upload a zip", "Folder on the server"
SAMPLES_PER_CLASS = 8
DEFAULTS = DataConfig()


@st.cache_data(max_entries=16, show_spinner=False)
def _split_sizes(_images: ImageSet, fingerprint: str, val: float, test: float, seed: int) -> dict[str, dict[str, int]]:
    split = split_dataset(_images, val, test, seed)
    labels, class_names = np.asarray(_images.labels), _images.class_names
    return {name: {c: int(n) for c, n in zip(class_names, np.bincount(labels[idx], minlength=len(class_names)))}
            for name, idx in (("train", split.train), ("validation", split.val), ("test", split.test))}


@st.cache_data(max_entries=16, show_spinner=False)
def _class_mosaics(_images: ImageSet, fingerprint: str, per_class: int) -> list[tuple[str, int, np.ndarray]]:
    labels = np.asarray(_images.labels)
    rng = np.random.default_rng(0)
    scale = figures.display_scale(_images.image_size, 64)
    out = []
    for index, name in enumerate(_images.class_names):
        members = np.flatnonzero(labels == index)
        if len(members) == 0:
            continue
        picked = np.sort(rng.choice(members, size=min(per_class, len(members)), replace=False))
        out.append((name, len(members), figures.mosaic(np.asarray(_images.images[picked]), columns=per_class,
                                                       scale=scale)))
    return out


def _save_upload(upload) -> Path:
    """Saves an uploaded zip under workspace/uploads and extracts it there; returns the class-folder root."""
    check_upload_size(upload.size)
    data = upload.getvalue()
    digest = hashlib.sha256(data).hexdigest()[:12]
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(upload.name).stem)[:60] or "upload"
    folder = state.workspace().root / UPLOADS_DIR / f"{stem}-{digest}"
    folder.mkdir(parents=True, exist_ok=True)
    zip_path = folder / "upload.zip"
    if not zip_path.exists():
        zip_path.write_bytes(data)
    return extract_zip(zip_path, folder)


def _choose_source() -> str | None:
    """The source widgets; returns a source string to load, or None (with the reason shown)."""
    kind = st.segmented_control("Where are the images?", [BUILTIN, UPLOAD, FOLDER], key="data.kind",
                                default=BUILTIN)
    if kind == UPLOAD:
        upload = st.file_uploader("A .zip of class folders, of train/val/test folders of them, or with a CSV "
                                  "manifest", type=["zip"],
                                  key="data.upload")
        if upload is None:
            st.info("Upload a zip such as `cats/1.jpg, cats/2.jpg, dogs/1.jpg, …` (one folder per class).",
                    icon=":material/upload_file:")
            return None
        cache = st.session_state.setdefault("data.extracted", {})
        if upload.file_id not in cache:
            try:
                with st.spinner(f"Extracting {upload.name}…"):
                    cache[upload.file_id] = str(_save_upload(upload))
            except DatasetError as error:
                st.error(f"**{upload.name}** can't be used: {error}", icon=":material/error:")
                return None
        return cache[upload.file_id]
    if kind == FOLDER:
        path = st.text_input("Path on the server: a folder (class folders, train/val/test folders of them, or a "
                             "CSV/TSV manifest), a .zip or a .csv/.tsv", 
                             key="data.folder", placeholder="/data/flowers")
        if not path.strip():
            st.info("Type the path of a folder on the machine running Aperture.", icon=":material/folder:")
            return None
        return str(Path(path.strip()).expanduser())
    infos = {info.name: info for info in state.sources()}
    name = st.selectbox("Dataset", list(infos), key="data.builtin",
                        format_func=lambda n: f"{n} — {infos[n].description}" + ("" if infos[n].available
                                                                                 else " (not available)"))
    info = infos[name]
    if not info.available:
        st.warning(f"**{name}** is not on this machine yet: it {info.detail}.", icon=":material/cloud_off:")
        _download(name)
        return None
    st.caption(f":material/check_circle: {info.detail}")
    return name


def _download(name: str) -> None:
    """A Download button for a Keras dataset; the download runs on a background thread and survives reruns."""
    attempt_key = f"data.download.{name}"
    if st.button(f"Download {name}", key=f"data.download.start.{name}", icon=":material/download:"):
        st.session_state[attempt_key] = uuid.uuid4().hex  # a new download per click, never an old result
    attempt = st.session_state.get(attempt_key)
    if not attempt:
        return

    def done(_) -> None:
        state.sources.clear()
        if any(info.name == name and info.available for info in state.sources()):
            st.rerun()
        st.error(f"The download of {name} finished but the files are still missing: {_source_detail(name)}.",
                 icon=":material/error:")

    when_ready(state.start_task(f"download:{name}:{attempt}", download_source, name), done,
               waiting=lambda: st.info(f"Downloading {name} into Keras's dataset cache…",
                                       icon=":material/hourglass_top:"),
               failed=lambda error: st.error(str(error), icon=":material/error:"))


def _source_detail(name: str) -> str:
    return next((info.detail for info in state.sources() if info.name == name), "")


def _augment_controls() -> AugmentConfig:
    defaults = AugmentConfig()
    for field, value in defaults.__dict__.items():
        st.session_state.setdefault(f"data.aug.{field}", value)
    columns = st.columns(3)
    specs = sorted(describe_fields("augment"), key=lambda spec: spec.widget == "toggle")  # sliders, then flip
    return AugmentConfig(**{spec.name: widgets.setting_widget(spec, columns[i % 3], key=f"data.aug.{spec.name}")
                            for i, spec in enumerate(specs)})


def _augment_preview(images: ImageSet, augment: AugmentConfig) -> None:
    c1, c2 = st.columns([1, 3])
    cls = c1.selectbox("Image of class", images.class_names, key="data.aug.class")
    members = np.flatnonzero(np.asarray(images.labels) == images.class_names.index(cls))
    pick = int(c1.number_input("Image number", 1, len(members), 1, key="data.aug.index")) - 1
    image = np.asarray(images.images[members[min(pick, len(members) - 1)]])
    scale = figures.display_scale(images.image_size, 96)
    c1.image(figures.mosaic(image[None], columns=1, scale=scale), caption="original")
    if not augment.enabled:
        c2.info("Turn on an augmentation above to see how training will vary this image.",
                icon=":material/tune:")
        return
    future = state.augment_task(f"{images.fingerprint}:{members[pick]}", image, augment)
    with c2:
        when_ready(
            future,
            lambda batch: st.image(figures.mosaic(batch, columns=6, scale=scale),
                                   caption="12 random draws of the augmentation"),
            waiting=lambda: st.info("Rendering 12 augmented copies… (a few seconds the first time)",
                                    icon=":material/hourglass_top:"),
            failed=lambda error: st.error(f"Augmentation preview failed: {error}", icon=":material/error:"))


def main() -> None:
    widgets.page_header(":material/photo_library:", "Data",
                        "Choose the images to learn from, check their classes and splits, and preview augmentation.")
    with st.container(border=True):
        source = _choose_source()
        c1, c2, c3, c4 = st.columns(4)
        image_size = int(c1.number_input("Image size (px)", 8, 512, DEFAULTS.image_size, step=8,
                                         key="data.image_size"))
        max_per_class = int(c2.number_input("Max images per class (0 = all)", 0, 10_000_000, 0, step=100,
                                            key="data.max_per_class"))
        val = float(c3.slider("Validation share", 0.05, 0.5, DEFAULTS.val_fraction, step=0.05,
                              key="data.val_fraction"))
        test = float(c4.slider("Test share", 0.05, 0.5, DEFAULTS.test_fraction, step=0.05, key="data.test_fraction"))
    if source is None:
        return
    columns, class_weight = ManifestColumns(), "none"
    if source in BUILTIN_SOURCES:
        try:
            with st.spinner(f"Loading {source} at {image_size}×{image_size}…"):
                images = state.load_dataset(source, image_size, max_per_class)
        except DatasetError as error:
            st.error(f"**{source}** can't be used: {error}", icon=":material/error:")
            return
    else:
        columns = data_scan.manifest_columns(source)
        try:
            found = data_scan.scan(source, columns)
        except DatasetError as error:
            st.error(f"**{Path(source).name or source}** can't be used: {error}", icon=":material/error:")
            return
        with st.container(border=True, key="data.scan"):
            st.subheader("What is in it", anchor=False)
            class_weight = data_scan.show(found)
        images = data_scan.decode(found, source, image_size, max_per_class, columns)
        if images is None:
            return
    if val + test > 0.8:
        st.error("Validation + test must leave at least 20% of the images for training.", icon=":material/error:")
        return
    try:
        sizes = _split_sizes(images, images.fingerprint, val, test, 0)
    except DatasetError as error:
        st.error(f"This dataset can't be split that way: {error}", icon=":material/error:")
        return

    cols = st.columns(6)
    cols[0].metric("Images", f"{len(images):,}")
    cols[1].metric("Classes", len(images.class_names))
    cols[2].metric("Train", f"{sum(sizes['train'].values()):,}")
    cols[3].metric("Validation", f"{sum(sizes['validation'].values()):,}")
    cols[4].metric("Test", f"{sum(sizes['test'].values()):,}")
    cols[5].metric("Skipped files", len(images.skipped))

    if st.button("Use this data", key="data.use", type="primary", icon=":material/arrow_forward:"):
        st.session_state[state.CHOSEN_DATA] = {
            "data": {"source": source, "image_size": image_size, "val_fraction": val, "test_fraction": test,
                     "max_per_class": max_per_class, "path_column": columns.path, "label_column": columns.label,
                     "split_column": columns.split},
            "train": {"class_weight": class_weight},
            "augment": dict(_current_augment().__dict__)}
        st.switch_page(widgets.PAGES["train"])

    left, right = st.columns([3, 2])
    with left:
        st.plotly_chart(figures.class_counts_bar(sizes), key="data.counts_chart", width="stretch")
    with right:
        st.subheader("Skipped files", anchor=False)
        if images.skipped:
            st.dataframe(pd.DataFrame([(s.path, s.reason) for s in images.skipped], columns=["File", "Reason"]),
                         key="data.skipped", hide_index=True, width="stretch", height=260)
        else:
            st.success("Every file was read; none were skipped.", icon=":material/task_alt:")

    st.subheader("Samples per class", anchor=False)
    mosaics = _class_mosaics(images, images.fingerprint, SAMPLES_PER_CLASS)
    grid = st.columns(2)
    for i, (name, count, tile) in enumerate(mosaics):
        with grid[i % 2]:
            st.image(tile, caption=f"{name} · {count:,} images")

    with st.container(border=True, key="data.health"):
        inspect_health.show(source)

    st.subheader("Augmentation preview", anchor=False)
    st.caption("Training images are randomly varied each epoch; these settings go to the Train page with the data.")
    with st.container(border=True):
        augment = _augment_controls()
        _augment_preview(images, augment)


def _current_augment() -> AugmentConfig:
    values = {f: st.session_state.get(f"data.aug.{f}", v) for f, v in AugmentConfig().__dict__.items()}
    return AugmentConfig(**values)


main()
