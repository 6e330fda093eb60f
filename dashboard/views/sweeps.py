"""Sweeps: search configurations for accuracy and deployment cost at once; every trial is an ordinary run."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from dashboard.components import state, sweep_figures, widgets
from dashboard.components.sweep_form import setting_label, sweep_form
from engine import jobs
from engine.config import field_spec
from engine.store import ACTIVE, CANCELLED, COMPLETED, FAILED
from engine.store.sweeps import Sweep, SweepStore, SweepTrial
from engine.sweeps import SweepError, SweepSpec, cancel_sweep, resume_sweep, submit_sweep
from engine.sweeps.spec import OBJECTIVES

PICKER_KEY = "sweeps.picker"
CHOSEN_KEY = "sweeps.chosen"  # the run id picked on a figure or in the trials list
EXPORT_PAGE = "views/export.py"
POLL = "2s"


def _start(values: dict) -> None:
    try:
        spec = SweepSpec.from_dict(values)
    except SweepError as error:
        st.session_state["sweeps.error"] = str(error)
        return
    st.session_state.pop("sweeps.error", None)
    sweep = submit_sweep(spec, state.workspace())
    st.session_state[PICKER_KEY] = sweep.id
    st.session_state.pop(CHOSEN_KEY, None)
    st.query_params["sweep"] = sweep.id


def _new_sweep(expanded: bool) -> None:
    with st.expander("New sweep", expanded=expanded, icon=":material/add_circle:"):
        values = sweep_form()
        if error := st.session_state.get("sweeps.error"):
            st.error(error, icon=":material/error:")
        c1, c2, _ = st.columns([1, 1, 3])
        c1.button("Start sweep", key="sweeps.start", type="primary", icon=":material/play_arrow:", width="stretch",
                  on_click=_start, args=(values,))
        c2.download_button("sweep.json", json.dumps(values, indent=2), file_name="sweep.json", key="sweeps.download",
                           icon=":material/download:", width="stretch",
                           help="The same file `python -m engine sweep --config sweep.json` runs.")


def _picker(sweeps: list[Sweep]) -> Sweep:
    by_id = {s.id: s for s in sweeps}
    linked = st.query_params.get("sweep")
    if linked in by_id:
        st.session_state[PICKER_KEY] = linked
    elif st.session_state.get(PICKER_KEY) not in by_id:
        st.session_state[PICKER_KEY] = sweeps[0].id

    def sync() -> None:
        st.query_params["sweep"] = st.session_state[PICKER_KEY]
        st.session_state.pop(CHOSEN_KEY, None)

    st.selectbox("Sweep", list(by_id), key=PICKER_KEY, on_change=sync,
                 format_func=lambda i: f"{by_id[i].label} · {by_id[i].status} · {len(by_id[i].spec['space'])} "
                                       f"settings · {by_id[i].spec['trials']} trials")
    st.query_params["sweep"] = st.session_state[PICKER_KEY]
    return by_id[st.session_state[PICKER_KEY]]


def _controls(sweep: Sweep, trials: list[SweepTrial]) -> None:
    spec, job = sweep.spec, sweep.job
    done = sum(t.finished for t in trials)
    c1, c2, c3 = st.columns([1, 5, 1], vertical_alignment="center")
    with c1:
        widgets.status_badge(sweep.status)
    c2.progress(done / spec["trials"], text=f"{done}/{spec['trials']} trials done"
                + (f" · {job.message}" if job and job.active and job.message else ""))
    workspace = state.workspace()
    if job is not None and job.active:
        c3.button("Cancel", key=f"sweeps.cancel.{sweep.id}", icon=":material/stop_circle:", width="stretch",
                  on_click=cancel_sweep, args=(sweep.id, workspace),
                  help="Queued trials stop at once; running ones stop cooperatively.")
    elif job is not None and job.status in (FAILED, CANCELLED) or done < spec["trials"] and not (job and job.active):
        c3.button("Resume", key=f"sweeps.resume.{sweep.id}", icon=":material/play_arrow:", width="stretch",
                  on_click=resume_sweep, args=(sweep.id, workspace), help="Continue with the remaining budget.")
    goals = ", ".join(f"{OBJECTIVES[n][0]} ({d})" for n, d in spec["objectives"].items())
    parsed = SweepSpec.from_dict(spec)
    st.caption(f"`{sweep.id}` · Objectives: {goals} · sampler {parsed.sampler_name.upper()}"
               + (" with pruning" if parsed.prunes else ""))
    if job is not None and job.status == FAILED:
        st.error(f"**The sweep stopped:** {job.error or 'no reason was recorded'}. Resume continues it; trials "
                 "already done are kept.", icon=":material/error:")


def _pick(event, chart: str) -> None:
    """A click on a figure's point: that point's run becomes the chosen one (once per new click)."""
    points = (event or {}).get("selection", {}).get("points", []) if event else []
    run_id = next((p.get("customdata") for p in points if p.get("customdata")), None)
    if isinstance(run_id, list):
        run_id = run_id[0] if run_id else None
    if run_id and st.session_state.get(f"{chart}.clicked") != run_id:
        st.session_state[CHOSEN_KEY] = run_id
    st.session_state[f"{chart}.clicked"] = run_id


def _chosen(trials: list[SweepTrial], objectives: dict, base_model: str) -> None:
    """The chosen trial: its values, and one click to its run or to exporting it."""
    with_runs = [t for t in trials if t.run_id]
    if not with_runs:
        return
    by_run = {t.run_id: t for t in with_runs}
    default = next((t.run_id for t in with_runs if t.pareto), with_runs[0].run_id)
    if st.session_state.get(CHOSEN_KEY) not in by_run:
        st.session_state[CHOSEN_KEY] = default
    box = st.container(border=True)
    c1, c2, c3 = box.columns([3, 1, 1], vertical_alignment="bottom")
    c1.selectbox("Chosen trial (click a point to pick one)", list(by_run), key=CHOSEN_KEY,
                 format_func=lambda r: f"#{by_run[r].number} · {by_run[r].state}"
                                       + (" · on the front" if by_run[r].pareto else "") + f" · run {r}")
    trial = by_run[st.session_state[CHOSEN_KEY]]
    c2.page_link(widgets.PAGES["runs"], label="Open its run", icon=":material/monitoring:",
                 query_params={"run": trial.run_id}, width="stretch")
    c3.page_link(EXPORT_PAGE, label="Export the chosen one", icon=":material/ios_share:",
                 query_params={"run": trial.run_id}, width="stretch", disabled=trial.state != "completed")
    values = " · ".join(f"{OBJECTIVES[n][0]}: {_fmt(n, trial.values[n])}" for n in objectives if n in trial.values)
    params = " · ".join(f"{k} = {v}" for k, v in _params(trial, base_model).items())
    box.caption(f"{values or trial.error or trial.state} — {params}")


def _fmt(name: str, value: float) -> str:
    return f"{100 * value:.2f}%" if name.endswith("accuracy") else f"{value:,.0f}" if name == "params" else f"{value:.3g}"


def _fmt_param(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _params(trial: SweepTrial, base_model: str) -> dict[str, str]:
    """The trial's settings by label; `n/a` for one its architecture ignores (a width on LeNet-5)."""
    model = trial.params.get("model.name", base_model)
    return {setting_label(k): _fmt_param(v) if field_spec(k).applies_to(model) else "n/a"
            for k, v in trial.params.items()}


