"""Plotly figures for the Evaluate page: confusion matrix, per-class bars, reliability, deltas."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from dashboard.components.figures import TEST_COLOR, TRAIN_COLOR, VAL_COLOR
from engine.evaluation import CalibrationBin, ClassDelta, ClassMetrics

ANNOTATE_UP_TO = 20  # classes; beyond this the cells are too small for numbers


def _base(fig: go.Figure, title: str, *, height: int) -> go.Figure:
    fig.update_layout(title={"text": title, "x": 0, "xanchor": "left", "font": {"size": 15}}, height=height,
                      margin={"l": 10, "r": 10, "t": 46, "b": 10}, template="plotly_white",
                      legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 1, "xanchor": "right"})
    return fig


def most_confused_classes(confusion: np.ndarray, count: int) -> list[int]:
    """The `count` class indices with the most errors (as true or as predicted class), in label order."""
    off = np.asarray(confusion).copy()
    np.fill_diagonal(off, 0)
    errors = off.sum(axis=0) + off.sum(axis=1)
    return sorted(np.argsort(-errors, kind="stable")[:count].tolist())


def confusion_heatmap(confusion: np.ndarray, class_names: Sequence[str], *, normalized: bool,
                      classes: Sequence[int] | None = None, selected: tuple[int, int] | None = None) -> go.Figure:
    """The confusion matrix (rows: true class, columns: predicted class) as a clickable heatmap.

    An invisible marker sits on every cell so that clicking a cell is a plotly point selection
    (heatmaps themselves are not selectable); its customdata is `[true index, predicted index]`.

    Args:
        confusion: `(C, C)` counts.
        class_names: the C class names.
        normalized: colour and label by the share of each true class (row) instead of counts.
        classes: show only these class indices (e.g. the most confused); None = all.
        selected: a `(true, predicted)` cell to outline.
    """
    confusion = np.asarray(confusion)
    classes = list(range(len(class_names))) if classes is None else list(classes)
    counts = confusion[np.ix_(classes, classes)]
    rows = confusion.sum(axis=1)[classes][:, None]
    shares = np.divide(counts, rows, out=np.zeros(counts.shape, float), where=rows > 0)
    names = [str(class_names[i]) for i in classes]
    z = shares if normalized else counts
    # Empty cells stay blank: a wall of zeros hides the few cells that matter.
    text = [["" if c == 0 else f"{100 * v:.0f}%" if normalized else f"{int(c)}" for v, c in zip(rs, rc)]
            for rs, rc in zip(shares, counts)]
    fig = go.Figure(go.Heatmap(
        z=z, x=names, y=names, colorscale="Blues", hoverinfo="skip", showscale=True,
        zmin=0, zmax=1 if normalized else max(1, int(counts.max())),
        colorbar={"title": {"text": "share of true class" if normalized else "images", "side": "right"},
                  "thickness": 12, "tickformat": ".0%" if normalized else "d"},
        text=text if len(names) <= ANNOTATE_UP_TO else None,
        texttemplate="%{text}" if len(names) <= ANNOTATE_UP_TO else None, textfont={"size": 12}))
    xs, ys, custom, hover = [], [], [], []
    for r, true_index in enumerate(classes):
        for c, pred_index in enumerate(classes):
            xs.append(names[c])
            ys.append(names[r])
            custom.append([true_index, pred_index])
            hover.append(f"true {names[r]} → predicted {names[c]}<br>{int(counts[r, c])} images "
                         f"({100 * shares[r, c]:.1f}% of {names[r]})")
    size = max(6, min(40, 560 // max(1, len(names))))
    fig.add_scatter(x=xs, y=ys, customdata=custom, mode="markers", hovertext=hover, hoverinfo="text",
                    marker={"size": size, "symbol": "square", "color": "rgba(0,0,0,0)"},
                    selected={"marker": {"opacity": 1}}, unselected={"marker": {"opacity": 1}}, showlegend=False)
    if selected is not None and selected[0] in classes and selected[1] in classes:
        r, c = classes.index(selected[0]), classes.index(selected[1])
        fig.add_shape(type="rect", x0=c - 0.5, x1=c + 0.5, y0=r - 0.5, y1=r + 0.5,
                      line={"color": "#e8590c", "width": 3})
    side = max(360, min(900, 160 + 34 * len(names)))
    _base(fig, "Confusion matrix" + (" (share of each true class)" if normalized else " (images)"), height=side)
    fig.update_xaxes(title_text="Predicted class", type="category", side="bottom", tickangle=-45 if len(names) > 10
                     else 0, showgrid=False)
    fig.update_yaxes(title_text="True class", type="category", autorange="reversed", showgrid=False)
    fig.update_layout(clickmode="event+select", dragmode=False, hovermode="closest")
    return fig


def per_class_bars(per_class: Sequence[ClassMetrics]) -> go.Figure:
    """Grouped precision / recall / F1 bars per class (in %)."""
    names = [c.name for c in per_class]
    fig = go.Figure()
    for label, values, color in (("precision", [c.precision for c in per_class], TRAIN_COLOR),
                                 ("recall", [c.recall for c in per_class], VAL_COLOR),
                                 ("F1", [c.f1 for c in per_class], TEST_COLOR)):
        fig.add_bar(x=names, y=[100 * v for v in values], name=label, marker_color=color,
                    hovertemplate="%{x}: %{y:.1f}%<extra>" + label + "</extra>")
    _base(fig, "Per-class precision, recall and F1", height=340)
    fig.update_layout(barmode="group", hovermode="closest")
    fig.update_xaxes(title_text="Class", type="category")
    fig.update_yaxes(title_text="Score (%)", range=[0, 105])
    return fig


def reliability_diagram(bins: Sequence[CalibrationBin], ece: float) -> go.Figure:
    """Accuracy vs mean confidence per confidence bin, against the diagonal of perfect calibration."""
    used = [b for b in bins if b.count]
    fig = go.Figure()
    fig.add_scatter(x=[0, 100], y=[0, 100], mode="lines", name="perfect calibration",
                    line={"color": "#adb5bd", "dash": "dash"}, hoverinfo="skip")
    fig.add_bar(x=[100 * (b.lower + b.upper) / 2 for b in used], y=[100 * b.accuracy for b in used],
                width=[100 * (b.upper - b.lower) * 0.92 for b in used], name="accuracy in bin",
                marker_color=TRAIN_COLOR, opacity=0.75, customdata=[[b.count, 100 * b.confidence] for b in used],
                hovertemplate="confidence %{customdata[1]:.1f}%: accuracy %{y:.1f}% "
                              "(%{customdata[0]} images)<extra></extra>")
    fig.add_scatter(x=[100 * b.confidence for b in used], y=[100 * b.accuracy for b in used], mode="markers",
                    name="mean confidence", marker={"color": VAL_COLOR, "size": 8}, hoverinfo="skip")
    _base(fig, f"Reliability diagram (ECE {100 * ece:.1f}%)", height=360)
    fig.update_layout(legend={"orientation": "h", "y": -0.22, "yanchor": "top", "x": 0, "xanchor": "left"},
                      margin={"l": 10, "r": 10, "t": 46, "b": 60})
    fig.update_xaxes(title_text="Confidence (%)", range=[0, 100])
    fig.update_yaxes(title_text="Accuracy (%)", range=[0, 105])
    return fig


def class_deltas(deltas: Sequence[ClassDelta], label_a: str, label_b: str) -> go.Figure:
    """Per-class F1 change from run A to run B, in percentage points."""
    values = [100 * d.delta for d in deltas]
    fig = go.Figure(go.Bar(x=[d.name for d in deltas], y=values,
                           marker_color=[TEST_COLOR if v >= 0 else "#e03131" for v in values],
                           customdata=[[100 * d.f1_a, 100 * d.f1_b] for d in deltas],
                           hovertemplate="%{x}: %{customdata[0]:.1f}% → %{customdata[1]:.1f}% "
                                         "(%{y:+.1f} pts)<extra></extra>"))
    _base(fig, f"F1 change per class: {label_b} vs {label_a}", height=320)
    fig.update_xaxes(title_text="Class", type="category")
    fig.update_yaxes(title_text="F1 change (percentage points)", zeroline=True, zerolinecolor="#868e96")
    return fig
