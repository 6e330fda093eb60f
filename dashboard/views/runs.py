"""Runs: every run in the workspace, and a live view of one (progress, curves, config, logs)."""

from __future__ import annotations

import time

import pandas as pd
import streamlit as st

from dashboard.components import figures, state, widgets
from engine import jobs
from engine.data import BUILTIN_SOURCES
from engine.store import ACTIVE, FAILED, RUNNING, STATUSES, Run, RunNotFound
from engine.store.sweeps import SweepStore

PICKER_KEY = "runs.picker"
LOG_LINES = 20


def _runs_table(runs: list[Run]) -> None:
    c1, c2, c3 = st.columns([2, 2, 3])
    statuses = c1.multiselect("Status", STATUSES, key="runs.filter.status", placeholder="All statuses")
    models = c2.multiselect("Model", sorted({r.model for r in runs}), key="runs.filter.model",
                            placeholder="All models")
    text = c3.text_input("Search", key="runs.filter.text", placeholder="Dataset, name or run id",
                         icon=":material/search:")
    shown = [r for r in runs
             if (not statuses or r.status in statuses) and (not models or r.model in models)
             and (not text or text.lower() in f"{r.dataset} {r.name} {r.id}".lower())]
    if not shown:
        st.info("No run matches these filters.", icon=":material/filter_alt_off:")
        return
    workspace = state.workspace()

    def best_val(run: Run) -> float | None:
        if run.best_val_accuracy is not None or run.epochs_done == 0:
            return run.best_val_accuracy
        return max((m.val_accuracy for m in workspace.epochs(run.id) if m.val_accuracy is not None), default=None)

    rows = [{
        "Run": r.label, "Status": "Damaged" if state.folder(r).damage() else r.status.capitalize(), "Dataset": r.dataset, "Model": r.model,
        "Epochs": f"{r.epochs_done}/{r.epochs_total}",
        "Best val acc": None if best_val(r) is None else 100 * best_val(r),
        "Test acc": None if r.test_accuracy is None else 100 * r.test_accuracy,
        "Duration": widgets.duration(widgets.run_duration(r)),
        "Started": pd.Timestamp.fromtimestamp(r.job.started_at if r.job and r.job.started_at else r.created_at),
        "ID": r.id,
    } for r in shown]
    percent = st.column_config.NumberColumn(format="%.2f%%", width="small")
    st.dataframe(pd.DataFrame(rows), key="runs.table", hide_index=True, width="stretch", placeholder="—",
                 column_config={"Run": st.column_config.TextColumn(width="medium"),
                                "Status": st.column_config.TextColumn(width=100),
                                "Best val acc": percent, "Test acc": percent,
                                "Started": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss"),
                                "ID": st.column_config.TextColumn(width="small")})


def _eta(run: Run, history) -> float | None:
    job = run.job
    if job is None or job.status != RUNNING:
        return None
    remaining = max(0, run.epochs_total - run.epochs_done)
    timed = [m.seconds for m in history if m.seconds]
    if timed:
        return remaining * sum(timed[-3:]) / len(timed[-3:])
    if job.started_at and job.progress > 0.02:
        elapsed = time.time() - job.started_at
        return elapsed * (1 - job.progress) / job.progress
    return None


def _live_view(run_id: str) -> None:
    workspace = state.workspace()
    try:
        run = workspace.get_run(run_id)
    except RunNotFound:
        st.warning("This run was deleted.", icon=":material/delete:")
        return
    active = run.status in ACTIVE

    def body() -> None:
        jobs.refresh(workspace, keep_warm=True)
        try:
            current = workspace.get_run(run_id)
        except RunNotFound:
            st.rerun()
        if active and current.status not in ACTIVE:
            st.rerun()  # finished: redraw the whole page (actions, table) once, without the timer
        _run_details(current)

    st.fragment(body, run_every="2s" if active else None)()


