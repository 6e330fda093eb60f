"""Plotly figures for the Export page: data in, figure out."""

from __future__ import annotations

import plotly.graph_objects as go

from dashboard.components.figures import _layout
from engine.export import FORMAT_LABELS, ExportReport

PASS_COLOR = "#2f9e44"
FAIL_COLOR = "#e03131"


def size_vs_accuracy(report: ExportReport) -> go.Figure:
    """One marker per exported artifact: file size (KiB, log axis) against test accuracy (%)."""
    fig = go.Figure()
    done = [a for a in report.artifacts if a.accuracy is not None]
    for passed, name, color in ((True, "within the max drop", PASS_COLOR), (False, "over the max drop", FAIL_COLOR)):
        points = [a for a in done if a.passed == passed]
        if not points:
            continue
        fig.add_scatter(
            x=[a.size_bytes / 1024 for a in points], y=[100 * a.accuracy for a in points], mode="markers+text",
            name=name, text=[FORMAT_LABELS.get(a.format, a.format) for a in points], textposition="top center",
            marker={"size": 12, "color": color, "line": {"width": 1, "color": "white"}},
            customdata=[[len(a.flipped), a.latency_ms_median or 0] for a in points],
            hovertemplate="%{text}<br>%{x:,.1f} KiB · %{y:.2f}%<br>%{customdata[0]} flipped · "
                          "%{customdata[1]:.2f} ms<extra></extra>")
    fig.add_hline(y=100 * report.reference_accuracy, line={"color": "#868e96", "dash": "dash"},
                  annotation_text=f"Keras {100 * report.reference_accuracy:.2f}%", annotation_position="bottom right")
    floor = 100 * report.reference_accuracy - report.max_drop
    fig.add_hline(y=floor, line={"color": FAIL_COLOR, "dash": "dot", "width": 1},
                  annotation_text=f"max drop ({report.max_drop:g} points)", annotation_position="bottom left")
    lows = [100 * a.accuracy for a in done] + [floor]
    fig.update_yaxes(range=[min(lows) - 1.5, min(100.5, 100 * report.reference_accuracy + 1.5)])
    fig.update_xaxes(type="log")
    fig = _layout(fig, "Size vs accuracy", "File size (KiB, log scale)", "Test accuracy (%)", height=380)
    fig.update_xaxes(tickformat=",.0f")
    fig.update_layout(hovermode="closest")
    return fig


def top_k_bar(class_names: list[str], probabilities, k: int = 5, *, title: str = "Top predictions") -> go.Figure:
    """Horizontal bars of the `k` most probable classes (in %), the most probable on top."""
    order = sorted(range(len(probabilities)), key=lambda i: -float(probabilities[i]))[:k]
    names = [class_names[i] for i in order][::-1]
    values = [100 * float(probabilities[i]) for i in order][::-1]
    colors = ["#3b5bdb" if i == len(values) - 1 else "#a5b4fc" for i in range(len(values))]
    fig = go.Figure(go.Bar(x=values, y=names, orientation="h", marker_color=colors, text=[f"{v:.1f}%" for v in values],
                           textposition="auto", hovertemplate="%{y}: %{x:.2f}%<extra></extra>"))
    fig = _layout(fig, title, "Probability (%)", "Class", height=80 + 42 * len(values))
    fig.update_xaxes(range=[0, 100], tickformat="d")
    fig.update_yaxes(type="category")
    fig.update_layout(hovermode="closest", showlegend=False)
    return fig
