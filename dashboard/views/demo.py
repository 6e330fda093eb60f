"""Demo: show a model to stakeholders — upload or snap an image, see the top classes and where the model looked.

Opened by link (`/demo?run=ID`) it is read-only and without the sidebar. Predictions and the
Grad-CAM overlay come from the dashboard's model server (`components.model_server`, TF Serving's
REST API), which logs every prediction for the Monitor page; this process never imports TensorFlow.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import streamlit as st
from PIL import Image
from streamlit.runtime.uploaded_file_manager import UploadedFile

from dashboard.components import model_server, state, uploads, widgets
from dashboard.components.figures import top_classes
from engine import export
from engine.explain.gradcam import overlay
from engine.serve.client import ServeRequestError, explanation
from engine.store import Run, RunNotFound

PICKER_KEY = "demo.run"
ARTIFACT_KEY = "demo.artifact"
DISPLAY_SIDE = 280


def _choose_run(runs: list[Run]) -> tuple[Run | None, bool]:
    """The run to demo and whether it came from the URL (read-only)."""
    by_id = {r.id: r for r in runs}
    wanted = st.query_params.get("run")
    if wanted:
        try:
            run_id = state.workspace().resolve_run_id(wanted)
        except RunNotFound:
            run_id = None
        if run_id not in by_id:
            st.error(f"No finished run `{wanted}` to demo: the link may be old, or the run was deleted.",
                     icon=":material/link_off:")
            return None, True
        return by_id[run_id], True
    ids = [r.id for r in runs]
    st.selectbox("Model", ids, key=PICKER_KEY, format_func=lambda i: widgets.run_option_label(by_id[i]))
    return by_id[st.session_state[PICKER_KEY]], False


def _servers(run: Run) -> dict[str, Path]:
    """The artifacts that can serve this run's demo, best first (`export.DEMO_FORMATS`: INT8 TFLite, then float32,
    then Keras). Keras is the run's own model file, always there; the others once exported."""
    folder = state.folder(run)
    exported = {**folder.exports(), "keras": folder.model_file}
    return {fmt: exported[fmt] for fmt in export.DEMO_FORMATS if fmt in exported}


def _served_by(fmt: str) -> str:
    return export.FORMATS[fmt].demo


def _big(image: np.ndarray) -> Image.Image:
    return Image.fromarray(image).resize((DISPLAY_SIDE, DISPLAY_SIDE), Image.Resampling.NEAREST
                                         if image.shape[0] <= 64 else Image.Resampling.BILINEAR)


def _input_image() -> UploadedFile | None:
    upload_tab, camera_tab = st.tabs([":material/upload: Upload an image", ":material/photo_camera: Take a photo"])
    with upload_tab:
        upload = uploads.image_uploader("demo.upload")
    with camera_tab:
        if st.toggle("Use the camera", key="demo.camera_on"):
            photo = st.camera_input("Photo", key="demo.camera", label_visibility="collapsed")
        else:
            photo = None
            st.caption("Turn the camera on to take a photo (the browser asks for permission).")
    return upload or photo


def _classify(run: Run, fmt: str, path: Path, data: bytes, digest: str, *, log: bool = True) -> np.ndarray:
    """The probabilities the model server gives the uploaded file (logged as a Demo prediction unless `log=False`)."""
    answer = model_server.remembered(
        ("demo.classify", run.id, fmt, path.stat().st_mtime, digest, log),
        lambda client: client.classify_image(run.id, data, fmt=fmt, source="demo", log=log))
    return np.asarray(answer["probabilities"], dtype=np.float32)


def _gradcam(run: Run, data: bytes, digest: str) -> np.ndarray:
    mtime = state.folder(run).model_file.stat().st_mtime
    answer = model_server.remembered(("demo.gradcam", run.id, mtime, digest),
                                     lambda client: client.explain(run.id, data, method="gradcam", log=False))
    return explanation(answer).heatmap()


