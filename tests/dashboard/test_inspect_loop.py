"""The fix-and-retrain loop in AppTest: fixes from Evaluate's tabs → a dataset version → Retrain → the flips on Compare;
and dataset health on the Data page, one click from exclusion."""

from __future__ import annotations

import numpy as np

from engine.data import load_images
from engine.data import versions as dv
from engine.inspect.health import Health, save_health
from engine.runfolder import RunFolder
from tests.dashboard.apptest import open_app, texts
from tests.dashboard.test_inspect_map import DATA, recorded_run


def frame(at, column: str):
    """The dataframe with `column` (AppTest does not expose a dataframe's key)."""
    return next(d.value for d in at.dataframe if column in d.value.columns)


def _buttons(at, text: str):
    return [b for b in at.button if text in (b.label or "")]


def test_label_errors_become_a_version_that_retrains_and_compares_by_flips(workspace):
    parent_id = recorded_run(workspace, mistakes=0.3)
    at = open_app("evaluate")
    issues = at.multiselect(key="eval.issues.fix.pick")
    picked = issues.options[:2]
    issues.set_value(picked).run()
    assert "2 images picked" in texts(at.markdown)
    at.button(key="eval.issues.fix.accept").click().run()
    table = frame(at, "Label now")
    assert list(table["Image id"]) == picked and set(table["Action"]) == {"Relabel"}
    at.text_input(key="loop.note").set_value("two suspects").run()
    at.button(key="loop.save").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert "Saved **version:1** (v1 of `digits`): 2 relabelled, 0 excluded, 0 checked" in texts(at.success)
    diff = frame(at, "Old label")
    assert list(diff["Image id"]) == picked and (diff["Old label"] != diff["New label"]).all()
    version = dv.load_version(workspace.root, 1)
    assert version.note == "two suspects" and version.run_id == parent_id and version.settings["max_per_class"] == 20

    at.button(key="loop.retrain").click().run()  # the Runs page's Clone, onto the version
    assert not at.exception, [e.value for e in at.exception]
    assert at.session_state["cfg.data.path"] == "version:1" and at.session_state["train.parent"] == parent_id
    assert "Pre-filled from run" in texts(at.info)
    assert at.number_input(key="cfg.data.image_size").value == 16 and at.number_input(key="cfg.train.epochs").value == 1
    assert at.number_input(key="cfg.data.max_per_class").value == 20

    # The retrained run (recorded: it gets the two relabelled test images right) against its parent.
    child_id = recorded_run(workspace, "version:1", mistakes=0.3, seed=1, name="fixed")
    child = RunFolder(workspace, child_id).dataset()
    assert child.source == "version:1" and len(child) == 200
    at = open_app("evaluate", run=child_id)
    at.selectbox(key="eval.compare.other").set_value(parent_id).run()
    assert not at.exception, [e.value for e in at.exception]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Shared test images"] == "30" and "Fixed" in metrics and "Broken" in metrics
    assert "Flips after the fixes" in texts(at.info) and "McNemar's test" in texts(at.info)


def test_a_map_selection_is_relabelled_to_a_class_and_a_bad_version_source_is_refused_on_train(workspace):
    recorded_run(workspace)
    at = open_app("evaluate")
    at.session_state["eval.map.chart"] = {"selection": {"points": [{"customdata": 3}, {"customdata": 4}]}}
    at.run()
    at.selectbox(key="eval.map.fix.to").set_value("7").run()
    at.button(key="eval.map.fix.relabel").click().run()
    table = frame(at, "Label now")
    assert len(table) == 2 and set(table["New label"]) == {"7"}
    at.button(key="loop.clear").click().run()
    assert not _buttons(at, "as a dataset version")

    train = open_app("train")
    train.radio(key="cfg.data.kind").set_value("Folder or zip on the server").run()
    train.text_input(key="cfg.data.path").set_value("version:42").run()
    train.button(key="train.start").click().run()
    assert "no dataset version 42" in texts(train.error)
    assert len(workspace.list_runs()) == 1


def test_health_on_the_data_page_counts_issues_and_excludes_in_one_click(workspace):
    recorded_run(workspace, embeddings=False)
    at = open_app("data")
    assert not at.exception, [e.value for e in at.exception]
    assert "Not checked yet" in texts(at.info) and at.button(key="data.health.start")
    images = load_images("digits", DATA["image_size"], max_per_class=DATA["max_per_class"], seed=0)
    dark = [0, 7, 30]
    save_health(workspace.cache_dir, Health(
        images.fingerprint, "digits", len(images), {"dark": dark}, {"dark": [images.ids[i] for i in dark]},
        {"dark": {name: int(np.sum(images.labels[dark] == k)) for k, name in enumerate(images.class_names)}},
        "cleanvision 0.3.7"))
    at = open_app("data")
    assert not at.exception, [e.value for e in at.exception]
    table = frame(at, "Issue")
    assert dict(zip(table["Issue"], table["Images"]))["dark"] == 3
    assert "3 images with “dark”" in texts(at.markdown)
    at.button(key="data.health.grid.tile.1").click().run()
    pending = frame(at, "Label now")
    assert list(pending["Image id"]) == [images.ids[7]] and list(pending["Action"]) == ["Exclude"]
