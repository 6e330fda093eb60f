"""Explain: why a model said what it said — Grad-CAM, SHAP and LIME side by side, each with its cost and faithfulness.

Opened from the Evaluate gallery as `/explain?run=ID&image=SAMPLE_ID`, and from the Monitor page as
`/explain?run=ID&logged=LOG_ID` (an input the model server answered). Every map comes from the
dashboard's model server (`components.model_server`): this process never imports TensorFlow.
Grad-CAM runs at once, SHAP and LIME behind a button.
`/explain?run=ID&view=mistakes` is the batch mode: the N most confident mistakes explained by a
job and stored with the run (showing them needs no TensorFlow).
"""

from __future__ import annotations

import hashlib
import io

import numpy as np
import streamlit as st
from PIL import Image

from dashboard.components import mistakes_panel, model_server, state, uploads, widgets
from dashboard.components.figures import top_classes
from engine import evaluation as ev
from engine.data import DatasetError
from engine.explain.gradcam import overlay
from engine.explain.methods import METHODS, SIDE_BY_SIDE, Explanation, method_label, verdict
from engine.serve.client import ServeRequestError, explanation, png
from engine.store import LogNotFound, PredictionLog, Run

RUN_KEY, SOURCE_KEY, INDEX_KEY = "explain.run", "explain.source", "explain.index"
CLASS_KEY, OPACITY_KEY, SLOW_KEY = "explain.class", "explain.opacity", "explain.slow"
TEST_SET, UPLOAD = "Test set", "Upload"
LOGGED_PARAM = "logged"  # a prediction log id, from the Monitor page
VIEW_KEY, VIEW_PARAM = "explain.view", "view"
ONE_IMAGE, MISTAKES = "One image", "Most confident mistakes"
DISPLAY_SIDE = 240
PREDICTED = -1  # the "Explain for class…" option meaning whatever the model predicts
INSTANT = tuple(m for m in SIDE_BY_SIDE if METHODS[m].instant)  # Grad-CAM, as soon as an image is chosen
SLOW = tuple(m for m in SIDE_BY_SIDE if not METHODS[m].instant)  # SHAP and LIME, behind a button
SLOW_LABELS = " and ".join(method_label(m) for m in SLOW)


def _explain(run_id: str, mtime: float, digest: str, data: bytes, method: str, target: int) -> Explanation:
    answer = model_server.remembered(("explain", run_id, mtime, digest, method, target),
                                     lambda client: client.explain(run_id, data, method=method, target=target,
                                                                   source="explain", log=False))
    return explanation(answer)


def _probabilities(run_id: str, mtime: float, digest: str, data: bytes, *, log: bool) -> np.ndarray:
    """The model's probabilities for the image; an uploaded or logged one is recorded as an Explain prediction."""
    answer = model_server.remembered(("classify", run_id, mtime, digest, log),
                                     lambda client: client.classify_image(run_id, data, source="explain", log=log))
    return np.asarray(answer["probabilities"], dtype=np.float32)


def _forget_image() -> None:
    st.query_params.pop("image", None)
    st.query_params.pop(LOGGED_PARAM, None)
    st.session_state.pop(INDEX_KEY, None)


def _test_set(run: Run) -> tuple[ev.Predictions, np.ndarray] | None:
    """The run's test predictions and its dataset images, or None (with a note) when either is missing."""
    if not state.folder(run).has_predictions:
        st.caption("This run has no saved test predictions: upload an image instead.")
        return None
    try:
        predictions = state.folder(run).predictions()
        images = state.run_dataset(run, predictions)
    except (ev.NoPredictions, DatasetError, OSError, ValueError, KeyError) as error:
        st.caption(f"The test set is unavailable ({error}): upload an image instead.")
        return None
    return predictions, images.images


