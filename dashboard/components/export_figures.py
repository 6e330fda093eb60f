"""Plotly figures for the Export page: data in, figure out."""

from __future__ import annotations

import plotly.graph_objects as go

from dashboard.components.figures import _layout
from engine.export import ExportReport, format_label

PASS_COLOR = "#2f9e44"
FAIL_COLOR = "#e03131"
PALETTE = ("#3b5bdb", "#0c8599", "#2f9e44", "#f08c00", "#e8590c", "#7048e8", "#c2255c", "#495057")


def size_vs_accuracy(report: ExportReport) -> go.Figure:
    """One marker per exported artifact: file size (KiB, log axis) against test accuracy (%)."""
    fig = go.Figure()
    done = [a for a in report.artifacts if a.accuracy is not None]
    for i, a in enumerate(done):
        # One legend entry per format (labels on the markers would collide: most formats share an accuracy).
        fig.add_scatter(
            x=[a.size_bytes / 1024], y=[100 * a.accuracy], mode="markers", name=format_label(a.format),
            marker={"size": 13, "color": PALETTE[i % len(PALETTE)], "symbol": "circle" if a.passed else "x",
                    "line": {"width": 1, "color": "white"}},
            customdata=[[len(a.flipped), a.latency_ms_median or 0, "passed" if a.passed else "failed"]],
            hovertemplate="%{fullData.name}<br>%{x:,.1f} KiB · %{y:.2f}%<br>%{customdata[0]} flipped · "
                          "%{customdata[1]:.2f} ms · %{customdata[2]}<extra></extra>")
    fig.add_hline(y=100 * report.reference_accuracy, line={"color": "#868e96", "dash": "dash"},
                  annotation_text=f"Keras {100 * report.reference_accuracy:.2f}%", annotation_position="bottom right")
    floor = 100 * report.reference_accuracy - report.max_drop
    fig.add_hline(y=floor, line={"color": FAIL_COLOR, "dash": "dot", "width": 1},
                  annotation_text=f"max drop ({report.max_drop:g} point{'' if report.max_drop == 1 else 's'})",
                  annotation_position="bottom left")
    lows = [100 * a.accuracy for a in done] + [floor]
    fig.update_yaxes(range=[min(lows) - 1.5, min(100.5, 100 * report.reference_accuracy + 1.5)])
    fig.update_xaxes(type="log")
    fig = _layout(fig, "Size vs accuracy", "File size (KiB, log scale)", "Test accuracy (%)", height=400)
    fig.update_xaxes(tickformat=",.0f", dtick="D2")
    fig.update_layout(hovermode="closest", legend={"orientation": "v", "y": 0.5, "yanchor": "middle", "x": 1.02,
                                                   "xanchor": "left"})
    return fig



METHOD_COLORS = {"original": "#3b5bdb", "distilled": "#f08c00", "pruned": "#0c8599"}
FRONT_COLOR = "#495057"


def pareto(points) -> go.Figure:
    """Accuracy against median single-image latency for every artifact of a run family; marker area ~ file size.

    Args:
        points: `engine.compress.pareto.ParetoPoint`s, `optimal` set on the non-dominated ones: those are
            joined by a line and labelled.
    """
    fig = go.Figure()
    largest = max((p.size_bytes for p in points), default=1) or 1
    front = sorted((p for p in points if p.optimal), key=lambda p: p.latency_ms)
    if len(front) > 1:
        fig.add_scatter(x=[p.latency_ms for p in front], y=[100 * p.accuracy for p in front], mode="lines",
                        name="Pareto front", line={"color": FRONT_COLOR, "dash": "dot", "width": 1.5,
                                                   "shape": "hv"}, hoverinfo="skip")
    for method in dict.fromkeys(p.method for p in points):
        group = [p for p in points if p.method == method]
        fig.add_scatter(
            x=[p.latency_ms for p in group], y=[100 * p.accuracy for p in group], name=method,
            mode="markers+text",
            text=[format_label(p.format) if p.optimal else "" for p in group], textposition="top center",
            textfont={"size": 11, "color": "#343a40"},
            marker={"size": [10 + 26 * (p.size_bytes / largest) ** 0.5 for p in group], "sizemode": "diameter",
                    "color": METHOD_COLORS.get(method, PALETTE[-1]), "opacity": 0.75,
                    "symbol": ["circle" if p.passed else "x" for p in group],
                    "line": {"width": [2.5 if p.optimal else 0.5 for p in group], "color": FRONT_COLOR}},
            customdata=[[format_label(p.format), p.size_bytes / 1024, p.run_id, "on the front" if p.optimal else
                         "dominated"] for p in group],
            hovertemplate="%{customdata[0]} (" + method + ")<br>%{y:.2f}% · %{x:.2f} ms · %{customdata[1]:,.1f} KiB"
                          "<br>run %{customdata[2]} · %{customdata[3]}<extra></extra>")
    if points:
        accuracies = [100 * p.accuracy for p in points]
        pad = max(1.0, 0.15 * (max(accuracies) - min(accuracies)))
        fig.update_yaxes(range=[min(accuracies) - pad, min(100.5, max(accuracies) + pad)])
    fig.update_xaxes(type="log")
    fig = _layout(fig, "Accuracy vs latency (marker area: file size)", "Median latency per image (ms, log scale)",
                  "Test accuracy (%)", height=440)
    fig.update_xaxes(tickformat=".2~f")
    # The legend under the plot: at the top it runs into the title.
    fig.update_layout(hovermode="closest", margin={"b": 70},
                      legend={"orientation": "h", "y": -0.2, "yanchor": "top", "x": 0, "xanchor": "left"})
    return fig
