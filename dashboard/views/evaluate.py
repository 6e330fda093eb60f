"""Evaluate: what a run gets wrong and why: confusion matrix, mistakes, suspected label errors, comparisons."""

from __future__ import annotations


import numpy as np
import pandas as pd
import streamlit as st

from dashboard.components import evaluate_figures as figs
from dashboard.components import compare_panel, gallery, inspect_duplicates, inspect_loop, inspect_map, state, widgets
from engine import evaluation as ev
from engine.data import DatasetError
from engine.runfolder import check_predicted_images
from engine.store import Run

PICKER_KEY = "eval.picker"
SOURCE_KEY, PENDING_SOURCE_KEY = "eval.source", "eval.source.pending"
TEST = ""  # the source option meaning the run's saved test predictions
SPLIT_LABELS = {"train": "Training split", "val": "Validation split", "test": "Test split"}
TAB_KEY = "eval.tab"
TRUE_KEY, PRED_KEY, MISTAKES_KEY = "eval.filter.true", "eval.filter.pred", "eval.filter.mistakes"
CHART_KEY = "eval.cm.chart"
TABS = ("Overview", "Mistakes", "Label errors", "Map", "Duplicates", "Compare")
TOP_CONFUSED = 20


@st.cache_data(max_entries=16, show_spinner=False)
def _load(root: str, run_id: str, name: str, mtime: float) -> tuple[ev.Predictions, ev.Evaluation,
                                                                    list[ev.LabelIssue]]:
    predictions = state.folder(run_id).predictions(name or None)
    return predictions, ev.evaluate(predictions), ev.find_label_issues(predictions)


def load(run: Run):
    return load_chosen(run, TEST)


def load_chosen(run: Run, name: str):
    """The run's test predictions (`name` empty) or one of its saved fresh evaluations, with metrics."""
    folder = state.folder(run)
    path = folder.predictions_file if name == TEST else folder.evaluation_file(name)
    return _load(str(state.workspace().root), run.id, name, path.stat().st_mtime)


def same_data_predictions(other: Run, source: str | None) -> ev.Predictions | None:
    """Another run's predictions on the data behind the chosen ones: its test set for `source` None, else
    its newest saved evaluation of the same split, folder or zip (None if it has none)."""
    if source is None:
        return load(other)[0]
    folder = state.folder(other)
    for name in folder.evaluations():
        if folder.evaluation_source(name) == source:
            return load_chosen(other, name)[0]
    return None


def dataset_images(run: Run, predictions: ev.Predictions, source: str | None = None) -> np.ndarray | None:
    """The images behind the predictions (for thumbnails), if the data still loads and matches them.

    `source` is a fresh evaluation's folder/zip (loaded as `predict_folder` loads it); by default,
    and for `split:*`, the run's own dataset.
    """
    try:
        if source and not source.startswith(ev.SPLIT_PREFIX):
            images = state.load_dataset(source, run.config.data.image_size)
            check_predicted_images(images, predictions)
        else:
            images = state.run_dataset(run, predictions)
    except (DatasetError, OSError) as error:
        st.caption(f"Thumbnails unavailable: {error}.")
        return None
    return images.images


def _forget_run_state() -> None:
    """A different run: its class pickers, comparison and gallery page no longer apply."""
    for key in (TRUE_KEY, PRED_KEY, "eval.compare.other"):
        st.session_state.pop(key, None)
    gallery.reset("eval.gallery")


def _source_label(run: Run, name: str) -> str:
    if name == TEST:
        return "Test split (from training)"
    source = state.folder(run).evaluation_source(name) or ""
    if source.startswith(ev.SPLIT_PREFIX):
        return f"{name} · {SPLIT_LABELS.get(source[len(ev.SPLIT_PREFIX):], source)} (fresh)"
    return f"{name} · {source}" if source else name


