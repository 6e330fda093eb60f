"""Plotly figures for the inspection views: the 2-D embedding map (WebGL scatter) and the health counts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

COLOUR_MODES = ("True class", "Predicted class", "Correct / wrong", "Confidence")
CLASS_PALETTE = ("#3b5bdb", "#f08c00", "#2f9e44", "#e03131", "#7048e8", "#0c8599", "#d6336c", "#5c940d",
                 "#868e96", "#e8590c", "#1971c2", "#9c36b5", "#099268", "#c2255c", "#66a80f", "#495057")
RIGHT_COLOR, WRONG_COLOR = "#2f9e44", "#e03131"
DIM_COLOR = "#ced4da"
SPLIT_SYMBOLS = {"train": "circle", "val": "diamond", "test": "square"}


def embedding_map(xy: np.ndarray, labels: np.ndarray, predicted: np.ndarray, confidence: np.ndarray,
                  class_names: Sequence[str], *, colour: str = COLOUR_MODES[0], highlight: np.ndarray | None = None,
                  hover: Sequence[str] | None = None, height: int = 560) -> go.Figure:
    """The run's images on its 2-D map, one WebGL marker each; box/lasso select them in the dashboard.

    Every point carries its row number as `customdata`, so a selection maps back to the embeddings
    whichever trace it came from.

    Args:
        xy: `(N, 2)` map coordinates.
        labels: `(N,)` given labels; predicted: `(N,)` predicted classes; confidence: `(N,)` in [0, 1].
        class_names: the class names in label order.
        colour: one of `COLOUR_MODES`.
        highlight: `(N,)` bool: these points drawn on top, the others greyed (None: all alike).
        hover: `(N,)` hover text per point (default: the classes and confidence).
        height: the figure's height in pixels.

    Returns:
        A `go.Figure` of `scattergl` traces.
    """
    xy = np.asarray(xy, dtype=np.float32)
    labels, predicted = np.asarray(labels, np.int64), np.asarray(predicted, np.int64)
    confidence = np.asarray(confidence, np.float32)
    names = np.asarray(list(class_names), dtype=object)
    if hover is None:
        hover = [f"true {t} · predicted {p} · {100 * c:.0f}%" for t, p, c in
                 zip(names[labels], names[predicted], confidence)]
    hover = np.asarray(hover, dtype=object)
    rows = np.arange(xy.shape[0])
    shown = np.ones(xy.shape[0], bool) if highlight is None else np.asarray(highlight, bool)
    fig = go.Figure()
    if highlight is not None and (~shown).any():
        _trace(fig, xy, rows[~shown], hover, "others", DIM_COLOR, opacity=0.35, legend=False)
    if colour == "Confidence":
        picked = rows[shown]
        fig.add_trace(go.Scattergl(
            x=xy[picked, 0], y=xy[picked, 1], mode="markers", name="confidence", customdata=picked,
            text=hover[picked], hovertemplate="%{text}<extra></extra>",
            marker={"size": 6, "color": confidence[picked], "colorscale": "Viridis", "cmin": 0, "cmax": 1,
                    "colorbar": {"title": "confidence", "thickness": 12}}))
    elif colour == "Correct / wrong":
        right = labels == predicted
        _trace(fig, xy, rows[shown & right], hover, "correct", RIGHT_COLOR)
        _trace(fig, xy, rows[shown & ~right], hover, "wrong", WRONG_COLOR, size=8)
    else:
        by = labels if colour == "True class" else predicted
        for k, name in enumerate(names):
            _trace(fig, xy, rows[shown & (by == k)], hover, str(name), CLASS_PALETTE[k % len(CLASS_PALETTE)])
    fig.update_layout(height=height, margin={"l": 10, "r": 10, "t": 36, "b": 10}, template="plotly_white",
                      dragmode="lasso", clickmode="event+select", uirevision="map",
                      legend={"orientation": "h", "y": -0.01, "yanchor": "top", "x": 0, "itemsizing": "constant"},
                      xaxis={"visible": False}, yaxis={"visible": False, "scaleanchor": "x"})
    return fig


def _trace(fig: go.Figure, xy: np.ndarray, picked: np.ndarray, hover: np.ndarray, name: str, color: str, *,
           size: int = 6, opacity: float = 0.85, legend: bool = True) -> None:
    fig.add_trace(go.Scattergl(x=xy[picked, 0], y=xy[picked, 1], mode="markers", name=name, customdata=picked,
                               text=hover[picked], hovertemplate="%{text}<extra></extra>", showlegend=legend,
                               marker={"size": size, "color": color, "opacity": opacity}))


def health_counts(per_class: Mapping[str, Mapping[str, int]], class_names: Sequence[str]) -> go.Figure:
    """Images with each health issue, stacked by class (issues with none left out)."""
    issues = [issue for issue, counts in per_class.items() if sum(counts.values())]
    fig = go.Figure()
    for k, name in enumerate(class_names):
        fig.add_trace(go.Bar(x=[issue.replace("_", " ") for issue in issues],
                             y=[per_class[issue].get(name, 0) for issue in issues], name=str(name),
                             marker_color=CLASS_PALETTE[k % len(CLASS_PALETTE)]))
    fig.update_layout(barmode="stack", height=300, margin={"l": 10, "r": 10, "t": 30, "b": 10},
                      template="plotly_white", yaxis_title="images",
                      legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 0})
    return fig
