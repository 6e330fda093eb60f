"""The fix-and-retrain loop: selected images → Relabel / Exclude / Mark checked → a new dataset version → retrain.

Fixes gather in a basket per data source (session state) from every tab that shows images (Mistakes,
Label errors, Map, Duplicates, Health); "Save as a dataset version" writes them as an overlay
(`engine.data.versions`: the source files are never touched), shows its diff with a CSV download, and
"Retrain with these fixes" opens the Train form cloned from the run onto the new version (the Runs
page's Clone path).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import streamlit as st

from dashboard.components import state, widgets
from engine.data import DatasetError, ImageSet
from engine.data import versions as dv
from engine.store import Run

ACTION_LABELS = {dv.RELABEL: "Relabel", dv.EXCLUDE: "Exclude", dv.CHECKED: "Checked"}


@dataclass(frozen=True, eq=False)
class FixTarget:
    """What fixes apply to.

    Args:
        key: session-state prefix of the basket (one per data source).
        parent: the data source the fixes change (a source string or `version:N`).
        images: that source as loaded: its ids, labels and classes check the fixes.
        settings: the split settings a new version pins (`engine.data.versions.SPLIT_SETTINGS`).
        run: the run the fixes were found with (Retrain clones it); None on the Data page.
    """

    key: str
    parent: str
    images: ImageSet
    settings: dict
    run: Run | None = None


def for_run(run: Run) -> FixTarget | None:
    """The fix target of a run's own data (None, with the reason shown, when it no longer loads)."""
    data = run.config.data
    try:
        images = state.run_dataset(run)
    except (DatasetError, OSError) as error:
        st.caption(f"Fixes unavailable: the run's data does not load ({error}).")
        return None
    return FixTarget(f"loop.{data.source}", data.source, images, dv.settings_of(data), run)


def _basket(target: FixTarget) -> dict[str, tuple[str, str]]:
    return st.session_state.setdefault(f"{target.key}.basket", {})


def add(target: FixTarget, ids: list[str], action: str, label_key: str | None = None,
        suggestions: dict[str, str] | None = None) -> None:
    """Puts `ids` in the basket with `action` (a relabel to the class in `label_key`'s widget, or each one's
    `suggestions` class); a later fix of an image replaces its earlier one."""
    basket = _basket(target)
    label = st.session_state.get(label_key, "") if label_key else ""
    for sample_id in ids:
        new_label = (suggestions or {}).get(sample_id, label) if action == dv.RELABEL else ""
        basket[str(sample_id)] = (action, new_label)
    st.session_state[f"{target.key}.added"] = (len(ids), ACTION_LABELS[action])


def actions(target: FixTarget | None, ids, key: str, *, suggestions: dict[str, str] | None = None,
            what: str = "selected") -> None:
    """The action bar for `ids` (the images chosen on a tab): Relabel to a class, Exclude, Mark as checked.

    Args:
        target: the data the fixes apply to (None: nothing drawn).
        ids: the image ids the buttons act on.
        key: widget-key prefix for this tab.
        suggestions: id → class: adds "Accept the suggestions" (relabel each to its own class).
        what: how the caption calls the images (`selected`, `on this page`, ...).
    """
    if target is None:
        return
    ids = [str(i) for i in ids]
    names = target.images.class_names
    c0, c1, c2, c3, c4 = st.columns([2, 2, 1.1, 1.1, 1.5], vertical_alignment="bottom")
    c0.markdown(f"**{len(ids)} image{'s' * (len(ids) != 1)} {what}**")
    c1.selectbox("Relabel to", names, key=f"{key}.to")
    off = not ids
    c2.button("Relabel", key=f"{key}.relabel", icon=":material/label:", width="stretch", disabled=off,
              on_click=add, args=(target, ids, dv.RELABEL, f"{key}.to"))
    c3.button("Exclude", key=f"{key}.exclude", icon=":material/block:", width="stretch", disabled=off,
              on_click=add, args=(target, ids, dv.EXCLUDE))
    c4.button("Mark checked", key=f"{key}.checked", icon=":material/task_alt:", width="stretch", disabled=off,
              on_click=add, args=(target, ids, dv.CHECKED))
    if suggestions:
        chosen = [i for i in ids if i in suggestions]
        st.button(f"Accept the model's suggestion for these {len(chosen)}", key=f"{key}.accept",
                  icon=":material/done_all:", disabled=not chosen, on_click=add,
                  args=(target, chosen, dv.RELABEL, None, suggestions))


def choose_and_act(target: FixTarget | None, ids, key: str, *, default_ids=None, default_what: str = "selected",
                   suggestions: dict[str, str] | None = None) -> None:
    """A picker of some of `ids`, then `actions` on the picked ones (none picked: on `default_ids`, else all)."""
    if target is None:
        return
    ids = [str(i) for i in ids]
    picked = st.multiselect("Fix only these images (blank: all of them)", ids, key=f"{key}.pick",
                            placeholder="Choose image ids…")
    if picked:
        actions(target, picked, key, suggestions=suggestions, what="picked")
    else:
        fallback = ids if default_ids is None else [str(i) for i in default_ids]
        actions(target, fallback, key, suggestions=suggestions, what=default_what)


