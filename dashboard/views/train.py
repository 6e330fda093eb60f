"""Train: the whole RunConfig as a form; Start submits a job and opens its live view."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import streamlit as st

from dashboard.components import state, widgets
from dashboard.components.polling import when_ready
from engine import jobs
from engine.config import (ACTIVATIONS, MIXED_PRECISION, MODEL_NAMES, OPTIMIZERS, POOLINGS, SCHEDULES,
                           TRANSFER_BASES, ConfigError, RunConfig)
from engine.data import BUILTIN_SOURCES, DatasetError, check_source_allowed, load_images
from engine.store import CACHE_DIR

BUILTIN, PATH = "Built-in dataset", "Folder or zip on the server"
ERROR_KEY = "train.error"  # {"field": "train.learning_rate", "message": ..., "raw": {...}}
PARENT_KEY = "train.parent"  # the run this form was cloned from
STARTED_KEY = "train.started"  # the run just submitted, to open on the Runs page
SAVED_KEY = "train.saved"  # form values kept while the user visits other pages
MODEL_LABELS = {"lenet5": "LeNet-5 (small, fast)", "resnet": "ResNet", "resnet_cbam": "ResNet + CBAM attention",
                "transfer": "Transfer learning (pretrained base)"}
KNOWN_CLASS_COUNTS = {"digits": 10, "mnist": 10, "fashion_mnist": 10, "cifar10": 10}


def _key(section: str, field: str) -> str:
    return f"cfg.{section}.{field}"


def _values_from_config(config: RunConfig) -> dict:
    """Widget values (by key) that show `config`."""
    values = {"cfg.name": config.name}
    for section in ("data", "augment", "model", "train"):
        for field, value in dataclasses.asdict(getattr(config, section)).items():
            values[_key(section, field)] = value
    source = config.data.source
    values["cfg.data.kind"] = BUILTIN if source in BUILTIN_SOURCES else PATH
    values["cfg.data.builtin"] = source if source in BUILTIN_SOURCES else "digits"
    values["cfg.data.path"] = "" if source in BUILTIN_SOURCES else source
    del values["cfg.data.source"]
    return values


def _raw_config() -> dict:
    """The form's current values as a RunConfig dict (not yet validated)."""
    s = st.session_state
    raw: dict = {"name": s["cfg.name"].strip()}
    for section in ("data", "augment", "model", "train"):
        klass = type(getattr(RunConfig(), section))
        raw[section] = {f.name: s[_key(section, f.name)] for f in dataclasses.fields(klass) if f.name != "source"}
    raw["data"]["source"] = s["cfg.data.builtin"] if s["cfg.data.kind"] == BUILTIN else s["cfg.data.path"].strip()
    return raw


def _init_form() -> None:
    """Fills widget state from a prefill (Data page or clone), else from what the user last had, else defaults."""
    s = st.session_state
    values = _values_from_config(RunConfig())
    values.update(s.get(SAVED_KEY, {}))
    chosen = s.pop(state.CHOSEN_DATA, None)
    prefill = s.pop(state.TRAIN_PREFILL, None)
    if chosen or prefill:
        base = _merge(values, chosen) if chosen else _values_from_config(RunConfig.from_dict(prefill[0]))
        for key, value in base.items():
            s[key] = value
        s[PARENT_KEY] = prefill[1] if prefill else None
        s.pop(ERROR_KEY, None)
    for key, value in values.items():
        if key not in s:
            s[key] = value


def _merge(values: dict, chosen: dict) -> dict:
    """Current form values with the data and augmentation chosen on the Data page."""
    current = RunConfig.from_dict(_coerce(values))
    merged = current.to_dict()
    merged["data"].update(chosen.get("data", {}))
    merged["augment"].update(chosen.get("augment", {}))
    try:
        return _values_from_config(RunConfig.from_dict(merged))
    except ConfigError:
        return values


