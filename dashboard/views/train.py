"""Train: the whole RunConfig as a form; Start submits a job and opens its live view."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import streamlit as st

from dashboard.components import state, weights_panel, widgets
from dashboard.components.polling import when_ready
from engine import jobs
from engine.config import ConfigError, RunConfig, describe_fields, field_spec, section_titles
from engine.data import BUILTIN_SOURCES, DatasetError, check_source_allowed, load_images
from engine.data.versions import load_version, version_id
from engine.store import CACHE_DIR
from engine.zoo import WeightsMissing, resolve_weights

BUILTIN, PATH = "Built-in dataset", "Folder or zip on the server"
ERROR_KEY = "train.error"  # {"field": "train.learning_rate", "message": ..., "raw": {...}}
BACKEND_FIELD = "backend"  # the error's "field" when the job backend refused the run (APERTURE_BACKEND)
PARENT_KEY = "train.parent"  # the run this form was cloned from
STARTED_KEY = "train.started"  # the run just submitted, to open on the Runs page
SAVED_KEY = "train.saved"  # form values kept while the user visits other pages
KNOWN_CLASS_COUNTS = {"digits": 10, "mnist": 10, "fashion_mnist": 10, "cifar10": 10}
SECTION_ICONS = {"data": ":material/dataset:", "augment": ":material/tune:", "model": ":material/hub:",
                 "train": ":material/speed:"}
# Where a section's settings go: rows of columns (None leaves a column empty). The settings a section does
# not place here follow in rows of three, so a new setting appears in the form without an edit here.
LAYOUT = {"data": (("image_size", "max_per_class"), ("val_fraction", "test_fraction", "seed")),
          "augment": (("rotation", "shift", "zoom"), ("contrast", "brightness", None), ("flip",)),
          "model": (("base", "weights"),)}


def _values_from_config(config: RunConfig) -> dict:
    """Widget values (by key) that show `config`."""
    values = {}
    for section in ("", *section_titles()):
        part = getattr(config, section) if section else config
        values.update({widgets.setting_key(spec): getattr(part, spec.name) for spec in describe_fields(section)})
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
    for section in section_titles():
        # .get: Streamlit drops the state of widgets not drawn in the last run (another model's settings)
        raw[section] = {spec.name: s.get(widgets.setting_key(spec), spec.default) for spec in describe_fields(section)
                        if spec.name != "source"}
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
    merged["train"].update(chosen.get("train", {}))
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
        if st.session_state["cfg.data.kind"] == PATH and version_id(source) is not None:
            try:  # a dataset version (Evaluate's "Retrain with these fixes"): it must exist in this workspace
                raw["data"]["source"] = load_version(state.workspace().root, source).name
            except DatasetError as error:
                raise ConfigError("data.source", source, str(error)) from None
        elif st.session_state["cfg.data.kind"] == PATH:
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
        if config.model.name == "transfer":  # refused here, not in the job: the pretrained weights must be here
            try:
                resolve_weights(config.model.base, config.model.weights, config.data.image_size)
            except WeightsMissing as error:
                raise ConfigError("model.weights", config.model.weights, str(error)) from None
        jobs.check_workers(config)  # train.workers > 1 needs the Ray backend: refused here, with the field named
    except ConfigError as error:
        st.session_state[ERROR_KEY] = {"field": error.field, "message": f"{error.reason} (got {error.value!r})",
                                       "raw": raw}
        return
    try:
        run = jobs.submit(config, state.workspace(), parent_id=st.session_state.get(PARENT_KEY))
    except OSError as error:  # the backend cannot start jobs now, e.g. an unreachable Ray cluster
        st.session_state[ERROR_KEY] = {"field": BACKEND_FIELD, "message": str(error), "raw": raw}
        return
    st.session_state[STARTED_KEY] = run.id
    st.session_state[PARENT_KEY] = None


def _field_error(*fields: str) -> None:
    """Shows the last Start's error under the widgets, if it names one of `fields` (`train.epochs`, ...)."""
    error = st.session_state.get(ERROR_KEY)
    if error and error["field"] in fields:
        try:
            label = field_spec(error["field"]).label
        except KeyError:
            label = error["field"]
        st.error(f"{label}: {error['message']}", icon=":material/error:")