def basket(target: FixTarget | None) -> None:
    """The pending fixes with Save as a dataset version, and the last saved version with its diff and Retrain."""
    if target is None:
        return
    pending = _basket(target)
    added = st.session_state.pop(f"{target.key}.added", None)
    if added:
        st.toast(f"{added[1]}: {added[0]} image{'s' * (added[0] != 1)} added to the fixes",
                 icon=":material/playlist_add:")
    saved = st.session_state.get(f"{target.key}.version")
    if not pending and saved is None:
        return
    with st.container(border=True, key=f"{target.key.replace('/', '_').replace(':', '_')}.panel"):
        st.subheader(":material/build: Fixes → a new dataset version", anchor=False)
        if pending:
            _pending(target, pending)
        if saved is not None:
            _saved(target, saved)


def _pending(target: FixTarget, pending: dict[str, tuple[str, str]]) -> None:
    names = target.images.class_names
    given = {sample_id: names[int(label)] for sample_id, label in zip(target.images.ids, target.images.labels)}
    st.dataframe(pd.DataFrame([{"Image id": i, "Action": ACTION_LABELS[a], "Label now": given.get(i, "?"),
                                "New label": label} for i, (a, label) in pending.items()]),
                 key="loop.pending.table", hide_index=True, width="stretch", height=min(36 * (len(pending) + 1) + 2,
                                                                                       260))
    c1, c2, c3 = st.columns([4, 2, 1], vertical_alignment="bottom")
    note = c1.text_input("Note (optional)", key="loop.note", placeholder="e.g. fixed the 7s labelled 1")
    save = c2.button(f"Save {len(pending)} fix{'es' * (len(pending) != 1)} as a dataset version", key="loop.save",
                     type="primary", icon=":material/save:", width="stretch")
    c3.button("Clear", key="loop.clear", icon=":material/delete:", width="stretch",
              on_click=lambda: _basket(target).clear())
    st.caption(f"On top of `{target.parent}`; the source files are never changed. The split is pinned to its "
               "parent's, so the test images stay comparable.")
    if save:
        try:
            version = dv.create_version(state.workspace().root, target.parent, target.images,
                                        [(i, a, label) for i, (a, label) in pending.items()],
                                        settings=target.settings, note=note,
                                        run_id=target.run.id if target.run else None)
        except DatasetError as error:
            st.error(f"These fixes can't be saved: {error}", icon=":material/error:")
            return
        pending.clear()
        st.session_state[f"{target.key}.version"] = version.id
        st.rerun()


def _saved(target: FixTarget, version_id: int) -> None:
    root = state.workspace().root
    try:
        version = dv.load_version(root, version_id)
        changes = dv.diff(root, version)
    except DatasetError as error:
        st.error(str(error), icon=":material/error:")
        return
    counts = version.counts()
    st.success(f"Saved **{version.name}** (v{version.number} of `{version.source}`): {counts[dv.RELABEL]} "
               f"relabelled, {counts[dv.EXCLUDE]} excluded, {counts[dv.CHECKED]} checked in all.",
               icon=":material/check_circle:")
    st.markdown(f"**Diff against `{version.parent}`** ({len(changes)} change{'s' * (len(changes) != 1)})")
    st.dataframe(pd.DataFrame([{"Image id": c.file, "Action": ACTION_LABELS.get(c.action, c.action),
                                "Old label": c.old_label, "New label": c.new_label} for c in changes]),
                 key="loop.diff.table", hide_index=True, width="stretch",
                 height=min(36 * (len(changes) + 1) + 2, 260))
    c1, c2, _ = st.columns([2, 2, 3])
    c1.download_button("Download the diff (CSV)", dv.changes_csv(changes), file_name=f"version-{version.id}.csv",
                       mime="text/csv", key="loop.diff.csv", icon=":material/download:", width="stretch")
    if target.run is not None:
        retrain = c2.button("Retrain with these fixes", key="loop.retrain", type="primary",
                            icon=":material/replay:", width="stretch")
    else:
        retrain = c2.button("Train on this version", key="loop.retrain", type="primary",
                            icon=":material/model_training:", width="stretch")
    if retrain:
        if target.run is not None:  # the Runs page's Clone, onto the version
            config = target.run.config.to_dict()
            config["data"]["source"] = version.name
            st.session_state[state.TRAIN_PREFILL] = (config, target.run.id)
        else:
            st.session_state[state.CHOSEN_DATA] = {"data": {"source": version.name}}
        st.switch_page(widgets.PAGES["train"])