def _coerce(values: dict) -> dict:
    raw = {"name": values["cfg.name"], "data": {}, "augment": {}, "model": {}, "train": {}}
    for key, value in values.items():
        parts = key.split(".")
        if len(parts) == 3 and parts[1] in raw and parts[2] not in ("kind", "builtin", "path"):
            raw[parts[1]][parts[2]] = value
    kind, builtin, path = values["cfg.data.kind"], values["cfg.data.builtin"], values["cfg.data.path"]
    raw["data"]["source"] = builtin if kind == BUILTIN else (path or "digits")
    return raw


def _apply_clone() -> None:
    run_id = st.session_state.get("clone.run")
    if not run_id:
        return
    run = state.workspace().get_run(run_id)
    for key, value in _values_from_config(run.config).items():
        st.session_state[key] = value
    st.session_state[PARENT_KEY] = run.id
    st.session_state.pop(ERROR_KEY, None)


def _start() -> None:
    raw = _raw_config()
    st.session_state.pop(ERROR_KEY, None)
    try:
        source = raw["data"]["source"]
        if st.session_state["cfg.data.kind"] == PATH:
            if not source:
                raise ConfigError("data.source", source, "type the path of a folder or .zip on the server")
            try:
                check_source_allowed(source)
            except DatasetError as error:
                raise ConfigError("data.source", source, str(error)) from None
            if not Path(source).expanduser().exists():
                raise ConfigError("data.source", source, "no such folder or file on the server")
            raw["data"]["source"] = str(Path(source).expanduser().resolve())
        config = RunConfig.from_dict(raw)
    except ConfigError as error:
        st.session_state[ERROR_KEY] = {"field": error.field, "message": f"{error.reason} (got {error.value!r})",
                                       "raw": raw}
        return
    run = jobs.submit(config, state.workspace(), parent_id=st.session_state.get(PARENT_KEY))
    st.session_state[STARTED_KEY] = run.id
    st.session_state[PARENT_KEY] = None


def _field_error(*fields: str) -> None:
    error = st.session_state.get(ERROR_KEY)
    if error and error["field"] in fields:
        st.error(f"{widgets.FIELD_LABELS.get(error['field'].split('.')[-1], error['field'])}: {error['message']}",
                 icon=":material/error:")


def _data_section() -> None:
    infos = {info.name: info for info in state.sources()}
    st.radio("Source", [BUILTIN, PATH], key="cfg.data.kind", horizontal=True)
    if st.session_state["cfg.data.kind"] == BUILTIN:
        st.selectbox("Dataset", list(infos), key="cfg.data.builtin",
                     format_func=lambda n: n + ("" if infos[n].available else " (not available offline)"))
        info = infos.get(st.session_state["cfg.data.builtin"])
        if info is not None and not info.available:
            st.warning(f"{info.detail}", icon=":material/cloud_off:")
    else:
        st.text_input("Path", key="cfg.data.path", placeholder="/data/flowers or /data/flowers.zip",
                      help="A folder holding one sub-folder of images per class, or a .zip of it.")
    _field_error("data.source")
    c1, c2 = st.columns(2)
    c1.number_input("Image size (px)", 8, 512, step=8, key="cfg.data.image_size",
                    help="Images are resized to this square side.")
    c2.number_input("Max images per class (0 = all)", 0, 10_000_000, step=100, key="cfg.data.max_per_class")
    _field_error("data.image_size", "data.max_per_class")
    c1, c2, c3 = st.columns(3)
    c1.number_input("Validation share", 0.05, 0.5, step=0.05, format="%.2f", key="cfg.data.val_fraction")
    c2.number_input("Test share", 0.05, 0.5, step=0.05, format="%.2f", key="cfg.data.test_fraction")
    c3.number_input("Split seed", 0, 2**31 - 1, key="cfg.data.seed")
    _field_error("data.val_fraction", "data.test_fraction", "data.seed")