def _run_details(run: Run) -> None:
    workspace = state.workspace()
    history = workspace.epochs(run.id)
    job = run.job
    c1, c2 = st.columns([5, 2], vertical_alignment="center")
    with c1:
        st.subheader(run.label, anchor=False)
        st.caption(f"Run `{run.id}` · created {widgets.timestamp(run.created_at)}"
                   + (f" · cloned from `{run.parent_id}`" if run.parent_id else "")
                   + (f" · ran on {job.host}" if job is not None and job.host and job.pid else ""))
        if trial := SweepStore(workspace).trial_of_run(run.id):  # the sweep tag
            st.page_link("views/sweeps.py", label=f"Trial {trial.number} of sweep {trial.sweep_id} ({trial.state})",
                         icon=":material/tune:", query_params={"sweep": trial.sweep_id})
    with c2:
        widgets.status_badge(run.status)

    if job is not None and job.status in ACTIVE:
        if job.status == RUNNING:
            eta = _eta(run, history)
            text = (f"{(job.message or 'starting').capitalize()} · {job.progress:.0%}"
                    + (f" · about {widgets.duration(eta)} left" if eta is not None else ""))
        else:
            text = "Queued: waits for the running job to finish"
        if job.cancel_requested_at:
            text += " · stopping…"
        st.progress(min(max(job.progress, 0.0), 1.0), text=text)

    last = history[-1] if history else None
    cols = st.columns(6)
    cols[0].metric("Epoch", f"{run.epochs_done}/{run.epochs_total}")
    val_accuracies = [m.val_accuracy for m in history if m.val_accuracy is not None]
    best_val = run.best_val_accuracy if run.best_val_accuracy is not None else max(val_accuracies, default=None)
    cols[1].metric("Best val accuracy", widgets.pct(best_val))
    cols[2].metric("Test accuracy", widgets.pct(run.test_accuracy))
    cols[3].metric("Images/s", "—" if not last or last.images_per_second is None else f"{last.images_per_second:,.0f}")
    cols[4].metric("Device", run.device or "—")
    cols[5].metric("Duration", widgets.duration(widgets.run_duration(run)))

    if damage := state.folder(run).damage():
        st.warning(f"**This run is damaged:** {damage}. Delete it to tidy up.", icon=":material/broken_image:")
    if job is not None and job.status == FAILED:
        st.error(f"**This run failed:** {job.error or 'no reason was recorded'}", icon=":material/error:")
        if job.traceback:
            with st.expander("Traceback", icon=":material/bug_report:"):
                st.code(job.traceback, language="text")
    elif job is not None and job.error and job.status != RUNNING:
        st.info(f"{job.error.capitalize()}", icon=":material/info:")

    if history:
        left, right = st.columns(2)
        left.plotly_chart(figures.loss_curve(history), key=f"runs.loss.{run.id}", width="stretch")
        right.plotly_chart(figures.accuracy_curve(history, run.test_accuracy), key=f"runs.acc.{run.id}",
                           width="stretch")
        left, right = st.columns(2)
        left.plotly_chart(figures.learning_rate_curve(history), key=f"runs.lr.{run.id}", width="stretch")
        right.plotly_chart(figures.throughput_curve(history), key=f"runs.ips.{run.id}", width="stretch")
    elif run.status in ACTIVE:
        st.info("Curves appear after the first epoch (starting TensorFlow takes a few seconds).",
                icon=":material/hourglass_top:")

    left, right = st.columns(2)
    with left:
        st.markdown("**Configuration**")
        if run.config.data.source not in BUILTIN_SOURCES:  # a path, in full and easy to copy (the table cuts it)
            st.code(run.config.data.source, language=None, wrap_lines=True)
        try:
            table = widgets.config_table(run.config)
        except Exception as error:  # noqa: BLE001 - an old or hand-edited config must not break the page
            st.warning(f"The stored config can't be read: {error}")
        else:
            st.dataframe(table, key=f"runs.config.{run.id}", hide_index=True, width="stretch",
                         column_config={"Value": st.column_config.TextColumn(width="large")},
                         height=min(36 * (len(table) + 1) + 2, 560))
        if run.params:
            st.caption(f"{run.params:,} parameters" + (f" · {run.num_classes} classes" if run.num_classes else ""))
        _data_used(run)
    with right:
        st.markdown("**Log (last lines)**")
        tail = jobs.read_log_tail(workspace, run.id, lines=LOG_LINES)
        st.code(tail or "(no output yet)", language="text", wrap_lines=True)


def _data_used(run: Run) -> None:
    """What the run trained on: layout, classes, split sizes and the weights it started from (as `show --json`)."""
    folder = state.folder(run)
    used = folder.data_summary()
    if used is None:
        return
    st.markdown("**Data used**")
    splits = " · ".join(f"{part} {n:,}" for part, n in used["splits"].items())
    st.markdown(f"{used['layout'].replace('_', ' ').capitalize()} · {len(used['class_names'])} classes · {splits}")
    st.caption(", ".join(used["class_names"][:30]) + (" …" if len(used["class_names"]) > 30 else ""))
    for note in used["notes"]:
        st.caption(f":material/info: {note}")
    if (weights := folder.weights_record()) is not None:
        digest = f" · sha256 `{weights['sha256'][:12]}`" if weights.get("sha256") else ""
        st.caption(f":material/hub: {weights.get('base')} base from **{weights.get('source')}** weights{digest}")


CONFIRM_KEY = "runs.confirming"  # ("cancel" | "delete", run id) while a confirmation is shown


