"""The Export page's Pareto view: every checked artifact of a run and its compressed runs, and picking one to ship."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard.components import export_figures, state, widgets
from engine.compress.pareto import ParetoPoint, family_points
from engine.export import format_label
from engine.store import Run

PICK_KEY = "pareto.pick"
DEMO_PAGE = "views/demo.py"


def _table(points: list[ParetoPoint]) -> pd.DataFrame:
    return pd.DataFrame([{
        "Front": "★" if p.optimal else "", "Model": f"{p.method} ·{p.run_id[-4:]}", "Format": format_label(p.format),
        "Accuracy": 100 * p.accuracy, "ms": p.latency_ms, "KiB": p.size_bytes / 1024,
    } for p in sorted(points, key=lambda p: (not p.optimal, p.latency_ms))])


def panel(run: Run) -> None:
    """The chart and table beside it, then a pick of one artifact to download and its run to publish."""
    points = family_points(state.workspace(), run.id)
    st.markdown("**Accuracy, latency and size across this run and its compressed runs**")
    if len(points) < 2:
        st.info("Export this run and a compressed child (below) to compare them here: every checked artifact "
                "becomes a point.", icon=":material/scatter_plot:")
        return
    left, right = st.columns(2)
    left.plotly_chart(export_figures.pareto(points), key="pareto.chart", width="stretch")
    number = st.column_config.NumberColumn
    right.dataframe(_table(points), key="pareto.table", hide_index=True, width="stretch", height=400,
                    column_config={"Front": st.column_config.TextColumn("★", width=28, help="On the Pareto front: "
                                   "nothing else is both at least as accurate and at least as fast."),
                                   "Model": st.column_config.TextColumn(width=96, help="How it was made, and the end "
                                                                        "of its run's id"),
                                   "Format": st.column_config.TextColumn(width=150),
                                   "Accuracy": number("Acc.", format="%.2f%%", width=58),
                                   "ms": number(format="%.2f", width=46, help="Median latency of one image"),
                                   "KiB": number(format="%.0f", width=46, help="File size")})
    front = [p for p in points if p.optimal]
    st.caption(f"{len(points)} artifacts from {len({p.run_id for p in points})} runs; the {len(front)} joined and "
               "labelled are the Pareto front. Latency: one image at a time on this machine's CPU, median.")
    _pick(sorted(points, key=lambda p: (not p.optimal, p.latency_ms)))


def _pick(points: list[ParetoPoint]) -> None:
    options = {f"{p.run_id}/{p.format}": p for p in points}
    c1, c2, c3 = st.columns([3, 1, 1], vertical_alignment="bottom")
    chosen = c1.selectbox("Ship one", list(options), key=PICK_KEY,
                          format_func=lambda k: (f"{'★ ' if options[k].optimal else ''}{options[k].label} · "
                                                 f"{widgets.pct(options[k].accuracy)} · "
                                                 f"{options[k].latency_ms:.2f} ms · run {options[k].run_id}"))
    point = options[chosen]
    folder = state.folder(point.run_id)
    path = folder.resolve(point.path)
    if path.is_file():
        c2.download_button("Download", data=path.read_bytes, file_name=path.name, key="pareto.download",
                           icon=":material/download:", width="stretch", on_click="ignore")
    else:
        c2.caption(f"`{point.path}/` — in Downloads of run {point.run_id}")
    published = folder.published
    if c3.button("Withdraw its demo" if published else "Publish its demo", key="pareto.publish", width="stretch",
                 icon=":material/public:"):
        folder.set_published(not published)
        st.rerun()
    st.page_link(DEMO_PAGE, label=f"Open the demo of run {point.run_id}" + (" (published)" if published else ""),
                 icon=":material/slideshow:", query_params={"run": point.run_id})