def _choose_image(run: Run) -> tuple[np.ndarray, str, int | None] | None:
    """The image to explain (float32 0..255), a label for it, and its true class if known."""
    logged = st.query_params.get(LOGGED_PARAM)
    if logged:
        return _logged_image(run, logged)
    wanted = st.query_params.get("image")
    st.session_state.setdefault(SOURCE_KEY, TEST_SET)
    source = st.segmented_control("Image", [TEST_SET, UPLOAD], key=SOURCE_KEY) or TEST_SET
    if source == UPLOAD:
        upload = uploads.image_uploader("explain.upload")
        if upload is None:
            return None
        image = uploads.uploaded_image(upload, run.config.data.image_size)
        if image is None:
            return None
        return image.astype(np.float32), upload.name, None
    loaded = _test_set(run)
    if loaded is None:
        return None
    predictions, images = loaded
    ids = [str(i) for i in predictions.ids]
    if wanted and wanted in ids and INDEX_KEY not in st.session_state:
        st.session_state[INDEX_KEY] = ids.index(wanted)
    position = st.number_input(f"Test image (0–{len(ids) - 1})", min_value=0, max_value=len(ids) - 1, step=1,
                               key=INDEX_KEY)
    position = int(position or 0)
    image = np.asarray(images[int(predictions.indices[position])], dtype=np.float32)
    return image, ids[position], int(predictions.labels[position])


def _logged_image(run: Run, log_id: str) -> tuple[np.ndarray, str, int | None] | None:
    """An input the model server answered (its image is kept for the newest predictions of a run)."""
    try:
        logged = PredictionLog(state.workspace()).get(log_id)
    except LogNotFound:
        logged = None
    if logged is None or logged.run_id != run.id or logged.image is None:
        st.warning(f"The logged input `{log_id}` is no longer kept for this run (only the newest ones keep their "
                   "image).", icon=":material/hide_image:")
        st.button("Back to the test set", key="explain.leave_logged", on_click=_forget_image)
        return None
    image = np.asarray(Image.open(io.BytesIO(logged.image)).convert("RGB"), dtype=np.float32)
    st.caption(f"Logged input `{log_id}` · served by {logged.format} from the {logged.source} · "
               f"{100 * logged.top1_probability:.1f}% confident")
    st.button("Back to the test set", key="explain.leave_logged", on_click=_forget_image)
    return image, f"logged {log_id}", logged.feedback_label


def _choose_view() -> str:
    """One image, or the batch of most confident mistakes; the URL (`view=mistakes`) holds the choice, so a
    link to one image (`?run=ID&image=SAMPLE_ID`) always opens the single-image view."""
    chosen = MISTAKES if st.query_params.get(VIEW_PARAM) == "mistakes" else ONE_IMAGE
    st.session_state[VIEW_KEY] = chosen

    def sync() -> None:
        if st.session_state.get(VIEW_KEY) == MISTAKES:
            st.query_params[VIEW_PARAM] = "mistakes"
        elif st.session_state.get(VIEW_KEY) == ONE_IMAGE:
            st.query_params.pop(VIEW_PARAM, None)

    st.segmented_control("Explain", [ONE_IMAGE, MISTAKES], key=VIEW_KEY, on_change=sync,
                         help="One image at a time, or a batch of the run's most confident test-set mistakes "
                              "explained in the background and kept with the run.")
    return chosen


def _open_image(run_id: str, sample_id: str) -> None:
    """The batch view's way into the single-image view of one test image (as `?run=ID&image=SAMPLE_ID`)."""
    st.query_params.from_dict({"run": run_id, "image": sample_id})
    st.session_state[SOURCE_KEY] = TEST_SET
    st.session_state.pop(INDEX_KEY, None)  # let `image=` pick the test image


def _big(image: np.ndarray) -> Image.Image:
    pixels = np.clip(image, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels).resize((DISPLAY_SIDE, DISPLAY_SIDE), Image.Resampling.NEAREST
                                          if pixels.shape[0] <= 64 else Image.Resampling.BILINEAR)


def _colour_bar() -> np.ndarray:
    ramp = np.tile(np.linspace(0, 1, 256, dtype=np.float32), (12, 1))
    return overlay(np.full((12, 256, 3), 255, np.uint8), ramp, alpha=1.0, weighted=True)


def _figures(result: Explanation) -> str:
    return (f"{result.seconds:.2f} s · deletion AUC {result.deletion_auc:.2f} (random {result.random_deletion_auc:.2f},"
            f" lower is better) · insertion AUC {result.insertion_auc:.2f} (random "
            f"{result.random_insertion_auc:.2f}, higher is better)")