def _show(run: Run, fmt: str, servers: dict[str, Path], upload: UploadedFile) -> None:
    config = run.config
    size = config.data.image_size
    image = uploads.uploaded_image(upload, size)  # decoded as training decoded its images (the server does the same)
    if image is None:
        return
    data = upload.getvalue()
    digest = hashlib.sha1(data).hexdigest()
    names = state.folder(run).class_names()
    try:
        with st.spinner("Asking the model (the first time loads it, about 10 s)…"):
            probabilities = _classify(run, fmt, servers[fmt], data, digest)
            heatmap = _gradcam(run, data, digest)
            reference = None if fmt == "keras" else _classify(run, "keras", servers["keras"], data, digest, log=False)
    except ServeRequestError as error:
        st.error(f"The model server refused this image: {error.message}", icon=":material/error:")
        return
    except model_server.ModelServerError as error:
        st.error(f"The model server is unavailable: {error}", icon=":material/cloud_off:")
        return
    model_server.show_restart_note()
    names = names or [str(i) for i in range(len(probabilities))]
    top = int(np.argmax(probabilities))

    left, middle, right = st.columns([1, 1, 2])
    with left:
        st.image(_big(image), caption=f"What the model sees ({size}×{size})")
    with middle:
        st.image(_big(overlay(image, heatmap)), caption="Where the model looked (Grad-CAM)")
    with right:
        st.metric("Prediction", names[top], f"{100 * probabilities[top]:.1f}% confident",
                  delta_color="off", delta_arrow="off")
        title = f"Top {min(5, len(names))} · served by {_served_by(fmt)}"
        st.plotly_chart(top_classes(names, probabilities, title=title), key="demo.topk", width="stretch")
    if reference is not None:
        same = int(np.argmax(reference)) == top
        diff = float(np.max(np.abs(reference - probabilities)))
        text = (f"Keras says **{names[int(np.argmax(reference))]}** ({100 * reference.max():.1f}%), "
                f"{_served_by(fmt)} says **{names[top]}** ({100 * probabilities[top]:.1f}%); largest probability "
                f"difference {100 * diff:.2f} points.")
        if same:
            st.success("The exported model and the Keras model agree. " + text, icon=":material/check_circle:")
        else:
            st.warning("The exported model and the Keras model disagree on this image. " + text,
                       icon=":material/warning:")


def main() -> None:
    runs = state.finished_runs()
    shared = bool(st.query_params.get("run"))
    if not runs and not shared:
        widgets.page_header(":material/slideshow:", "Demo", "Try a trained model on your own images.")
        widgets.no_runs_yet("No finished run to demo yet — train one first.")
        return
    if shared:
        run, _ = _choose_run(runs)
        if run is None:
            return
        widgets.page_header(":material/slideshow:", run.label,
                            f"Upload an image or take a photo: the model names one of its "
                            f"{len(state.folder(run).class_names())} classes and shows where it looked.")
    else:
        widgets.page_header(":material/slideshow:", "Demo",
                            "Try a trained model on your own images; share the link to show it without the rest "
                            "of the app.")
        run, _ = _choose_run(runs)
    servers = _servers(run)
    options = list(servers)
    if st.session_state.get(ARTIFACT_KEY) not in options:
        st.session_state[ARTIFACT_KEY] = options[0]
    c1, c2 = st.columns([3, 2], vertical_alignment="bottom")
    with c1:
        fmt = st.segmented_control("Served by", options, key=ARTIFACT_KEY, format_func=_served_by,
                                   help="Which file answers: the exported TFLite file (LiteRT) or the Keras model. "
                                        "The Grad-CAM overlay always comes from the Keras model.") or options[0]
    with c2:
        accuracy = widgets.pct(run.test_accuracy)
        st.caption(f"Test accuracy {accuracy} on held-out images · {run.model} · "
                   f"{run.config.data.image_size}×{run.config.data.image_size} px")
        if not shared:
            st.page_link("views/demo.py", label="Shareable link (read-only, no sidebar)", icon=":material/link:",
                         query_params={"run": run.id})
    if "keras" == options[0]:
        st.caption("No exported TFLite file yet: the Keras model serves the demo. Export the run to serve it "
                   "with INT8 TFLite.")
    model_server.warm()  # started while the user picks an image
    chosen = _input_image()
    if chosen is None:
        st.info("Upload an image or take a photo to see what the model says.", icon=":material/image:")
        return
    _show(run, fmt, servers, chosen)


main()
