"""The Train page's weights status of the chosen transfer base, with Get (a job with progress) and Import.

A KerasHub base (`hub:<preset>`) shows whether its preset folder is here, and Get (KerasHub downloads it)."""

from __future__ import annotations

import hashlib
import re
from concurrent.futures import Future, ThreadPoolExecutor

import streamlit as st

from dashboard.components import state, task_job
from dashboard.components.polling import when_ready
from engine import zoo
from engine.store import CANCELLED, FAILED
from engine.store.workspace import WEIGHTS_JOB
from engine.weights_job import WeightsRequest, submit_weights


@st.cache_resource(show_spinner=False)
def _pool() -> tuple[ThreadPoolExecutor, dict[str, Future]]:
    # Its own thread: an import must not queue behind the shared pool's slow helpers (model builds).
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="aperture-weights"), {}


def _start(key: str, fn, *args) -> Future:
    pool, futures = _pool()
    if key not in futures:
        futures[key] = pool.submit(fn, *args)
    return futures[key]


def _import(path: str, base: str) -> str:
    return state._run_cli("weights", "import", path, "--base", base).strip()  # builds the base: TensorFlow


def show(base: str, weights: str) -> None:
    """Whether the pretrained weights `model.weights` asks for are here; Get and Import when they are not."""
    if weights == "random":
        st.info(f"**{base}** starts from random weights and trains whole: far slower to learn than a pretrained "
                "base. Set *Base weights* to `imagenet` to start from ImageNet.", icon=":material/casino:")
        return
    if weights != "imagenet":
        try:
            zoo.resolve_weights(base, weights)
        except zoo.WeightsMissing as error:
            st.error(str(error), icon=":material/error:")
        else:
            st.success(f"Starts from the weights in `{weights}`.", icon=":material/check_circle:")
        return
    found = zoo.status(base)
    if zoo.is_hub_base(base):
        _show_hub(base, found)
        return
    if found.present:
        where = "imported" if found.source == "import" else "ImageNet"
        st.success(f"**{where} weights for {base} are here** ({found.size_bytes / 1e6:,.1f} MB, "
                   f"`{found.path.name}`).", icon=":material/check_circle:")
        return
    entry = zoo.get_base(base)
    st.warning(f"**No ImageNet weights for {base} on this machine.** A run would be refused: get them "
               f"(about {entry.megabytes} MB from Google's keras-applications storage) or import a file.",
               icon=":material/cloud_off:")
    _get_button(base)
    _import_form(base)


def _show_hub(base: str, found: zoo.WeightsStatus) -> None:
    """A KerasHub preset: here (imported or downloaded), or Get (KerasHub downloads it) and how to import a folder."""
    if found.present:
        where = "imported" if found.source == "import" else "downloaded"
        st.success(f"**The {where} KerasHub preset {zoo.hub_preset(base)} is here** "
                   f"({found.size_bytes / 1e6:,.1f} MB of weights, `{found.path}`).", icon=":material/check_circle:")
        return
    st.warning(f"**The KerasHub preset {zoo.hub_preset(base)} is not on this machine.** A run would be refused: get "
               f"it (KerasHub downloads it from Kaggle), or offline `python -m engine weights import FOLDER --base "
               f"{base}` a preset folder, or set *Base weights* to a preset folder.", icon=":material/cloud_off:")
    _get_button(base)


def _get_button(base: str) -> None:
    """Get: a `weights` job (`engine.weights_job`), followed here; a reload or another session finds the same job."""
    workspace = state.workspace()
    job = workspace.latest_job(WeightsRequest(base).task_id, WEIGHTS_JOB)
    if st.button(f"Get {base} weights", key=f"train.weights.get_button.{base}", icon=":material/download:",
                 disabled=job is not None and job.active):
        job = submit_weights(workspace, base)
    if job is None:
        return
    if job.active:
        task_job.follow(workspace, job, f"Getting {base}", cancel_key=f"train.weights.cancel.{base}")
    elif job.status == FAILED:
        st.error(f"The last download failed: {job.error}", icon=":material/error:")
    elif job.status == CANCELLED:
        st.info("The last download was cancelled: Get resumes it.", icon=":material/info:")


def _import_form(base: str) -> None:
    upload = st.file_uploader(f"…or import a no-top {base} weights file (.h5 or .weights.h5)", type=["h5"],
                              key=f"train.weights.upload.{base}")
    if upload is None:
        return
    data = upload.getvalue()
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", upload.name)[-80:] or "weights.h5"
    folder = state.workspace().root / "uploads" / "weights"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{hashlib.sha256(data).hexdigest()[:12]}-{stem}"
    if not path.exists():
        path.write_bytes(data)
    when_ready(_start(f"weights-import:{base}:{path}", _import, str(path), base), lambda _: st.rerun(),
               waiting=lambda: st.info(f"Checking {upload.name} against the {base} base…",
                                       icon=":material/hourglass_top:"),
               failed=lambda error: st.error(f"{upload.name} can't be used: {error}", icon=":material/error:"))