def _select_source(run: Run) -> str:
    """The "Predictions" picker: the run's saved test predictions or one of its fresh evaluations."""
    options = [TEST, *state.folder(run).evaluations()]
    pending = st.session_state.pop(PENDING_SOURCE_KEY, None)
    if pending in options:
        st.session_state[SOURCE_KEY] = pending
    elif st.session_state.get(SOURCE_KEY) not in options:
        st.session_state[SOURCE_KEY] = TEST

    def changed() -> None:
        for key in (TRUE_KEY, PRED_KEY):
            st.session_state.pop(key, None)
        gallery.reset("eval.gallery")

    return st.selectbox("Predictions", options, key=SOURCE_KEY, on_change=changed,
                        format_func=lambda name: _source_label(run, name),
                        help="The run's test predictions saved at the end of training, or a fresh evaluation "
                             "of another split or image folder (see *Evaluate on other data* below).")


def _evaluate_other(run: Run) -> None:
    """The form that queues an `evaluate` job, and that job's live progress or error."""
    workspace = state.workspace()
    latest = workspace.latest_job(run.id, ev.EVALUATE_JOB)
    busy = latest is not None and latest.active
    with st.expander("Evaluate on other data", icon=":material/playlist_add_check:", expanded=busy):
        with st.form("eval.other.form", border=False):
            c1, c2 = st.columns([1, 2])
            kind = c1.radio("Data", ["A split of the run's data", "A folder or .zip on the server"],
                            key="eval.other.kind")
            split = c2.selectbox("Split", list(SPLIT_LABELS), format_func=SPLIT_LABELS.get, key="eval.other.split")
            path = c2.text_input("Folder or .zip path", key="eval.other.path", placeholder="/data/new-photos",
                                 help="One sub-folder per class, named like the run's classes.")
            name = c2.text_input("Save as (optional)", key="eval.other.name",
                                 placeholder="e.g. val-split or the folder's name")
            start = st.form_submit_button("Start evaluation", type="primary", icon=":material/play_arrow:",
                                          disabled=busy)
        if start:
            source = f"{ev.SPLIT_PREFIX}{split}" if kind.startswith("A split") else path.strip()
            try:
                if not source:
                    raise ev.EvaluationError("enter a folder or .zip path")
                ev.request_evaluation(workspace, run.id, source, name.strip() or None)
            except (ev.EvaluationError, ev.NoPredictions) as error:
                st.error(str(error), icon=":material/error:")
            else:
                st.rerun()
        widgets.job_progress(workspace, run, ev.EVALUATE_JOB, "evaluation", on_completed=_remember_source,
                             show_completed=True)


def _remember_source(job) -> None:
    """Once an evaluation completes, pick its saved predictions in the source selector."""
    if job.request.get("name"):
        st.session_state[PENDING_SOURCE_KEY] = job.request["name"]


def _headline(result: ev.Evaluation) -> None:
    cols = st.columns(6)
    cols[0].metric("Accuracy", widgets.pct(result.accuracy))
    top = max((k for k in result.top_k_accuracy if k > 1), default=None)
    cols[1].metric(f"Top-{top} accuracy" if top else "Top-k accuracy",
                   widgets.pct(result.top_k_accuracy[top]) if top else "—")
    cols[2].metric("Macro F1", widgets.pct(result.macro_f1))
    cols[3].metric("Weighted F1", widgets.pct(result.weighted_f1))
    cols[4].metric("Mistakes", f"{result.mistakes:,} of {result.num_samples:,}")
    cols[5].metric("ECE", widgets.pct(result.ece, 1),
                   help="Expected calibration error over 15 confidence bins: how far the model's confidence is "
                        "from its accuracy, on average. 0% is perfectly calibrated.")


def _on_cell() -> None:
    """A confusion-matrix click: filter the gallery to that cell and open the Mistakes tab."""
    points = (st.session_state.get(CHART_KEY) or {}).get("selection", {}).get("points", [])
    cells = [p.get("customdata") for p in points if p.get("customdata") is not None]
    if not cells:
        return
    true, predicted = (int(v) for v in cells[-1])
    st.session_state[TRUE_KEY], st.session_state[PRED_KEY] = true, predicted
    st.session_state[MISTAKES_KEY] = true != predicted
    gallery.reset("eval.gallery")
    st.session_state[TAB_KEY] = "Mistakes"