def _trials_table(trials: list[SweepTrial], objectives: dict, base_model: str) -> None:
    rows = [{"#": t.number, "Status": t.state, "Front": "★" if t.pareto else "",
             **{OBJECTIVES[n][0]: (_fmt(n, t.values[n]) if n in t.values else None) for n in objectives},
             **_params(t, base_model), "Run": t.run_id,
             "Note": t.error or ""} for t in trials]
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", key="sweeps.trials", placeholder="—")


def _figures(sweep: Sweep, trials: list[SweepTrial]) -> None:
    spec = sweep.spec
    objectives = spec["objectives"]
    names = list(objectives)
    completed = [t for t in trials if t.state == "completed"]
    if not completed:
        st.info("The figures appear once the first trial is done.", icon=":material/hourglass_top:")
        return
    if len(names) > 1:
        x, y = names[0], names[1]
        if len(names) > 2:
            c1, c2 = st.columns(2)
            x = c1.selectbox("Horizontal axis", names, key="sweeps.front.x", format_func=lambda n: OBJECTIVES[n][0])
            y = c2.selectbox("Vertical axis", [n for n in names if n != x], key="sweeps.front.y",
                             format_func=lambda n: OBJECTIVES[n][0])
            st.caption("The front is over all objectives, so some of its points may look dominated in two of them.")
        chart = f"sweeps.front.{sweep.id}"
        event = st.plotly_chart(sweep_figures.pareto_figure(trials, x, y, objectives), key=chart,
                                on_select="rerun", selection_mode="points")
        _pick(event, chart)
    tabs = st.tabs([f"{OBJECTIVES[n][0]} by trial" for n in names] + ["Parallel coordinates"])
    for tab, name in zip(tabs, names):
        with tab:
            chart = f"sweeps.history.{sweep.id}.{name}"
            event = st.plotly_chart(sweep_figures.history_figure(trials, name, objectives[name]), key=chart,
                                    on_select="rerun", selection_mode="points")
            _pick(event, chart)
    with tabs[-1]:
        labels = {k: setting_label(k) for k in spec["space"]}
        st.plotly_chart(sweep_figures.parallel_figure(trials, spec["space"], objectives, labels),
                        key=f"sweeps.parallel.{sweep.id}")


def _live(sweep_id: str) -> None:
    workspace = state.workspace()
    sweeps = SweepStore(workspace)
    first = sweeps.get(sweep_id)
    active = first.job is not None and first.job.status in ACTIVE

    def body() -> None:
        jobs.refresh(workspace)
        sweep = sweeps.get(sweep_id)
        trials = sweeps.trials(sweep_id)
        if active and sweep.status not in ACTIVE:
            st.rerun()  # redraw once without the timer
        _controls(sweep, trials)
        _figures(sweep, trials)
        base_model = SweepSpec.from_dict(sweep.spec).config_for({}).model.name
        _chosen(trials, sweep.spec["objectives"], base_model)
        with st.expander(f"Trials ({len(trials)})", expanded=len(trials) <= 8, icon=":material/table:"):
            _trials_table(trials, sweep.spec["objectives"], base_model)
        if sweep.status == COMPLETED and not any(t.state == "completed" for t in trials):
            st.warning("No trial completed: see each trial's note, and its run's log on Runs.", icon=":material/warning:")

    st.fragment(body, run_every=POLL if active else None)()


widgets.page_header(":material/tune:", "Sweeps", "Search configurations for accuracy and deployment cost at once "
                    "(Optuna). Every trial is an ordinary run on Runs, Evaluate, Explain and Export.")
all_sweeps = SweepStore(state.workspace()).list()
_new_sweep(expanded=not all_sweeps)
if all_sweeps:
    _live(_picker(all_sweeps).id)
else:
    st.info("No sweeps yet: set one up above, or run `python -m engine sweep --config sweep.json`.",
            icon=":material/info:")
