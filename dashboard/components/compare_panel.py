"""The Compare tab of Evaluate: two runs on one test set, side by side, with McNemar's test."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import streamlit as st

from dashboard.components import evaluate_figures as figs
from dashboard.components import gallery, state, widgets
from engine import evaluation as ev
from engine.data.versions import version_id
from engine.store import Run

OTHER_KEY = "eval.compare.other"
SPLIT_NAMES = {"train": "training", "val": "validation", "test": "test"}


def show(run: Run, others: list[Run], predictions: ev.Predictions, images: np.ndarray | None, source: str | None,
         same_data: Callable[[Run, str | None], ev.Predictions | None]) -> None:
    """Draws the comparison of `run` (A) with a second completed run the user picks (B).

    Args:
        run: run A; `predictions` are its predictions on the data being looked at.
        others: the runs B can be.
        predictions: A's predictions (its test set, or a fresh evaluation of `source`).
        images: the images behind `predictions`, for the gallery (None: no thumbnails).
        source: what A's fresh evaluation predicted (`split:val`, a folder or zip); None for the test set.
        same_data: B's predictions on the same data, or None when B has not been evaluated on it.
    """
    if not others:
        st.info("Train a second run on the same data to compare the two here.", icon=":material/compare_arrows:")
        return
    by_id = {r.id: r for r in others}
    other_id = st.selectbox("Compare with", list(by_id), key=OTHER_KEY,
                            format_func=lambda i: widgets.run_option_label(by_id[i]))
    other = by_id[other_id]
    other_predictions = same_data(other, source)
    if other_predictions is None:
        _offer_evaluation(other, source)
        return
    relabelled = None
    if source is None and version_id(other.config.data.source) != version_id(run.config.data.source):
        # Runs on two versions of one dataset: compared on the test images both kept, with the newer labels.
        newer = "a" if (version_id(run.config.data.source) or 0) > (version_id(other.config.data.source) or 0) else "b"
        try:
            predictions, other_predictions, relabelled = ev.shared_test_images(predictions, other_predictions,
                                                                               labels_from=newer)
        except ev.NotComparable as error:
            st.warning(f"These two runs cannot be compared: {error}.", icon=":material/block:")
            return
    try:
        comparison = ev.compare_runs(predictions, other_predictions)
    except ev.NotComparable as error:
        st.warning(f"These two runs cannot be compared: {error}.", icon=":material/block:")
        return
    a, b = comparison.a, comparison.b
    if relabelled is not None:
        _flips(run, other, comparison, relabelled, newer)
    st.caption(f"A = {run.label}, run {run.id} · B = {other.label}, run {other.id} · {a.num_samples} shared "
               + ("test images" if source is None else "images"))
    rows = [("Accuracy", a.accuracy, b.accuracy), ("Macro F1", a.macro_f1, b.macro_f1),
            ("Weighted F1", a.weighted_f1, b.weighted_f1), ("Macro precision", a.macro_precision, b.macro_precision),
            ("Macro recall", a.macro_recall, b.macro_recall), ("Calibration error (ECE)", a.ece, b.ece)]
    top = sorted(set(a.top_k_accuracy) & set(b.top_k_accuracy) - {1})
    rows += [(f"Top-{k} accuracy", a.top_k_accuracy[k], b.top_k_accuracy[k]) for k in top]
    left, right = st.columns([2, 3])
    with left:
        st.dataframe(pd.DataFrame([{"Metric": name, "A": 100 * x, "B": 100 * y, "B − A (pts)": 100 * (y - x)}
                                   for name, x, y in rows]),
                     key="eval.compare.metrics", hide_index=True, width="stretch",
                     column_config={"A": st.column_config.NumberColumn(format="%.2f%%"),
                                    "B": st.column_config.NumberColumn(format="%.2f%%"),
                                    "B − A (pts)": st.column_config.NumberColumn(format="%+.2f")})
        test = comparison.test
        box = st.success if test.p_value < ev.SIGNIFICANCE else st.info
        box(f"**McNemar's test** ({test.method}): {comparison.verdict}", icon=":material/balance:")
    with right:
        st.plotly_chart(figs.class_deltas(comparison.class_deltas, "A", "B"), key="eval.compare.deltas",
                        width="stretch")

    names = predictions.class_names
    b_predicted = ev.align(predictions, other_predictions).predicted  # in A's order, like the positions

    def caption(p: ev.Predictions, position: int) -> str:
        return (f"true {names[p.labels[position]]} · A: {names[p.predicted[position]]} · "
                f"B: {names[b_predicted[position]]}")

    st.markdown(f"**Where they disagree** ({len(comparison.disagreements)} images; A right and B wrong: "
                f"{test.a_only}, B right and A wrong: {test.b_only})")
    view = st.segmented_control("Show", ["All disagreements", "Only A right", "Only B right"],
                                default="All disagreements", key="eval.compare.view",
                                on_change=gallery.reset, args=("eval.compare.gallery",))
    positions = {"Only A right": comparison.a_only, "Only B right": comparison.b_only}.get(
        view or "", comparison.disagreements)
    gallery.show("eval.compare.gallery", predictions, np.array(positions, dtype=np.int64), images, caption=caption,
                 empty="The two runs predict the same class for every image.")


def _flips(run: Run, other: Run, comparison: ev.Comparison, relabelled: int, newer: str) -> None:
    """The headline of a retrain on fixed data: which shared test predictions flipped, and McNemar's verdict."""
    fixed, broken = (comparison.b_only, comparison.a_only) if newer == "b" else (comparison.a_only, comparison.b_only)
    older, younger = (run, other) if newer == "b" else (other, run)
    cols = st.columns(4)
    cols[0].metric("Shared test images", f"{comparison.a.num_samples:,}")
    cols[1].metric("Fixed", f"{len(fixed):,}", help=f"wrong in {older.id}, right in {younger.id}")
    cols[2].metric("Broken", f"{len(broken):,}", help=f"right in {older.id}, wrong in {younger.id}")
    cols[3].metric("Relabelled among them", f"{relabelled:,}")
    st.info(f"**Flips after the fixes** ({older.config.data.source} → {younger.config.data.source}): "
            f"{len(fixed)} test prediction{'s' * (len(fixed) != 1)} fixed, {len(broken)} broken, scored on the "
            f"labels of {younger.config.data.source} (McNemar's test on them below).", icon=":material/swap_horiz:")


def _offer_evaluation(other: Run, source: str) -> None:
    """B has no predictions on A's evaluated data: offer to make them with an evaluate job."""
    workspace = state.workspace()
    job = workspace.latest_job(other.id, ev.EVALUATE_JOB)
    if job is None or not job.active:
        st.info(f"Run {other.id} has not been evaluated on {_describe(source)} yet: evaluate it on the "
                "same data to compare the two.", icon=":material/compare_arrows:")
        if st.button("Evaluate B on the same data", key="eval.compare.evaluate", icon=":material/play_arrow:"):
            try:
                ev.request_evaluation(workspace, other.id, source)
            except (ev.EvaluationError, ev.NoPredictions) as error:
                st.error(str(error), icon=":material/error:")
            else:
                st.rerun()
    widgets.job_progress(workspace, other, ev.EVALUATE_JOB, "evaluation of B")


def _describe(source: str) -> str:
    if source.startswith(ev.SPLIT_PREFIX):
        split = source.removeprefix(ev.SPLIT_PREFIX)
        return f"its {SPLIT_NAMES.get(split, split)} split"
    return f"“{Path(source).name}”"