def _augment_section() -> None:
    c1, c2, c3 = st.columns(3)
    c1.slider("Rotation (°)", 0.0, 180.0, step=5.0, key="cfg.augment.rotation")
    c2.slider("Shift (share of side)", 0.0, 0.5, step=0.05, key="cfg.augment.shift")
    c3.slider("Zoom", 0.0, 0.9, step=0.05, key="cfg.augment.zoom")
    c1.slider("Contrast", 0.0, 1.0, step=0.05, key="cfg.augment.contrast")
    c2.slider("Brightness", 0.0, 1.0, step=0.05, key="cfg.augment.brightness")
    st.toggle("Horizontal flip", key="cfg.augment.flip", help="Leave off for digits and text: a flipped 2 is not a 2.")
    _field_error(*(f"augment.{f}" for f in ("rotation", "shift", "zoom", "contrast", "brightness", "flip")))


def _model_section() -> None:
    st.selectbox("Architecture", MODEL_NAMES, key="cfg.model.name", format_func=MODEL_LABELS.get)
    name = st.session_state["cfg.model.name"]
    c1, c2, c3 = st.columns(3)
    if name == "lenet5":
        c1.selectbox("Activation", ACTIVATIONS, key="cfg.model.activation")
        c2.selectbox("Pooling", POOLINGS, key="cfg.model.pooling")
    elif name in ("resnet", "resnet_cbam"):
        c1.number_input("Width (filters)", 4, 512, step=4, key="cfg.model.width")
        c2.number_input("Depth (blocks per stage)", 1, 8, key="cfg.model.depth")
    else:
        c1.selectbox("Base network", TRANSFER_BASES, key="cfg.model.base")
        c2.number_input("Fine-tuned base layers", 0, 1000, key="cfg.model.fine_tune_layers",
                        help="0 keeps the pretrained base frozen.")
    c3.number_input("Dropout", 0.0, 0.9, step=0.05, format="%.2f", key="cfg.model.dropout")
    _field_error(*(f"model.{f}" for f in ("name", "activation", "pooling", "width", "depth", "base",
                                          "fine_tune_layers", "dropout")))
    _params_metric()


def _train_section() -> None:
    c1, c2, c3 = st.columns(3)
    c1.number_input("Epochs", 1, 10_000, key="cfg.train.epochs")
    c2.number_input("Batch size", 1, 4096, key="cfg.train.batch_size")
    c3.selectbox("Optimizer", OPTIMIZERS, key="cfg.train.optimizer")
    _field_error("train.epochs", "train.batch_size", "train.optimizer")
    c1, c2, c3 = st.columns(3)
    c1.number_input("Learning rate", 1e-6, 10.0, step=1e-4, format="%.5f", key="cfg.train.learning_rate")
    c2.selectbox("Schedule", SCHEDULES, key="cfg.train.schedule")
    c3.number_input("Weight decay", 0.0, 1.0, step=1e-4, format="%.4f", key="cfg.train.weight_decay")
    _field_error("train.learning_rate", "train.schedule", "train.weight_decay")
    c1, c2, c3 = st.columns(3)
    c1.number_input("Label smoothing", 0.0, 0.5, step=0.05, format="%.2f", key="cfg.train.label_smoothing")
    c2.number_input("Patience (epochs)", 0, 10_000, key="cfg.train.early_stopping",
                    help="Stop after this many epochs without a better validation loss; 0 = off.")
    c3.selectbox("Mixed precision", MIXED_PRECISION, key="cfg.train.mixed_precision")
    c1, c2, _ = st.columns(3)
    c1.number_input("Training seed", 0, 2**31 - 1, key="cfg.train.seed")
    c2.toggle("Bit-exact reruns", key="cfg.train.deterministic",
              help="TensorFlow op determinism: the same seed gives the same numbers to the last digit. Slower.")
    _field_error("train.label_smoothing", "train.early_stopping", "train.mixed_precision", "train.seed",
                 "train.deterministic")


def _describe(config: RunConfig, cache_root: str) -> dict:
    """Counts the classes (TF-free) and builds the model in a subprocess; runs on a background thread."""
    source = config.data.source
    classes = KNOWN_CLASS_COUNTS.get(source) or len(
        load_images(source, 8, max_per_class=1, cache_dir=Path(cache_root) / CACHE_DIR).class_names)
    return {**state.count_params(config, classes), "classes": classes}