def _settings(section: str, rows: tuple = (), *, skip: tuple = ()) -> None:
    """Draws a section's settings from their metadata in `rows` of columns, each row followed by its errors.

    Args:
        section: `data`, `augment`, `model` or `train`.
        rows: where some settings go (see `LAYOUT`); the others follow in rows of three, switches last in a row each.
        skip: settings drawn elsewhere.
    """
    specs = {spec.name: spec for spec in describe_fields(section) if spec.name not in skip}
    shown = [name for name, spec in specs.items() if spec.applies_to(st.session_state["cfg.model.name"])]
    rows = tuple(row for row in (tuple(n if n in shown else None for n in row) for row in rows) if any(row))
    placed = {name for row in rows for name in row}
    rest = [name for name in shown if name not in placed]
    toggles = [name for name in rest if specs[name].widget == "toggle"]  # a row each: a third cut their labels
    rest = [name for name in rest if name not in toggles]
    for row in [*rows, *((*rest[i:i + 3], None, None)[:3] for i in range(0, len(rest), 3)), *((n,) for n in toggles)]:
        for column, name in zip(st.columns(len(row)), row):
            if name is not None:
                widgets.setting_widget(specs[name], column)
        _field_error(*(specs[name].key for name in row if name))
    _field_error(*(spec.key for name, spec in specs.items() if name not in shown))  # settings hidden now


def _data_section() -> None:
    infos = {info.name: info for info in state.sources()}
    source = field_spec("data.source")
    st.radio(source.label, [BUILTIN, PATH], key="cfg.data.kind", horizontal=True, help=source.help)
    if st.session_state["cfg.data.kind"] == BUILTIN:
        st.selectbox("Dataset", list(infos), key="cfg.data.builtin",
                     format_func=lambda n: n + ("" if infos[n].available else " (not available offline)"))
        info = infos.get(st.session_state["cfg.data.builtin"])
        if info is not None and not info.available:
            st.warning(f"{info.detail}", icon=":material/cloud_off:")
    else:
        st.text_input("Path", key="cfg.data.path", placeholder="/data/flowers or /data/flowers.zip",
                      help="A folder holding one sub-folder of images per class, or a .zip of it, or a "
                           "dataset version `version:ID` (made on Evaluate or with `python -m engine relabel`).")
    _field_error("data.source")
    _settings("data", LAYOUT["data"], skip=("source",))


def _model_section() -> None:
    widgets.setting_widget(field_spec("model.name"))
    _field_error("model.name")
    _settings("model", LAYOUT["model"], skip=("name",))
    if st.session_state["cfg.model.name"] == "transfer":
        weights_panel.show(st.session_state["cfg.model.base"], st.session_state["cfg.model.weights"].strip())
    _params_metric()


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
    if source not in BUILTIN_SOURCES and version_id(source) is None and not Path(source).expanduser().exists():
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
    name = field_spec("name")
    widgets.setting_widget(name, label=f"{name.label} (optional)")
    _field_error("name")
    titles = section_titles()
    drawers = {"data": _data_section, "augment": lambda: _settings("augment", LAYOUT["augment"]),
               "model": _model_section, "train": lambda: _settings("train")}
    for column, sections in zip(st.columns(2, gap="large"), (("data", "augment"), ("model", "train"))):
        for section in sections:
            with column, st.container(border=True):
                st.subheader(f"{SECTION_ICONS[section]} {titles[section]}", anchor=False)
                drawers[section]()
    if (error := st.session_state.get(ERROR_KEY)) and error["field"] == BACKEND_FIELD:
        st.error(f"Could not start the run: {error['message']}", icon=":material/cloud_off:")
    elif error:
        st.error("Fix the highlighted setting, then start again.", icon=":material/error:")
    st.button("Start training", key="train.start", type="primary", on_click=_start, icon=":material/play_arrow:")
    st.session_state[SAVED_KEY] = {k: v for k, v in st.session_state.items()
                                   if isinstance(k, str) and (k.startswith("cfg.") or k == "cfg.name")}


main()
