"""Monitor: what the model server has answered for a run — traffic, latency, drift against the test set, live
accuracy — and the least confident recent inputs, each one click from Explain.

Reads the prediction log (`engine.serve.monitor`); no TensorFlow. While predictions keep arriving
the page refreshes itself every few seconds.
"""

from __future__ import annotations

import io
import time

import numpy as np
import streamlit as st
from PIL import Image

from dashboard.components import model_server, monitor_figures, state, widgets
from dashboard.components.gallery import upscale
from engine.serve.monitor import monitor_report
from engine.serve.server import DEFAULT_PORT
from engine.store import PredictionLog, Run

RUN_KEY = "monitor.run"
LIVE_SECONDS = 60  # keep polling while the last prediction is this recent
THUMB_SIDE = 96


def _report(run: Run) -> dict:
    return monitor_report(state.workspace(), run.id)


def _explain(run_id: str, log_id: str) -> None:
    st.switch_page("views/explain.py", query_params={"run": run_id, "logged": log_id})


def _how_to_call(run: Run) -> None:
    with st.expander("Send it traffic: the model server's REST API (as TensorFlow Serving's)", icon=":material/api:"):
        st.markdown(f"Start a server over this workspace with `python -m engine serve` (port {DEFAULT_PORT}); the "
                    "Demo and Explain pages use the dashboard's own. Then, from any TF Serving client:")
        st.code(f"curl http://127.0.0.1:{DEFAULT_PORT}/v1/models/{run.id}/metadata\n"
                f"curl -X POST --data-binary @photo.jpg http://127.0.0.1:{DEFAULT_PORT}/v1/models/{run.id}:classify_image\n"
                f"curl -X POST -d '{{\"log_id\": \"…\", \"label\": \"…\"}}' "
                f"http://127.0.0.1:{DEFAULT_PORT}/v1/models/{run.id}/feedback", language="bash")


def _headline(report: dict) -> None:
    live, latest = report["live_accuracy"], report["drift"]["latest"]
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Predictions logged", f"{report['requests']:,}",
              help="Every prediction the model server answered for this run (the newest 20,000 are kept).")
    keras = report["latency"].get("keras") or next(iter(report["latency"].values()))
    c2.metric("Latency p50 / p99", f"{keras['p50_ms']:.1f} / {keras['p99_ms']:.1f} ms",
              help="From arrival at the server to the answer, for the Keras model (or the first format served).")
    c3.metric("Live accuracy", widgets.pct(live["accuracy"], 1) if live["accuracy"] is not None else "—",
              f"on {live['with_feedback']} with feedback" if live["with_feedback"] else "no feedback yet",
              delta_color="off", delta_arrow="off")
    if latest:
        worst = max(latest["psi_class_mix"], latest["psi_confidence"])
        c4.metric("Drift PSI (latest window)", f"{worst:.2f}",
                  latest["level"],
                  delta_color="off", delta_arrow="off",
                  help=f"Population stability index of the last {latest['requests']} predictions against the test "
                       f"set (class mix {latest['psi_class_mix']:.2f}, confidence {latest['psi_confidence']:.2f}; the "
                       "larger counts): below 0.1 no significant shift, 0.1–0.25 a moderate shift, above 0.25 a "
                       "significant shift.")
    else:
        c4.metric("Drift", "—", report["drift"]["note"] or f"after {report['drift']['window']} predictions",
                  delta_color="off", delta_arrow="off")


def _least_confident(run: Run, report: dict) -> None:
    rows = report["least_confident"]
    st.subheader("Least confident recent inputs")
    if not rows:
        st.caption("No recent input with its image kept yet.")
        return
    log = PredictionLog(state.workspace())
    columns = st.columns(6)
    for i, row in enumerate(rows):
        with columns[i % 6], st.container(border=True):
            image = log.get(row["log_id"]).image
            if image is not None:
                pixels = np.asarray(Image.open(io.BytesIO(image)).convert("RGB"))
                st.image(upscale(pixels, THUMB_SIDE), width=THUMB_SIDE)
            truth = f" · true {row['feedback']}" if row["feedback"] else ""
            st.caption(f"**{row['predicted']}** {100 * row['probability']:.0f}% · {row['format']} · "
                       f"{row['source']}{truth}")
            if st.button("Explain", key=f"monitor.explain.{row['log_id']}", icon=":material/visibility:",
                         width="stretch"):
                _explain(run.id, row["log_id"])


def _dashboard(run: Run) -> None:
    report = _report(run)
    model_server.show_restart_note()
    if not report["requests"]:
        st.info("No predictions logged for this run yet. Try it on the Demo page, or call the model server.",
                icon=":material/sensors_off:")
        _how_to_call(run)
        return
    _headline(report)
    left, right = st.columns(2)
    with left:
        st.plotly_chart(monitor_figures.requests_over_time(report), key="monitor.requests", width="stretch")
        st.plotly_chart(monitor_figures.class_mix(report), key="monitor.mix", width="stretch")
    with right:
        st.plotly_chart(monitor_figures.latency_by_format(report), key="monitor.latency", width="stretch")
        st.plotly_chart(monitor_figures.confidence_histogram(report), key="monitor.confidence", width="stretch")
    if report["drift"]["windows"]:
        st.plotly_chart(monitor_figures.drift_over_windows(report), key="monitor.drift", width="stretch")
    else:
        st.caption(f"Drift: {report['drift']['note'] or 'needs ' + str(report['drift']['window']) + ' predictions'}.")
    _least_confident(run, report)
    _how_to_call(run)
    live = time.time() - (report["last_at"] or 0) < LIVE_SECONDS
    st.caption(f"Last prediction {widgets.timestamp(report['last_at'])}"
               + (" · refreshing every 3 s while traffic arrives" if live else ""))


def main() -> None:
    runs = state.finished_runs()
    if not widgets.runs_page(":material/query_stats:", "Monitor",
                             "What the served model has seen: traffic, latency, drift against the test set and live "
                             "accuracy.", runs, "No finished run to monitor yet — train one first."):
        return
    run = widgets.run_picker(runs, RUN_KEY)
    report_time = PredictionLog(state.workspace()).recent(run.id, limit=1)
    live = bool(report_time) and time.time() - report_time[-1].created_at < LIVE_SECONDS
    st.fragment(_dashboard, run_every="3s" if live else None)(run)


main()