def main() -> None:
    runs = state.finished_runs()
    if not widgets.runs_page(":material/visibility:", "Explain",
                             "Why did the model say that? Three methods side by side, each measured for how faithful "
                             "it is.", runs, "No finished run to explain yet — train one first."):
        return
    left, right = st.columns(2)
    with left:
        run = widgets.run_picker(runs, RUN_KEY, on_change=_forget_image)
        view = _choose_view()
    if view == MISTAKES:
        with right:
            mistakes_panel.request_form(run)
        mistakes_panel.show_batch(run, _open_image)
        return
    with right:
        chosen = _choose_image(run)
    if chosen is None:
        if st.session_state.get("explain.upload") is None:  # else the upload's problem is shown already
            st.info("Pick a test image or upload one to see what the model says and why.", icon=":material/image:")
        return
    image, label, true = chosen
    names = state.folder(run).class_names()
    mtime = state.folder(run).model_file.stat().st_mtime
    data = png(image)  # lossless: the server explains exactly these pixels
    digest = hashlib.sha1(data).hexdigest()
    from_outside = st.session_state.get(SOURCE_KEY) == UPLOAD and not st.query_params.get(LOGGED_PARAM)
    try:
        with st.spinner("Asking the model (the first time loads it, about 10 s)…"):
            probabilities = _probabilities(run.id, mtime, digest, data, log=from_outside)
    except (ServeRequestError, model_server.ModelServerError) as error:
        st.error(f"The model server could not answer: {getattr(error, 'message', error)}", icon=":material/error:")
        return
    model_server.show_restart_note()
    names = names or [str(i) for i in range(len(probabilities))]
    predicted = int(np.argmax(probabilities))

    c1, c2, c3 = st.columns([1, 2, 2], vertical_alignment="top")
    with c1:
        st.image(_big(image), caption=f"{label}" + (f" · true class {names[true]}" if true is not None else ""))
    with c2:
        st.plotly_chart(top_classes(names, probabilities, title=f"Top {min(5, len(names))}"),
                        key="explain.topk", width="stretch")
    with c3:
        # Labels that do not change with the image: a label change makes Streamlit re-create the widget blank.
        target = st.selectbox("Explain for class…", [PREDICTED, *range(len(names))], key=CLASS_KEY,
                              format_func=lambda i: "the predicted class" if i == PREDICTED else names[i],
                              help="Explain another class, e.g. the true one: why not that class?")
        opacity = st.slider("Overlay opacity", 0.0, 1.0, 0.5, 0.05, key=OPACITY_KEY)
        st.image(_colour_bar(), caption="Attribution: untinted = none, blue = weak, red = strongest support", width="stretch")
    target_index = predicted if target in (None, PREDICTED) else int(target)

    key = f"{run.id}:{digest}"  # once asked for on an image, SHAP and LIME follow its class changes
    args = (run.id, mtime, digest, data)
    results = {}
    try:
        for method in INSTANT:
            with st.spinner(f"{method_label(method)}…"):
                results[method] = _explain(*args, method, target_index)
        slow_requested = st.session_state.get(SLOW_KEY) == key
        if slow_requested:
            with st.spinner(f"{SLOW_LABELS} (a few seconds each)…"):
                for method in SLOW:
                    results[method] = _explain(*args, method, target_index)
    except (ServeRequestError, model_server.ModelServerError) as error:
        st.error(f"The model server could not explain this image: {getattr(error, 'message', error)}",
                 icon=":material/error:")
        return
    model_server.show_restart_note()
    columns = st.columns(len(SIDE_BY_SIDE))
    for column, method in zip(columns, SIDE_BY_SIDE):
        with column, st.container(border=True, key=f"explain.card.{method}"):
            st.markdown(f"**{method_label(method)}** · class {names[target_index]}")
            result = results.get(method)
            if result is None:
                st.image(_big(image), width="stretch")
                st.caption(f"Not run yet: {SLOW_LABELS} each take a few seconds.")
                continue
            st.image(_big(overlay(np.clip(image, 0, 255).astype(np.uint8), result.heatmap(), alpha=opacity,
                                     weighted=True)),
                     width="stretch")
            st.caption(_figures(result))
    if not slow_requested:
        st.button(f"Run {SLOW_LABELS}", key="explain.run_slow", icon=":material/play_arrow:", type="primary",
                  on_click=st.session_state.__setitem__, args=(SLOW_KEY, key))
    st.info(verdict(list(results.values())), icon=":material/insights:")
    st.caption("Faithfulness: pixels are greyed out (deletion) or restored (insertion) in the order the map ranks "
               "them, in 20 steps, while the model's probability for the class is tracked; the area under that curve "
               "is compared with a random order. A map that beats random shows what the model really uses.")


main()