def _ask(action: str, run_id: str) -> None:
    st.session_state[CONFIRM_KEY] = (action, run_id)


def _cancel(run: Run) -> None:
    st.session_state.pop(CONFIRM_KEY, None)
    jobs.cancel(run.id, state.workspace())
    st.toast(f"Stopping {run.label}…", icon=":material/stop_circle:")


def _delete(run: Run) -> None:
    st.session_state.pop(CONFIRM_KEY, None)
    workspace = state.workspace()
    if run.status in ACTIVE:
        # Stopping can take seconds; do it off the script thread so every page stays responsive.
        jobs.cancel(run.id, workspace)
        state.start_task(f"delete:{run.id}", jobs.delete, run.id, workspace)
        st.toast(f"Deleting {run.label} once it has stopped…", icon=":material/delete:")
    else:
        jobs.delete(run.id, workspace)
        st.toast(f"Deleted {run.label}", icon=":material/delete:")
    st.query_params.pop("run", None)


def _confirmation(run: Run) -> None:
    """The confirm step for cancel and delete, shown in place under the action buttons."""
    action, run_id = st.session_state.get(CONFIRM_KEY) or (None, None)
    if run_id != run.id or action not in ("cancel", "delete") or (action == "cancel" and run.status not in ACTIVE):
        return
    with st.container(border=True, key="runs.confirm.box"):
        if action == "cancel":
            st.warning(f"**Cancel {run.label}?** It stops after the current step; the best checkpoint so far is "
                       "kept.", icon=":material/stop_circle:")
            yes, no = "Yes, cancel it", "Keep running"
        else:
            st.warning(f"**Delete {run.label}?** The run and all its files (model, predictions, logs) are removed "
                       "for good." + (" It is still running, so it is cancelled first." if run.status in ACTIVE
                                      else ""), icon=":material/delete:")
            yes, no = "Yes, delete it", "Keep it"
        c1, c2, _ = st.columns([1, 1, 4])
        c1.button(yes, key=f"runs.{action}.confirm", type="primary", width="stretch",
                  on_click=_cancel if action == "cancel" else _delete, args=(run,))
        c2.button(no, key=f"runs.{action}.back", width="stretch", on_click=st.session_state.pop,
                  args=(CONFIRM_KEY, None))


def _resume(run: Run) -> None:
    try:
        jobs.resume(run.id, state.workspace())
    except (ValueError, OSError) as error:  # OSError: the backend cannot start jobs now (e.g. Ray unreachable)
        st.toast(str(error), icon=":material/error:")
    else:
        st.toast(f"Resuming {run.label} from epoch {run.epochs_done + 1}", icon=":material/play_circle:")


def _actions(run: Run) -> None:
    active = run.status in ACTIVE
    resumable = not active and jobs.can_resume(run, state.workspace())
    slots = iter(st.columns([1, 1, 1, 3] if active or resumable else [1, 1, 4]))
    if resumable:
        next(slots).button("Resume", key="runs.resume", icon=":material/play_circle:", width="stretch",
                           help=f"Continue from the last checkpoint (epoch {run.epochs_done}), optimizer state "
                           "included", on_click=_resume, args=(run,))
    if active:
        stopping = bool(run.job and run.job.cancel_requested_at)
        next(slots).button("Stopping…" if stopping else "Cancel run", key="runs.cancel", icon=":material/stop_circle:",
                           disabled=stopping, width="stretch", on_click=_ask, args=("cancel", run.id))
    next(slots).button("Delete", key="runs.delete", icon=":material/delete:", width="stretch", on_click=_ask,
                       args=("delete", run.id))
    if next(slots).button("Clone to Train", key="runs.clone", icon=":material/content_copy:", width="stretch"):
        st.session_state[state.TRAIN_PREFILL] = (run.config.to_dict(), run.id)
        st.switch_page(widgets.PAGES["train"])
    _confirmation(run)


def main() -> None:
    widgets.page_header(":material/monitoring:", "Runs",
                        "Every training run in this workspace; pick one to watch it live or look back at it.")
    workspace = state.workspace()
    jobs.refresh(workspace, keep_warm=True)
    runs = workspace.list_runs()
    if not runs:
        st.info("No runs yet — start one on the Train page.", icon=":material/info:")
        st.page_link(widgets.PAGES["train"], label="Go to Train", icon=":material/model_training:")
        return
    # The table polls too while anything is active, so it never disagrees with the live view below.
    any_active = any(r.status in ACTIVE for r in runs)
    st.fragment(lambda: _runs_table(workspace.list_runs()), run_every="2s" if any_active else None)()
    st.divider()
    run = widgets.run_picker(runs, PICKER_KEY)
    _actions(run)
    _live_view(run.id)


main()
