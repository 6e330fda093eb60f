"""The Export and Demo pages in AppTest: a real tiny model, real exports, real store."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from engine import export
from engine.runfolder import RunFolder
from engine.store import HOME_ENV, Workspace
from tests.dashboard.apptest import APP, HEAVY_LOADED, in_fresh_interpreter, open_app, texts
from tests.helpers.runs import train_tiny_run



@pytest.fixture(scope="module")
def exported_home(tmp_path_factory):
    """A workspace with one tiny digits run exported as float32 and INT8 TFLite."""
    workspace = Workspace(tmp_path_factory.mktemp("export-page") / "workspace")
    run_id = train_tiny_run(workspace)
    export.export_run(workspace, run_id, export.ExportRequest(formats=("float32", "int8", "saved_model"),
                                                              latency_runs=5))
    return workspace, run_id


@pytest.fixture
def home(exported_home, monkeypatch):
    workspace, run_id = exported_home
    monkeypatch.setenv(HOME_ENV, str(workspace.root))
    return workspace, run_id


def open_page(page: str, **query) -> AppTest:
    return open_app(page, timeout=90, **query)


def test_export_page_empty_state(workspace):
    at = open_page("export")
    assert "No finished run to export yet" in texts(at.info)


def test_export_page_shows_the_parity_table_chart_and_downloads(home):
    workspace, run_id = home
    at = open_page("export", run=run_id)
    assert at.selectbox(key="export.run").value == run_id
    table = next(f.value for f in at.dataframe if "Gate" in f.value.columns)
    assert list(table["Format"]) == ["TFLite float32", "TFLite INT8 (int8 I/O)", "TF SavedModel"]
    assert set(table["Gate"]) == {"✅ passed"}
    assert len(at.get("plotly_chart")) == 2  # parity, and the Pareto view of the run's three artifacts
    buttons = {b.proto.label for b in at.get("download_button")}
    assert {"Model card (Markdown)", "Model card (HTML)", "Metadata (JSON)"} <= buttons
    assert any(label.startswith("TF SavedModel") for label in buttons)


def test_export_page_starts_an_export_job(home, monkeypatch):
    workspace, run_id = home
    monkeypatch.setenv("APERTURE_MAX_JOBS", "1")
    at = open_page("export", run=run_id)
    at.multiselect(key="export.formats").set_value(["float16"]).run()
    at.number_input(key="export.max_drop").set_value(0.5).run()
    at.button(key="export.start").click().run()
    assert not at.exception, [e.value for e in at.exception]
    job = workspace.latest_job(run_id, "export")
    try:
        assert job is not None and job.kind == "export"
        request = job.request
        assert request["formats"] == ["float16"] and request["max_drop"] == 0.5
        assert at.button(key="export.start").disabled  # one export at a time
    finally:
        from engine import jobs

        jobs.cancel_job(job.id, workspace)


def test_demo_page_predicts_an_uploaded_image_with_int8_and_keras(home):
    workspace, run_id = home
    data = export.load_run_split(workspace, run_id)
    index = data["test_indices"][0]
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(data["images"][index])).save(buffer, format="PNG")
    at = open_page("demo", run=run_id)
    assert at.segmented_control(key="demo.artifact").value == "int8"
    assert "Upload an image or take a photo" in texts(at.info)
    at.file_uploader(key="demo.upload").upload("digit.png", buffer.getvalue(), "image/png").run()
    assert not at.exception, [e.value for e in at.exception]
    prediction = {m.label: m.value for m in at.metric}["Prediction"]
    assert prediction in data["class_names"]
    assert len(at.get("plotly_chart")) == 1 and len(at.image) >= 2
    assert "agree" in texts(at.success) or "disagree" in texts(at.warning)


def test_demo_link_to_a_missing_run_says_so(home):
    at = open_page("demo", run="no-such-run")
    assert "No finished run `no-such-run` to demo" in texts(at.error)


def test_export_page_and_demo_before_an_upload_never_import_tensorflow(home):
    workspace, run_id = home
    seen = in_fresh_interpreter(f"""
        seen = {{}}
        for page in ("export", "demo"):
            at.switch_page(f"views/{{page}}.py").run()
            assert not at.exception, [e.value for e in at.exception]
            seen[page] = {HEAVY_LOADED}
        print(json.dumps(seen))
    """, run=run_id)
    assert seen == {"export": False, "demo": False}, seen


# -- publishing the demo read-only --------------------------------------------------------------------


def published_links(at: AppTest) -> list[str]:
    return [c.value for c in at.code if "/demo?run=" in c.value]


def test_export_page_publishes_the_demo_read_only_and_withdraws_it(home):
    workspace, run_id = home
    try:
        at = open_page("export", run=run_id)
        assert at.toggle(key="export.publish").value is False and published_links(at) == []
        assert "Not published" in texts(at.caption) or "No password is set" in texts(at.caption)
        at.toggle(key="export.publish").set_value(True).run()
        assert not at.exception, [e.value for e in at.exception]
        assert RunFolder(workspace, run_id).published
        assert len(published_links(at)) == 1 and published_links(at)[0].endswith(f"/demo?run={run_id}")
        assert "Anyone with this link can open this model's demo without the password" in texts(at.caption)
        at.toggle(key="export.publish").set_value(False).run()
        assert not RunFolder(workspace, run_id).published and published_links(at) == []
    finally:
        RunFolder(workspace, run_id).set_published(False)


def test_export_page_shows_a_run_published_elsewhere_as_published(home, monkeypatch):
    workspace, run_id = home
    monkeypatch.setenv("APERTURE_PASSWORD", "pw")
    RunFolder(workspace, run_id).set_published()  # as `python -m engine publish RUN` does
    try:
        at = AppTest.from_file(APP, default_timeout=90)
        at.query_params["run"] = run_id
        at.session_state["gate.unlocked"] = True
        at.run()
        at.switch_page("views/export.py").run()
        assert not at.exception, [e.value for e in at.exception]
        assert at.toggle(key="export.publish").value is True and len(published_links(at)) == 1
        assert "No password is set" not in texts(at.caption)
    finally:
        RunFolder(workspace, run_id).set_published(False)


def test_a_run_not_exported_yet_can_publish_its_demo(home):
    import shutil

    from engine.config import RunConfig
    from engine.store import COMPLETED

    workspace, run_id = home
    run = workspace.create_run(RunConfig.from_dict({"name": "not exported"}))
    job = workspace.claim_next_job(limit=10)
    assert job.run_id == run.id
    workspace.finish_job(job.id, COMPLETED)
    shutil.copy(RunFolder(workspace, run_id).model_file, RunFolder(workspace, run.id).model_file)  # the demo's model
    try:
        at = open_page("export", run=run.id)
        assert "has not been exported yet" in texts(at.info)
        assert any(p.label == "Open the demo of this model" for p in at.get("page_link"))
        at.toggle(key="export.publish").set_value(True).run()
        assert RunFolder(workspace, run.id).published and published_links(at)[0].endswith(f"/demo?run={run.id}")
    finally:
        workspace.delete_run(run.id)


# -- compression: the Pareto view of a run family, and the compress panel ------------------------------------


@pytest.fixture(scope="module")
def family_home(exported_home):
    """The exported run plus a pruned child of it, exported too."""
    import json

    from engine.compress import CompressRequest, child_config
    from engine.compress.job import compress_run
    from engine.store import COMPLETED

    workspace, run_id = exported_home
    request = CompressRequest(method="prune", sparsity=0.5, epochs=1)
    child = workspace.create_run(child_config(workspace.get_run(run_id).config, request), parent_id=run_id,
                                 kind="compress", request_json=json.dumps(request.to_dict()))
    job = workspace.claim_next_job(limit=10)
    compress_run(RunFolder(workspace, child.id), request)
    workspace.finish_job(job.id, COMPLETED)
    export.export_run(workspace, child.id, export.ExportRequest(formats=("float32", "int8"), latency_runs=5))
    return workspace, run_id, child.id


def test_the_pareto_view_shows_every_artifact_of_the_family_and_marks_the_front(family_home, monkeypatch):
    from engine.compress.pareto import family_points

    workspace, run_id, child_id = family_home
    monkeypatch.setenv(HOME_ENV, str(workspace.root))
    points = family_points(workspace, child_id)
    assert {(p.run_id, p.format) for p in points} == {(run_id, f) for f in ("float32", "int8", "saved_model")} | {
        (child_id, f) for f in ("float32", "int8")}
    assert any(p.optimal for p in points) and {p.method for p in points} == {"original", "pruned"}
    for p in points:  # nothing on the front is beaten in both accuracy and latency
        if p.optimal:
            assert not any(q.accuracy > p.accuracy and q.latency_ms < p.latency_ms for q in points)
    at = open_page("export", run=run_id)
    table = next(f.value for f in at.dataframe if "Front" in f.value.columns)
    assert len(table) == 5 and {m[-4:] for m in table["Model"]} == {run_id[-4:], child_id[-4:]}
    assert (table["Front"] == "★").sum() == sum(p.optimal for p in points)
    figure = at.get("plotly_chart")[1].proto.spec
    assert "Pareto front" in figure or sum(p.optimal for p in points) == 1
    pick = at.selectbox(key="pareto.pick")
    assert len(pick.options) == 5 and pick.value.split("/")[0] in (run_id, child_id)
    chosen = pick.value.split("/")[0]
    try:
        at.button(key="pareto.publish").click().run()
        assert not at.exception, [e.value for e in at.exception]
        assert RunFolder(workspace, chosen).published
    finally:
        RunFolder(workspace, chosen).set_published(False)


def test_a_compressed_runs_export_page_shows_what_it_was_made_from(family_home, monkeypatch):
    workspace, run_id, child_id = family_home
    monkeypatch.setenv(HOME_ENV, str(workspace.root))
    at = open_page("export", run=child_id)
    assert f"Pruned to 50% (polynomial)** from run `{run_id}`" in texts(at.markdown)
    layers = next(f.value for f in at.dataframe if "Sparsity" in f.value.columns)
    assert set(layers["Layer"]) == {"conv1", "conv2", "fc1", "fc2", "logits"}
    assert ((layers["Sparsity"] - 50).abs() < 1).all()


def test_the_compress_panel_starts_a_child_run_and_refuses_bad_input(home, monkeypatch):
    from engine import jobs

    workspace, run_id = home
    monkeypatch.setenv("APERTURE_MAX_JOBS", "1")
    at = open_page("export", run=run_id)
    at.segmented_control(key="compress.method").set_value("distill").run()
    at.text_input(key="compress.student").set_value("vgg16").run()
    at.button(key="compress.start").click().run()
    assert "architecture must be one of" in texts(at.error)
    before = {r.id for r in workspace.list_runs()}
    at.segmented_control(key="compress.method").set_value("prune").run()
    at.slider(key="compress.sparsity").set_value(0.8).run()
    at.button(key="compress.start").click().run()
    assert not at.exception, [e.value for e in at.exception]
    (child,) = [r for r in workspace.list_runs() if r.id not in before]
    try:
        assert child.parent_id == run_id and child.job.kind == "compress"
        assert child.job.request["method"] == "prune" and child.job.request["sparsity"] == 0.8
        assert f"Run `{child.id}`" in texts(at.caption)
    finally:
        jobs.cancel(child.id, workspace)
        jobs.wait(child.id, workspace, poll_seconds=0.5)
        workspace.delete_run(child.id)
