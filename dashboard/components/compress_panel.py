"""The Export page's compression panel: start a distillation or pruning (a child run), follow it, read its report."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard.components import state, widgets
from engine import compress
from engine.config import MODEL_NAMES
from engine.store import Run

PANEL_KEY = "compress"


def _children(run: Run) -> list[Run]:
    return [r for r in state.workspace().list_runs() if r.parent_id == run.id]


def start_form(run: Run) -> None:
    """Method, its options and Start; the compression becomes a new run whose parent is `run`."""
    c1, c2, c3 = st.columns([2, 3, 1])
    method = c1.segmented_control("Method", list(compress.METHODS), default="prune", key=f"{PANEL_KEY}.method",
                                  format_func={"distill": "Distill into a student", "prune": "Prune weights"}.get)
    epochs = c3.number_input("Epochs", 1, 1000, compress.DEFAULT_EPOCHS, key=f"{PANEL_KEY}.epochs")
    if method == "distill":
        student = c2.text_input("Student model", "lenet5" if run.model != "lenet5" else "resnet:width=8",
                                key=f"{PANEL_KEY}.student",
                                help=f"An architecture ({', '.join(MODEL_NAMES)}) with optional settings, e.g. "
                                     "`resnet:width=8,depth=1`. It must have fewer parameters than this run's "
                                     f"{run.params or 0:,}.")
        d1, d2 = st.columns(2)
        temperature = d1.number_input("Temperature", 0.5, 100.0, compress.DEFAULT_TEMPERATURE, 0.5,
                                      key=f"{PANEL_KEY}.temperature",
                                      help="How much the teacher's answers are softened: higher shows the student "
                                           "more of how the teacher ranks the wrong classes.")
        alpha = d2.slider("Weight of the true labels (α)", 0.0, 1.0, compress.DEFAULT_ALPHA, 0.05,
                          key=f"{PANEL_KEY}.alpha", help="The rest of the loss follows the teacher.")
        request = compress.CompressRequest(method="distill", student=student.strip(), temperature=float(temperature),
                                           alpha=float(alpha), epochs=int(epochs))
    else:
        sparsity = c2.slider("Sparsity (share of weights set to zero)", 0.05, 0.95, compress.DEFAULT_SPARSITY, 0.05,
                             key=f"{PANEL_KEY}.sparsity")
        request = compress.CompressRequest(method="prune", sparsity=float(sparsity), epochs=int(epochs))
    if st.button("Compress into a new run", key=f"{PANEL_KEY}.start", type="primary", icon=":material/compress:",
                 disabled=method is None):
        try:
            # The student's size is checked by the job (measuring it here would load TensorFlow into the page).
            child = compress.request_compress(state.workspace(), run.id, request, measure_student=False)
        except compress.CompressError as error:
            st.error(str(error), icon=":material/error:")
        else:
            st.toast(f"Started run {child.id}: {request.describe()}", icon=":material/compress:")
            st.rerun()


def progress(run: Run) -> None:
    """Live progress (with Cancel) of this run's compressions still going, and the outcome of the latest one."""
    children = _children(run)
    active = [child for child in children if child.status in ("queued", "running")]
    for child in active or children[:1]:
        st.caption(f"Run `{child.id}` · {child.label}")
        widgets.job_progress(state.workspace(), child, compress.COMPRESS_JOB, "compression", show_completed=True)


def report(run: Run) -> None:
    """For a compressed run: what it was made from and how it compares."""
    result = compress.read_compress_report(state.workspace(), run.id)
    if not result:
        return
    drop = result.get("accuracy_drop_points")
    line = (f"**{result['label'].capitalize()}** from run `{result['parent_id']}` · test accuracy "
            f"{widgets.pct(result['test_accuracy'])} (parent {widgets.pct(result.get('parent_test_accuracy'))}"
            + ("" if drop is None else f", {-drop:+.2f} points") + ")")
    st.markdown(line)
    if result["method"] == "distill":
        names = {"student": "Student, distilled", "alone": "Student, trained alone", "teacher": "Teacher"}
        rows = [{"Model": names[k], "Accuracy": 100 * m["accuracy"], "Parameters": m["params"],
                 "Size (KiB)": m["size_bytes"] / 1024, "Latency (ms)": m["latency_ms"]}
                for k, m in result["models"].items()]
        st.caption(f"Same data, epochs and seed for both students; distillation is worth "
                   f"{result['gain_points']:+.2f} points here.")
    else:
        sizes = result["gzip_sizes"]
        st.caption(f"Measured sparsity {result['sparsity']:.1%} of the prunable weights; gzip-compressed, the "
                   f".keras is {sizes['keras']['ratio']:.2f}× and the .tflite {sizes['tflite']['ratio']:.2f}× the "
                   "parent's.")
        rows = [{"Layer": name, "Sparsity": 100 * layer["sparsity"], "Weights": layer["weights"]}
                for name, layer in result["layers"].items()]
    number = st.column_config.NumberColumn
    st.dataframe(pd.DataFrame(rows), key=f"{PANEL_KEY}.report", hide_index=True, width="stretch",
                 column_config={"Accuracy": number(format="%.2f%%"), "Size (KiB)": number(format="%.1f"),
                                "Latency (ms)": number(format="%.2f"), "Sparsity": number(format="%.1f%%"),
                                "Parameters": number(format="%d"), "Weights": number(format="%d")})


def panel(run: Run) -> None:
    """The whole section: a compressed run's report, then starting and following compressions of this run."""
    st.markdown("**Make it smaller**")
    report(run)
    st.caption("Distillation trains a smaller student on this run's answers; pruning zeroes the smallest weights "
               "while fine-tuning. Each makes a new run (a child of this one) with its own Evaluate and Export.")
    start_form(run)
    progress(run)