def _overview(predictions: ev.Predictions, result: ev.Evaluation) -> None:
    names = result.class_names
    many = len(names) > TOP_CONFUSED
    c1, c2, _ = st.columns([2, 3, 3])
    values = c1.segmented_control("Values", ["Counts", "Normalised"], default="Counts", key="eval.cm.values")
    scope = c2.segmented_control("Classes", ["All", f"Top {TOP_CONFUSED} most confused"],
                                 default=f"Top {TOP_CONFUSED} most confused" if many else "All", key="eval.cm.scope")
    classes = (figs.most_confused_classes(np.asarray(result.confusion_matrix), TOP_CONFUSED)
               if scope and scope.startswith("Top") else None)
    selected = (st.session_state.get(TRUE_KEY), st.session_state.get(PRED_KEY))
    fig = figs.confusion_heatmap(np.asarray(result.confusion_matrix), names, normalized=values == "Normalised",
                                 classes=classes, selected=selected if None not in selected else None)
    left, right = st.columns([3, 2])
    with left:
        st.plotly_chart(fig, key=CHART_KEY, on_select=_on_cell, selection_mode="points", width="stretch",
                        config={"displayModeBar": False})
        st.caption("Click a cell to see its images in **Mistakes** (rows: the given label; columns: the model's "
                   "prediction).")
    with right:
        st.markdown("**Most confused pairs**")
        if result.confused_pairs:
            st.dataframe(pd.DataFrame([{"True": p.true, "Predicted as": p.predicted, "Images": p.count,
                                        "Share of true class": 100 * p.share} for p in result.confused_pairs]),
                         key="eval.pairs", hide_index=True, width="stretch",
                         column_config={"Share of true class": st.column_config.NumberColumn(format="%.1f%%")})
        else:
            st.success("No mistakes on the test set.", icon=":material/check_circle:")
        st.plotly_chart(figs.reliability_diagram(result.calibration, result.ece), key="eval.reliability",
                        width="stretch")
    st.markdown("**Per-class metrics** (click a column header to sort)")
    left, right = st.columns([2, 3])
    percent = st.column_config.NumberColumn(format="%.1f%%")
    left.dataframe(pd.DataFrame([{"Class": c.name, "Precision": 100 * c.precision, "Recall": 100 * c.recall,
                                  "F1": 100 * c.f1, "Support": c.support} for c in result.per_class]),
                   key="eval.per_class", hide_index=True, width="stretch",
                   column_config={"Precision": percent, "Recall": percent, "F1": percent},
                   height=min(36 * (len(names) + 1) + 2, 420))
    right.plotly_chart(figs.per_class_bars(result.per_class), key="eval.per_class.chart", width="stretch")


def _mistakes(predictions: ev.Predictions, images: np.ndarray | None, explain_run: str | None = None,
              target: inspect_loop.FixTarget | None = None) -> None:
    names = predictions.class_names
    options = [None, *range(len(names))]

    def label(i):
        return "Any class" if i is None else names[i]

    def changed() -> None:
        gallery.reset("eval.gallery")

    c1, c2, c3 = st.columns([3, 3, 2], vertical_alignment="bottom")
    true = c1.selectbox("True class", options, key=TRUE_KEY, format_func=label, on_change=changed)
    predicted = c2.selectbox("Predicted class", options, key=PRED_KEY, format_func=label, on_change=changed)
    only = c3.toggle("Mistakes only", value=True, key=MISTAKES_KEY, on_change=changed)
    positions = ev.ranked_mistakes(predictions, true=true, predicted=predicted, mistakes_only=only)
    what = f"true {label(true)} predicted as {label(predicted)}" if true is not None or predicted is not None else ""
    st.caption(("Most confident mistakes first" if only else "Most confident first")
               + (f" · {what}" if what else "") + f" · {positions.size} image{'s' * (positions.size != 1)}")
    page = int(st.session_state.get("eval.gallery.page", 0))
    inspect_loop.choose_and_act(target, predictions.ids[positions], "eval.mistakes.fix", default_what="on this page",
                                default_ids=predictions.ids[positions[page * gallery.PAGE_SIZE:
                                                                      (page + 1) * gallery.PAGE_SIZE]])
    gallery.show("eval.gallery", predictions, positions, images,
                 empty="No images match: the model makes no such mistake on the test set.", explain_run=explain_run)


