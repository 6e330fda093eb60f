"""Plotly figure builders: data in, figure out. Every axis has a title (with units)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from engine.store import EpochMetrics

TRAIN_COLOR = "#3b5bdb"
VAL_COLOR = "#f08c00"
TEST_COLOR = "#2f9e44"
SPLIT_COLORS = {"train": TRAIN_COLOR, "validation": VAL_COLOR, "test": TEST_COLOR}


def _layout(fig: go.Figure, title: str, x_title: str, y_title: str, *, height: int = 320) -> go.Figure:
    fig.update_layout(
        title={"text": title, "x": 0, "xanchor": "left", "font": {"size": 15}},
        height=height, margin={"l": 10, "r": 10, "t": 46, "b": 10},
        template="plotly_white", legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 1,
                                         "xanchor": "right"},
        hovermode="x unified",
    )
    fig.update_xaxes(title_text=x_title, tickformat="d", rangemode="normal")
    fig.update_yaxes(title_text=y_title)
    return fig


def class_counts_bar(split_counts: Mapping[str, Mapping[str, int]]) -> go.Figure:
    """Stacked bars of images per class, one colour per split.

    Args:
        split_counts: `{"train": {class: count}, "validation": {...}, "test": {...}}`; a single
            `{"all": {...}}` draws one colour.
    """
    fig = go.Figure()
    for split, counts in split_counts.items():
        fig.add_bar(x=list(counts.keys()), y=list(counts.values()), name=split,
                    marker_color=SPLIT_COLORS.get(split, TRAIN_COLOR),
                    hovertemplate="%{x}: %{y} images<extra>" + split + "</extra>")
    fig.update_layout(barmode="stack", hovermode="closest", legend_traceorder="normal")
    fig.update_xaxes(type="category")
    return _layout(fig, "Images per class", "Class", "Images (count)")


def _epochs(history: Sequence[EpochMetrics]) -> list[int]:
    return [m.epoch for m in history]


def _epoch_axis(fig: go.Figure, history: Sequence[EpochMetrics]) -> None:
    if len(history) <= 20:  # one tick per epoch while they fit
        fig.update_xaxes(dtick=1)


def _line(fig: go.Figure, x, y, name: str, color: str, *, fmt: str = ".4f") -> None:
    fig.add_scatter(x=x, y=y, name=name, mode="lines+markers", line={"color": color, "width": 2},
                    marker={"size": 6}, hovertemplate="%{y:" + fmt + "}")


def loss_curve(history: Sequence[EpochMetrics]) -> go.Figure:
    """Training vs validation loss per epoch."""
    fig = go.Figure()
    x = _epochs(history)
    _line(fig, x, [m.loss for m in history], "train", TRAIN_COLOR)
    _line(fig, x, [m.val_loss for m in history], "validation", VAL_COLOR)
    _epoch_axis(fig, history)
    return _layout(fig, "Loss", "Epoch", "Cross-entropy loss")


def accuracy_curve(history: Sequence[EpochMetrics], test_accuracy: float | None = None) -> go.Figure:
    """Training vs validation accuracy per epoch (in %), with the test accuracy as a line when known."""
    fig = go.Figure()
    x = _epochs(history)
    _line(fig, x, [None if m.accuracy is None else 100 * m.accuracy for m in history], "train", TRAIN_COLOR,
          fmt=".2f")
    _line(fig, x, [None if m.val_accuracy is None else 100 * m.val_accuracy for m in history], "validation",
          VAL_COLOR, fmt=".2f")
    if test_accuracy is not None:
        fig.add_hline(y=100 * test_accuracy, line={"color": TEST_COLOR, "dash": "dash"},
                      annotation_text=f"test {100 * test_accuracy:.2f}%", annotation_position="bottom left")
    _epoch_axis(fig, history)
    return _layout(fig, "Accuracy", "Epoch", "Accuracy (%)")


def learning_rate_curve(history: Sequence[EpochMetrics]) -> go.Figure:
    """The learning rate used in each epoch."""
    fig = go.Figure()
    _line(fig, _epochs(history), [m.learning_rate for m in history], "learning rate", "#7048e8", fmt=".2e")
    fig.update_yaxes(exponentformat="e", rangemode="tozero")
    fig.update_layout(showlegend=False)
    _epoch_axis(fig, history)
    return _layout(fig, "Learning rate", "Epoch", "Learning rate")


def throughput_curve(history: Sequence[EpochMetrics]) -> go.Figure:
    """Training throughput per epoch."""
    fig = go.Figure()
    _line(fig, _epochs(history), [m.images_per_second for m in history], "images/s", "#0c8599", fmt=".0f")
    fig.update_yaxes(rangemode="tozero")
    fig.update_layout(showlegend=False)
    _epoch_axis(fig, history)
    return _layout(fig, "Throughput", "Epoch", "Images per second")


def top_classes(class_names: Sequence[str], probabilities, *, k: int = 5, title: str | None = None,
                true: int | None = None) -> go.Figure:
    """Horizontal bars of one image's `k` most probable classes (in %), the most probable on top.

    Args:
        class_names: the model's classes in output order.
        probabilities: the image's `(C,)` class probabilities.
        k: how many classes; default 5.
        title: default `Top-k probabilities`.
        true: the image's labelled class, drawn green (the top class is drawn dark when not given).
    """
    order = sorted(range(len(probabilities)), key=lambda i: -float(probabilities[i]))[:k][::-1]
    values = [100 * float(probabilities[i]) for i in order]
    if true is None:
        colors = [TRAIN_COLOR if n == len(order) - 1 else "#a5b4fc" for n in range(len(order))]
    else:
        colors = [TEST_COLOR if i == true else TRAIN_COLOR for i in order]
    fig = go.Figure(go.Bar(x=values, y=[str(class_names[i]) for i in order], orientation="h", marker_color=colors,
                           text=[f"{v:.1f}%" for v in values], textposition="auto",
                           hovertemplate="%{y}: %{x:.2f}%<extra></extra>"))
    fig = _layout(fig, title or f"Top-{len(order)} probabilities", "Probability (%)", "Class",
                  height=80 + 40 * len(order))
    fig.update_xaxes(range=[0, 100], tickformat="d")
    fig.update_yaxes(type="category")
    fig.update_layout(hovermode="closest", showlegend=False)
    return fig


def mosaic(images: np.ndarray, *, columns: int, scale: int = 1, gap: int = 2) -> np.ndarray:
    """Tiles `(N, H, W, 3)` uint8 images into one white-gapped image, `columns` wide, upscaled by `scale`."""
    images = np.asarray(images, dtype=np.uint8)
    if scale > 1:
        images = images.repeat(scale, axis=1).repeat(scale, axis=2)
    n, h, w, c = images.shape
    rows = max(1, -(-n // columns))
    out = np.full((rows * h + (rows - 1) * gap, columns * w + (columns - 1) * gap, c), 255, np.uint8)
    for i, image in enumerate(images):
        r, k = divmod(i, columns)
        out[r * (h + gap):r * (h + gap) + h, k * (w + gap):k * (w + gap) + w] = image
    return out


def display_scale(image_size: int, target: int = 72) -> int:
    """An integer upscale so small images (8-32 px) are visible without blurring."""
    return max(1, target // max(1, image_size))
