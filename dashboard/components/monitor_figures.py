"""The Monitor page's figures, from `engine.serve.monitor.monitor_report`'s dict: data in, figure out."""

from __future__ import annotations

import datetime as dt
import math

import plotly.graph_objects as go

from dashboard.components.figures import TEST_COLOR, TRAIN_COLOR, _layout

SERVED_COLOR = TRAIN_COLOR
SOURCE_COLORS = {"api": "#3b5bdb", "demo": "#f08c00", "explain": "#7048e8"}
BAND_COLORS = ("rgba(47, 158, 68, 0.10)", "rgba(240, 140, 0, 0.12)", "rgba(224, 49, 49, 0.12)")


def _time(epoch_seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch_seconds)


def requests_over_time(report: dict) -> go.Figure:
    """Stacked bars of predictions per time bucket, one colour per source."""
    timeline = report["timeline"]
    fig = go.Figure()
    for source in sorted({b["source"] for b in timeline["buckets"]}):
        buckets = [b for b in timeline["buckets"] if b["source"] == source]
        fig.add_bar(x=[_time(b["start"]) for b in buckets], y=[b["count"] for b in buckets], name=source,
                    marker_color=SOURCE_COLORS.get(source, SERVED_COLOR),
                    hovertemplate="%{y} predictions<extra>" + source + "</extra>")
    width = timeline["bucket_seconds"] or 1
    fig.update_layout(barmode="stack", bargap=0.05)
    fig = _layout(fig, f"Predictions over time (per {width:.3g} s)", "Time", "Predictions (count)")
    fig.update_xaxes(tickformat=None)
    return fig


def latency_by_format(report: dict) -> go.Figure:
    """p50 / p95 / p99 latency per format, grouped bars."""
    fig = go.Figure()
    formats = list(report["latency"])
    for quantile, colour in (("p50", "#74c0fc"), ("p95", "#3b5bdb"), ("p99", "#1c2f8a")):
        fig.add_bar(x=formats, y=[report["latency"][f][f"{quantile}_ms"] for f in formats], name=quantile,
                    marker_color=colour, hovertemplate="%{x} " + quantile + ": %{y:.2f} ms<extra></extra>")
    fig.update_layout(barmode="group", hovermode="closest")
    fig.update_xaxes(type="category")
    return _layout(fig, "Latency per format", "Format", "Arrival to answer (ms)")


def _served_vs_test(x: list, served: list | None, test: list | None, hover: str) -> go.Figure:
    """Grouped bars of served shares beside the test set's (shares in 0..1, drawn as %)."""
    fig = go.Figure()
    for name, shares, colour in (("served", served, SERVED_COLOR), ("test set", test, TEST_COLOR)):
        if shares is not None:
            fig.add_bar(x=x, y=[100 * v for v in shares], name=name, marker_color=colour,
                        hovertemplate=hover + "<extra>" + name + "</extra>")
    fig.update_layout(barmode="group", hovermode="closest")
    fig.update_xaxes(type="category")
    return fig


def class_mix(report: dict) -> go.Figure:
    """The served share of each predicted class beside the test set's."""
    mix = report["class_mix"]
    fig = _served_vs_test(report["class_names"], mix["served"], mix["test"], "%{x}: %{y:.1f}% of predictions")
    return _layout(fig, "Predicted-class mix", "Predicted class", "Share of predictions (%)")


def confidence_histogram(report: dict) -> go.Figure:
    """Confidence (top-1 probability) histogram of served predictions beside the test set's."""
    confidence = report["confidence"]
    edges = confidence["bins"]
    labels = [f"{a:.1f}–{b:.1f}" for a, b in zip(edges[:-1], edges[1:])]
    fig = _served_vs_test(labels, confidence["served"], confidence["test"], "confidence %{x}: %{y:.1f}%")
    return _layout(fig, "Confidence", "Top-1 probability", "Share of predictions (%)")


def drift_over_windows(report: dict) -> go.Figure:
    """PSI of the class mix and of confidence per window, over the 0.1 / 0.25 bands (log scale: PSI spans decades)."""
    windows = report["drift"]["windows"]
    x = [_time(w["end_at"]) for w in windows]
    values = [v for w in windows for v in (w["psi_class_mix"], w["psi_confidence"])]
    top = max([0.5] + [2 * v for v in values])
    bottom = min([0.01] + [v / 2 for v in values if v > 0])
    fig = go.Figure()
    for (low, high), colour, words in zip(((bottom, 0.1), (0.1, 0.25), (0.25, top)), BAND_COLORS,
                                          ("no significant shift", "moderate shift", "significant shift")):
        fig.add_hrect(y0=low, y1=high, fillcolor=colour, line_width=0, layer="below")
        fig.add_annotation(text=words, xref="paper", x=0.005, xanchor="left", yref="y",
                           y=math.log10(math.sqrt(low * high)), showarrow=False, font={"size": 11, "color": "#555"})
    fig.add_scatter(x=x, y=[max(w["psi_class_mix"], bottom) for w in windows], name="class mix", mode="lines+markers",
                    line={"color": SERVED_COLOR, "width": 2}, hovertemplate="class mix PSI %{y:.3f}<extra></extra>")
    fig.add_scatter(x=x, y=[max(w["psi_confidence"], bottom) for w in windows], name="confidence", mode="lines+markers",
                    line={"color": "#e8590c", "width": 2}, hovertemplate="confidence PSI %{y:.3f}<extra></extra>")
    fig = _layout(fig, f"Drift against the test set (PSI per {report['drift']['window']} predictions)",
                  "End of window", "Population stability index")
    fig.update_xaxes(tickformat=None)
    ticks = [t for t in (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25) if bottom <= t <= top]
    fig.update_yaxes(type="log", range=[math.log10(bottom), math.log10(top)], tickvals=ticks,
                     ticktext=[f"{t:g}" for t in ticks])
    return fig