def _label_errors(run: Run, predictions: ev.Predictions, issues: list[ev.LabelIssue],
                  images: np.ndarray | None, target: inspect_loop.FixTarget | None = None) -> None:
    st.markdown("Images whose given label the model doubts most: the label's probability is below what the model "
                "usually gives that class, while another class is above its usual level (confident learning). "
                "Check these first when relabelling.")
    if not issues:
        st.success("No suspected label errors in the test set.", icon=":material/check_circle:")
        return
    c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
    c1.caption(f"{len(issues)} suspect{'s' * (len(issues) != 1)} of {len(predictions)} test images, most doubtful "
               "first.")
    c2.download_button("Download CSV", ev.label_issues_csv(issues), file_name=f"label-issues-{run.id}.csv",
                       mime="text/csv", key="eval.issues.csv", icon=":material/download:", width="stretch")
    st.dataframe(pd.DataFrame([{"Rank": n, "Image id": i.id, "Given label": i.given, "Model suggests": i.suggested,
                                "P(given)": 100 * i.self_confidence, "P(suggested)": 100 * i.suggested_probability}
                               for n, i in enumerate(issues, 1)]),
                 key="eval.issues.table", hide_index=True, width="stretch",
                 column_config={"P(given)": st.column_config.NumberColumn(format="%.1f%%"),
                                "P(suggested)": st.column_config.NumberColumn(format="%.1f%%")},
                 height=min(36 * (len(issues) + 1) + 2, 320))
    by_position = {i.position: i for i in issues}
    inspect_loop.choose_and_act(target, [i.id for i in issues], "eval.issues.fix", default_what="suspected",
                                suggestions={i.id: i.suggested for i in issues})

    def caption(p: ev.Predictions, position: int) -> str:
        issue = by_position[position]
        return f"labelled {issue.given}, model says {issue.suggested} ({100 * issue.suggested_probability:.0f}%)"

    gallery.show("eval.issues.gallery", predictions, np.array([i.position for i in issues]), images, caption=caption)


def main() -> None:
    runs = state.finished_runs(with_predictions=True)
    if not widgets.runs_page(":material/fact_check:", "Evaluate",
                             "What a trained model gets wrong, and why: click a confusion-matrix cell to see the images.",
                             runs, "No completed run yet — train one, and its test-set evaluation appears here."):
        return
    left, right = st.columns(2)
    with left:
        run = widgets.run_picker(runs, PICKER_KEY, on_change=_forget_run_state)
    with right:
        chosen = _select_source(run)
    _evaluate_other(run)
    try:
        predictions, result, issues = load_chosen(run, chosen)
    except (ev.NoPredictions, OSError, ValueError, KeyError) as error:
        st.error(f"These predictions do not load: {error}", icon=":material/error:")
        return
    _headline(result)
    source = None if chosen == TEST else state.folder(run).evaluation_source(chosen)
    images = dataset_images(run, predictions, source)
    own = source is None or source.startswith(ev.SPLIT_PREFIX)  # the run's own data: fixes can go into a version
    target = inspect_loop.for_run(run) if own and images is not None else None
    overview, mistakes, label_errors, map_tab, duplicates, compare = st.tabs(TABS, key=TAB_KEY, on_change="rerun")
    with overview:
        _overview(predictions, result)
    with mistakes:
        # The Explain page finds the image by id in the run's own dataset (test set or a split:* evaluation).
        _mistakes(predictions, images, run.id if own and images is not None else None, target)
        if source is None:  # the explain job works on the run's test predictions
            st.page_link("views/explain.py", label="Explain the most confident mistakes in a batch",
                         icon=":material/visibility:", query_params={"run": run.id, "view": "mistakes"})
    with label_errors:
        _label_errors(run, predictions, issues, images, target)
    with map_tab:
        run_images = images if own else None
        inspect_map.show(run, run_images, target, (st.session_state.get(TRUE_KEY), st.session_state.get(PRED_KEY)))
    with duplicates:
        inspect_duplicates.show(run, images if own else None, target)
    with compare:
        compare_panel.show(run, [r for r in runs if r.id != run.id], predictions, images, source,
                           same_data_predictions)
    inspect_loop.basket(target)


main()
