"""Export: turn a finished run into TFLite / SavedModel / ONNX files, with a parity report and a model card."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pandas as pd
import streamlit as st

from dashboard.components import compress_panel, export_figures, gate, pareto_panel, state, widgets
from engine import export, jobs
from engine.model_card import write_model_card
from engine.store import ACTIVE, Run

PICKER_KEY = "export.run"
PUBLISH_KEY = "export.publish"
DEMO_PAGE = "views/demo.py"


def _form(run: Run, busy: bool) -> None:
    c1, c2, c3 = st.columns([4, 1, 1])
    formats = c1.multiselect("Formats", list(export.FORMATS), default=list(export.DEFAULT_FORMATS),
                             key="export.formats", format_func=export.format_label)
    max_drop = c2.number_input("Max accuracy drop (points)", 0.0, 100.0, export.DEFAULT_MAX_DROP, 0.1,
                               key="export.max_drop", help="An artifact that loses more test accuracy than this "
                               "against the Keras model is marked failed.")
    calibration = c3.number_input("INT8 calibration images", 1, 10_000, export.DEFAULT_CALIBRATION_SIZE, 50,
                                  key="export.calibration", help="Training images used to calibrate INT8 ranges.")
    if st.button("Export and check parity", key="export.start", type="primary", icon=":material/ios_share:",
                 disabled=busy or not formats):
        try:
            export.request_export(state.workspace(), run.id, export.ExportRequest(
                formats=tuple(formats), max_drop=float(max_drop), calibration_size=int(calibration)))
        except export.ExportError as error:
            st.error(str(error), icon=":material/error:")
        else:
            st.rerun()


def _parity(report: export.ExportReport) -> None:
    rows = [{
        "Format": a.label, "Runtime": a.runtime, "Size (KiB)": a.size_bytes / 1024,
        "Accuracy": None if a.accuracy is None else 100 * a.accuracy,
        "Δ vs Keras (points)": None if a.accuracy_drop is None else -a.accuracy_drop,
        "Flipped": None if a.accuracy is None else len(a.flipped),
        "Mean |Δp|": a.mean_abs_prob_diff,
        "Latency 1 img (ms)": a.latency_ms_median, "p95 (ms)": a.latency_ms_p95,
        f"Batch of {a.batch_size} (ms)": a.batch_latency_ms_median,
        "Gate": "✅ passed" if a.passed else "❌ failed",
    } for a in report.artifacts]
    number = st.column_config.NumberColumn
    points = "point" if report.max_drop == 1 else "points"
    st.markdown(f"**Parity on {report.test_size} test images** · Keras model "
                f"{widgets.pct(report.reference_accuracy)} · max drop {report.max_drop:g} {points} · "
                f"INT8 calibrated on {report.calibration_size} training images")
    st.dataframe(pd.DataFrame(rows), key="export.parity", hide_index=True, width="stretch", placeholder="—",
                 column_config={"Size (KiB)": number(format="%.1f"), "Accuracy": number(format="%.2f%%"),
                                "Δ vs Keras (points)": number(format="%+.2f"), "Mean |Δp|": number(format="%.5f"),
                                "Latency 1 img (ms)": number(format="%.2f"), "p95 (ms)": number(format="%.2f"),
                                f"Batch of {export.BATCH_SIZE} (ms)": number(format="%.1f")})
    runtimes = ", ".join(dict.fromkeys(f.runtime for f in export.FORMATS.values()))
    st.caption(f"Each artifact is loaded back in its own runtime ({runtimes}) and run on the test split; Δ and "
               "flipped count against the Keras model; latency is measured on this machine's CPU.")
    left, right = st.columns([3, 2])
    left.plotly_chart(export_figures.size_vs_accuracy(report), key="export.chart", width="stretch")
    with right:
        _gate_notes(report)


def _gate_notes(report: export.ExportReport) -> None:
    """What failed and why, and which test images changed their answer."""
    if all(a.passed and not a.flipped for a in report.artifacts):
        st.success(f"All {len(report.artifacts)} artifacts give the same answers as the Keras model on every test "
                   "image.", icon=":material/check_circle:")
    for a in report.artifacts:
        if a.error:
            st.error(f"**{a.label} failed:** {a.error}. Try: {a.suggestion}.", icon=":material/error:")
        elif not a.passed:
            st.warning(f"**{a.label} lost {a.accuracy_drop:.2f} points** (over the {report.max_drop:g}-point limit). "
                       f"Try: {a.suggestion}.", icon=":material/warning:")
        if a.flipped:
            with st.expander(f"{a.label}: {len(a.flipped)} test images changed their prediction"):
                st.write(", ".join(f"`{i}`" for i in a.flipped[:200]))
                worst = sorted(((d, report.class_names[c]) for c, d in enumerate(a.per_class_delta) if d), reverse=True)
                if worst:
                    st.caption("Per-class accuracy change (points): "
                               + ", ".join(f"{name} {-d:+.1f}" for d, name in worst[:10]))


def demo_link(run_id: str) -> str:
    """The address of a run's read-only demo: absolute when the browser's address is known, else the path."""
    path = f"/demo?run={run_id}"
    here = (st.context.url or "").split("?")[0].split("#")[0].rstrip("/")
    if "://" not in here:
        return path
    scheme, rest = here.split("://", 1)
    parts = rest.split("/")
    base = "/".join(parts[:-1]) if len(parts) > 1 else rest  # drop this page's name, keep any base path
    return f"{scheme}://{base}{path}"


def _share(run: Run) -> None:
    """The demo of this run: a link to open it, and publishing it read-only for people without the password."""
    folder = state.folder(run)
    st.markdown("**Demo**")
    st.page_link(DEMO_PAGE, label="Open the demo of this model", icon=":material/slideshow:",
                 query_params={"run": run.id})
    # The store is the truth (the CLI can publish too): the toggle shows it on every rerun.
    st.session_state[PUBLISH_KEY] = folder.published

    def publish() -> None:
        folder.set_published(bool(st.session_state[PUBLISH_KEY]))

    st.toggle("Publish the demo read-only (opens by link without the password)", key=PUBLISH_KEY,
              on_change=publish)
    no_password = ("" if gate.password() else " No password is set on this server yet (APERTURE_PASSWORD), so "
                   "every page is open to whoever can reach it anyway.")
    if st.session_state[PUBLISH_KEY]:
        st.code(demo_link(run.id), language=None)
        st.caption("Anyone with this link can open this model's demo without the password: upload an image, see "
                   "the answer and where the model looked. Nothing else opens. Turn it off to withdraw the link."
                   + no_password)
    else:
        st.caption("Not published: the demo link asks for the password like every other page."
                   if gate.password() else "Publishing lets people without the password open this model's demo, "
                   "and nothing else." + no_password)


@st.cache_data(max_entries=8, show_spinner=False)
def _zip_folder(folder: str, mtime: float) -> bytes:
    buffer = io.BytesIO()
    root = Path(folder)
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                archive.write(path, Path(root.name) / path.relative_to(root))
    return buffer.getvalue()


def _downloads(run: Run, report: export.ExportReport | None) -> None:
    folder = state.folder(run)
    st.markdown("**Downloads**")
    artifacts = [a for a in (report.artifacts if report else []) if not a.error]
    columns = st.columns(4)
    slot = 0
    for a in artifacts:
        path = folder.resolve(a.path)
        if not path.exists():
            continue
        if path.is_dir():
            data, name, mime = (lambda p=path: _zip_folder(str(p), p.stat().st_mtime)), f"{path.name}.zip", \
                "application/zip"
        else:
            data, name, mime = path.read_bytes, path.name, "application/octet-stream"
        columns[slot % 4].download_button(f"{a.label} · {a.size_bytes / 1024:,.0f} KiB", data=data, file_name=name,
                                          mime=mime, key=f"export.download.{a.format}", icon=":material/download:",
                                          width="stretch", on_click="ignore")
        slot += 1
    metadata = folder.export_metadata_file
    if metadata.exists():
        columns[slot % 4].download_button("Metadata (JSON)", data=metadata.read_bytes, file_name=metadata.name,
                                          mime="application/json", key="export.download.metadata",
                                          icon=":material/data_object:", width="stretch", on_click="ignore")
        slot += 1

    card_md, card_html = folder.model_card("md"), folder.model_card("html")
    if card_md is None or card_html is None:
        write_model_card(state.workspace(), run.id)  # no TensorFlow: reads the run folder only
        card_md, card_html = folder.model_card("md"), folder.model_card("html")
    columns[slot % 4].download_button("Model card (Markdown)", data=card_md, file_name=folder.model_card_file.name,
                                      mime="text/markdown", key="export.download.card_md",
                                      icon=":material/description:", width="stretch", on_click="ignore")
    slot += 1
    columns[slot % 4].download_button("Model card (HTML)", data=card_html, file_name=folder.model_card_html_file.name,
                                      mime="text/html", key="export.download.card_html", icon=":material/description:",
                                      width="stretch", on_click="ignore")
    with st.expander("Model card preview", icon=":material/badge:"):
        st.markdown(card_md)


def main() -> None:
    workspace = state.workspace()
    jobs.refresh(workspace)
    runs = state.finished_runs()
    if not widgets.runs_page(":material/ios_share:", "Export",
                             "Ship a finished run as TFLite, SavedModel, ONNX or OpenVINO — each file checked against "
                             "the Keras model before you trust it — or make it smaller first.", runs,
                             "No finished run to export yet — train one first."):
        return
    run = widgets.run_picker(runs, PICKER_KEY)
    job = workspace.latest_job(run.id, export.EXPORT_JOB)
    busy = job is not None and job.status in ACTIVE
    _form(run, busy)
    widgets.job_progress(workspace, run, export.EXPORT_JOB, "export")
    report = export.read_report(workspace, run.id)
    if report is None:
        if not busy:
            st.info("This run has not been exported yet: pick formats and start.", icon=":material/info:")
    else:
        st.divider()
        _parity(report)
    st.divider()
    pareto_panel.panel(run)
    st.divider()
    compress_panel.panel(run)
    st.divider()
    _share(run)
    st.divider()
    _downloads(run, report)


main()