def _params_metric() -> None:
    """The parameter count of the chosen model, computed in a subprocess; never blocks the page."""
    try:
        config = RunConfig.from_dict(_raw_config())
    except ConfigError:
        st.caption("Parameters: fix the settings above to count them.")
        return
    source = config.data.source
    try:
        check_source_allowed(source)
    except DatasetError:
        st.caption("Parameters: choose a dataset inside the allowed data folders to count them.")
        return
    if source not in BUILTIN_SOURCES and not Path(source).expanduser().exists():
        st.caption("Parameters: choose an existing dataset to count them.")
        return
    relevant = {"source": source, "model": dataclasses.asdict(config.model), "size": config.data.image_size,
                "weight_decay": config.train.weight_decay}
    future = state.start_task(f"describe:{json.dumps(relevant, sort_keys=True)}", _describe, config,
                              str(state.workspace().root))

    def failed(error: BaseException) -> None:
        reason = str(error) if isinstance(error, (DatasetError, state.HelperError)) else repr(error)
        st.metric("Parameters", "—", help=f"Could not count them: {reason}")

    when_ready(future,
               lambda info: st.metric("Parameters", f"{info['params']:,}",
                                      help=f"{info['trainable_params']:,} trainable · {info['layers']} layers · "
                                           f"{info['classes']} classes"),
               waiting=lambda: st.metric("Parameters", "counting…", help="Building the model in the background."),
               failed=failed)


def _clone_picker() -> None:
    runs = state.workspace().list_runs()
    if not runs:
        return
    with st.expander("Clone an earlier run", icon=":material/content_copy:"):
        options = {run.id: run for run in runs}
        c1, c2 = st.columns([4, 1], vertical_alignment="bottom")
        c1.selectbox("Run", list(options), key="clone.run", format_func=lambda i: widgets.run_option_label(options[i]))
        c2.button("Fill the form", key="clone.apply", on_click=_apply_clone, icon=":material/content_copy:",
                  width="stretch")


def main() -> None:
    if STARTED_KEY in st.session_state:
        run_id = st.session_state.pop(STARTED_KEY)
        st.switch_page(widgets.PAGES["runs"], query_params={"run": run_id})
    _init_form()
    jobs.refresh(state.workspace(), keep_warm=True)  # a warm worker makes Start begin training at once
    widgets.page_header(":material/model_training:", "Train",
                        "Set up a run — data, augmentation, model and training — and start it in the background.")
    _clone_picker()
    if st.session_state.get(PARENT_KEY):
        st.info(f"Pre-filled from run `{st.session_state[PARENT_KEY]}`; Start records it as the parent.",
                icon=":material/content_copy:")
    error = st.session_state.get(ERROR_KEY)
    if error and error.get("raw") != _raw_config():
        st.session_state.pop(ERROR_KEY)  # the user changed something since: the message is stale
    st.text_input("Run name (optional)", key="cfg.name", max_chars=200, placeholder="e.g. lenet baseline")
    _field_error("name")
    left, right = st.columns(2, gap="large")
    with left:
        with st.container(border=True):
            st.subheader(":material/dataset: Data", anchor=False)
            _data_section()
        with st.container(border=True):
            st.subheader(":material/tune: Augmentation", anchor=False)
            _augment_section()
    with right:
        with st.container(border=True):
            st.subheader(":material/hub: Model", anchor=False)
            _model_section()
        with st.container(border=True):
            st.subheader(":material/speed: Training", anchor=False)
            _train_section()
    if st.session_state.get(ERROR_KEY):
        st.error("Fix the highlighted setting, then start again.", icon=":material/error:")
    st.button("Start training", key="train.start", type="primary", on_click=_start, icon=":material/play_arrow:")
    st.session_state[SAVED_KEY] = {k: v for k, v in st.session_state.items()
                                   if isinstance(k, str) and (k.startswith("cfg.") or k == "cfg.name")}


main()
