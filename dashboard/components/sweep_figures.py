"""Plotly figures of a sweep: objective vs trial, parallel coordinates, and the Pareto front."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import plotly.graph_objects as go

from engine.store.sweeps import SweepTrial
from engine.sweeps.spec import OBJECTIVES

FRONT = "#d62728"
OTHER = "#7f7f7f"
STATE_COLORS = {"completed": "#1f77b4", "pruned": "#ff7f0e", "failed": "#d62728", "cancelled": "#9467bd",
                "running": "#2ca02c"}


def objective_title(name: str) -> str:
    """An axis title with its unit: `Validation accuracy (%)`, `INT8 latency (ms per image)`."""
    label = OBJECTIVES[name][0]
    return f"{label} (%)" if name.endswith("accuracy") else label


def shown_value(name: str, value: float) -> float:
    """Accuracies as percentages; everything else as measured."""
    return 100 * value if name.endswith("accuracy") else value


def _layout(fig: go.Figure, title: str, x: str, y: str, *, height: int = 380) -> go.Figure:
    fig.update_layout(title=title, height=height, margin={"l": 60, "r": 20, "t": 50, "b": 50},
                      legend={"orientation": "h", "y": -0.2}, hovermode="closest")
    fig.update_xaxes(title_text=x)
    fig.update_yaxes(title_text=y)
    return fig


def history_figure(trials: Sequence[SweepTrial], objective: str, direction: str) -> go.Figure:
    """One objective against the trial number, with the best so far as a step line; click a point to pick its run."""
    fig = go.Figure()
    done = [t for t in trials if objective in t.values]
    fig.add_scatter(x=[t.number for t in done], y=[shown_value(objective, t.values[objective]) for t in done],
                    mode="markers", name="trial", marker={"size": 10, "color": STATE_COLORS["completed"]},
                    customdata=[t.run_id for t in done],
                    hovertemplate="trial %{x}<br>%{y:.4g}<br>run %{customdata}<extra></extra>")
    best, line = None, []
    for t in done:
        value = t.values[objective]
        if best is None or (value > best if direction == "maximize" else value < best):
            best = value
        line.append(shown_value(objective, best))
    if done:
        fig.add_scatter(x=[t.number for t in done], y=line, mode="lines", name="best so far",
                        line={"shape": "hv", "color": FRONT, "width": 2}, hoverinfo="skip")
    stopped = [t for t in trials if t.state in ("pruned", "failed", "cancelled")]
    for state in ("pruned", "failed", "cancelled"):
        chosen = [t for t in stopped if t.state == state]
        if chosen:
            floor = min(line) if line else 0
            fig.add_scatter(x=[t.number for t in chosen], y=[floor] * len(chosen), mode="markers", name=state,
                            marker={"symbol": "x", "size": 9, "color": STATE_COLORS[state]},
                            customdata=[t.run_id for t in chosen],
                            hovertemplate=f"trial %{{x}}: {state}<br>run %{{customdata}}<extra></extra>")
    fig.update_xaxes(dtick=1 if len(trials) <= 20 else None)
    return _layout(fig, f"{OBJECTIVES[objective][0]} by trial ({direction})", "Trial", objective_title(objective))


def parallel_figure(trials: Sequence[SweepTrial], space: Mapping[str, dict], objectives: Mapping[str, str],
                    labels: Mapping[str, str]) -> go.Figure:
    """Parallel coordinates: one axis per searched setting and per objective, one line per completed trial."""
    done = [t for t in trials if t.state == "completed" and all(n in t.values for n in objectives)]
    dimensions = []
    for key, param in space.items():
        values = [t.params.get(key) for t in done]
        if "choices" in param:
            choices = [str(c) for c in param["choices"]]
            dimensions.append({"label": labels.get(key, key), "values": [choices.index(str(v)) for v in values],
                               "tickvals": list(range(len(choices))), "ticktext": choices,
                               "range": [-0.2, len(choices) - 0.8]})
        elif param.get("log"):  # drawn in log scale, labelled in the setting's own units
            low, high = math.log10(param["low"]), math.log10(param["high"])
            ticks = [k + math.log10(m) for k in range(math.floor(low), math.ceil(high) + 1) for m in (1, 3)
                     if low <= k + math.log10(m) <= high]
            dimensions.append({"label": labels.get(key, key), "values": [math.log10(v) for v in values],
                               "range": [low, high], "tickvals": ticks, "ticktext": [f"{10 ** t:.0e}" for t in ticks]})
        else:
            dimensions.append({"label": labels.get(key, key), "values": values,
                               "range": [param["low"], param["high"]]})
    for name in objectives:
        dimensions.append({"label": objective_title(name), "values": [shown_value(name, t.values[name]) for t in done]})
    first = next(iter(objectives))
    colors = [shown_value(first, t.values[first]) for t in done]
    fig = go.Figure(go.Parcoords(
        dimensions=dimensions,
        line={"color": colors, "colorscale": "Viridis", "showscale": True,
              "reversescale": objectives[first] == "minimize",
              "colorbar": {"title": {"text": objective_title(first)}}}))
    fig.update_layout(title=f"Completed trials: settings and objectives (colour: {OBJECTIVES[first][0].lower()})",
                      height=430, margin={"l": 70, "r": 40, "t": 110, "b": 30}, title_y=0.97)
    return fig


def pareto_figure(trials: Sequence[SweepTrial], x: str, y: str, objectives: Mapping[str, str]) -> go.Figure:
    """Two objectives: the non-dominated trials joined and labelled, the dominated ones faded; click a point."""
    done = [t for t in trials if t.state == "completed" and x in t.values and y in t.values]
    front = sorted((t for t in done if t.pareto), key=lambda t: (t.values[x], t.values[y]))
    rest = [t for t in done if not t.pareto]
    fig = go.Figure()

    def points(chosen, **style):
        fig.add_scatter(x=[shown_value(x, t.values[x]) for t in chosen], y=[shown_value(y, t.values[y]) for t in chosen],
                        customdata=[t.run_id for t in chosen], text=[f"#{t.number}" for t in chosen],
                        hovertemplate="trial %{text}<br>" + objective_title(x) + ": %{x:.4g}<br>" + objective_title(y)
                        + ": %{y:.4g}<br>run %{customdata}<extra></extra>", **style)

    # A click selects a point; the others keep their look (Plotly would dim every unselected point).
    points(rest, mode="markers", name="dominated", marker={"size": 9, "color": OTHER, "opacity": 0.35},
           selected={"marker": {"size": 13, "opacity": 0.9}}, unselected={"marker": {"opacity": 0.35}})
    points(front, mode="lines+markers+text", name="Pareto front", textposition="top center",
           selected={"marker": {"size": 17}}, unselected={"marker": {"opacity": 0.9}},
           marker={"size": 13, "color": FRONT, "line": {"width": 1, "color": "white"}},
           line={"color": FRONT, "width": 2, "dash": "dot"})
    arrows = {"maximize": "higher is better", "minimize": "lower is better"}
    return _layout(fig, "Pareto front: no other trial is better in both", f"{objective_title(x)} · {arrows[objectives[x]]}",
                   f"{objective_title(y)} · {arrows[objectives[y]]}", height=440)
