"""The Data, Train and Runs pages in Streamlit's AppTest: real engine, real store, no browser."""

from __future__ import annotations

import io
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from engine import jobs
from engine.config import RunConfig
from engine.runfolder import RunFolder
from engine.store import CANCELLED, COMPLETED, FAILED, EpochMetrics, Workspace
from tests.dashboard.apptest import HEAVY_LOADED, in_fresh_interpreter, open_app, texts



def open_page(page: str | None = None, **query) -> AppTest:
    return open_app(page, **query)


def has_widget(at: AppTest, key: str) -> bool:
    try:
        at.get_by_key(key)
    except KeyError:
        return False
    return True


def table_with(at: AppTest, column: str):
    """The dataframe (as pandas) that has `column` (AppTest does not expose display-only dataframe keys)."""
    for frame in at.dataframe:
        if column in frame.value.columns:
            return frame.value
    raise AssertionError(f"no table with a {column!r} column")


def finished_run(workspace: Workspace, status: str = COMPLETED, *, epochs: int = 3, **config) -> str:
    """A run recorded the way a job would have left it, without training."""
    run = workspace.create_run(RunConfig.from_dict({"train": {"epochs": epochs}, **config}))
    job = workspace.claim_next_job(limit=10)
    for epoch in range(1, epochs + 1):
        workspace.add_epoch(run.id, EpochMetrics(epoch, loss=1 / epoch, accuracy=0.8 + epoch / 100,
                                                 val_loss=1.2 / epoch, val_accuracy=0.78 + epoch / 100,
                                                 learning_rate=1e-3 / epoch, seconds=2.0, images_per_second=600))
    workspace.update_run(run.id, device="CPU", params=83126, num_classes=10, best_val_accuracy=0.81,
                         test_accuracy=0.8 if status == COMPLETED else None, train_seconds=6.0)
    workspace.finish_job(job.id, status, error="ValueError: boom" if status == FAILED else None,
                         traceback="Traceback (most recent call last):\nValueError: boom" if status == FAILED else None)
    return run.id


@pytest.fixture(autouse=True)
def no_standby(monkeypatch):
    """No pre-warmed TensorFlow worker: these tests start at most one short job."""
    monkeypatch.setenv(jobs.STANDBY_ENV, "0")


@pytest.fixture
def sleeper():
    """A live process that stands in for a running job (it never trains and never stops by itself)."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    yield process
    process.kill()
    process.wait()


# -- Data ------------------------------------------------------------------------------


def test_data_page_shows_digits(workspace):
    at = open_page()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Images"] == "1,797" and metrics["Classes"] == "10"
    assert int(metrics["Train"].replace(",", "")) + int(metrics["Validation"]) + int(metrics["Test"]) == 1797
    assert len(at.image) >= 10  # a sample strip per class, plus the augmentation original
    assert "none were skipped" in texts(at.success)


def test_data_page_reads_a_server_folder_and_reports_skipped_files(workspace, image_folder):
    (image_folder / "circle" / "broken.png").write_bytes(b"not a png")
    at = open_page()
    at.segmented_control(key="data.kind").set_value("Folder on the server").run()
    at.text_input(key="data.folder").input(str(image_folder)).run()
    _until(at, lambda a: "Images" in {m.label for m in a.metric})  # a loaded machine shows the progress first
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Classes"] == "3" and metrics["Images"] == "36" and metrics["Skipped files"] == "1"
    skipped = table_with(at, "Reason")
    assert list(skipped["File"]) == ["circle/broken.png"]


def test_data_page_names_a_missing_folder(workspace, tmp_path):
    at = open_page()
    at.segmented_control(key="data.kind").set_value("Folder on the server").run()
    at.text_input(key="data.folder").input(str(tmp_path / "nowhere")).run()
    assert "no such file or folder" in texts(at.error)


@pytest.fixture
def mnist_server(tmp_path, monkeypatch):
    """An empty KERAS_HOME and a local HTTP server offering a 50-image mnist.npz where Keras's URL would be."""
    import http.server
    import socketserver
    import threading

    import numpy as np

    from dashboard.components import state
    from engine.data import builtin

    served = tmp_path / "served"
    served.mkdir()
    rng = np.random.default_rng(0)
    labels = np.arange(50) % 10
    np.savez(served / "mnist.npz", x_train=rng.integers(0, 255, (40, 28, 28), dtype=np.uint8), y_train=labels[:40],
             x_test=rng.integers(0, 255, (10, 28, 28), dtype=np.uint8), y_test=labels[40:])
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(served))  # noqa: E731
    with socketserver.TCPServer(("127.0.0.1", 0), handler) as httpd:
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
        monkeypatch.setenv("no_proxy", "*")
        monkeypatch.setattr(builtin, "KERAS_DATASETS_URL", f"http://127.0.0.1:{httpd.server_address[1]}/")
        state.sources.clear()
        yield served
        httpd.shutdown()
    state.sources.clear()


def _until(at: AppTest, ready, seconds: float = 90) -> AppTest:
    deadline = time.monotonic() + seconds
    while not ready(at) and time.monotonic() < deadline:
        time.sleep(0.3)
        at.run()
    return at


def test_data_page_downloads_a_missing_keras_dataset(workspace, mnist_server):
    at = open_page()
    at.selectbox(key="data.builtin").set_value("mnist").run()
    assert "not on this machine yet" in texts(at.warning)
    at.button(key="data.download.start.mnist").click().run()
    _until(at, lambda a: "Images" in {m.label for m in a.metric})
    assert not at.exception and not at.error, texts(at.error)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Images"] == "50" and metrics["Classes"] == "10"


def test_data_page_says_why_a_download_failed(workspace, mnist_server):
    (mnist_server / "mnist.npz").unlink()  # the server answers 404
    at = open_page()
    at.selectbox(key="data.builtin").set_value("mnist").run()
    at.button(key="data.download.start.mnist").click().run()
    _until(at, lambda a: bool(a.error))
    assert "mnist is not cached and could not be downloaded" in texts(at.error)
    assert "put mnist.npz in" in texts(at.error)  # and how to do it by hand
    assert not at.exception


def _zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.mark.parametrize(("entries", "expected"), [
    ({}, "empty.zip"),
    ({"../evil/a.png": b"x", "ok/b.png": b"y"}, "evil.zip"),
])
def test_data_page_rejects_bad_zips(workspace, entries, expected):
    at = open_page()
    at.segmented_control(key="data.kind").set_value("Upload a zip").run()
    at.file_uploader(key="data.upload").upload(expected, _zip(entries), "application/zip").run()
    assert not at.exception
    assert expected in texts(at.error), texts(at.error)
    assert not (workspace.root.parent / "evil").exists()


def test_data_page_loads_an_uploaded_zip_and_carries_it_to_train(workspace, image_folder):
    entries = {f"shapes/{p.parent.name}/{p.name}": p.read_bytes() for p in image_folder.rglob("*.png")}
    at = open_page()
    at.segmented_control(key="data.kind").set_value("Upload a zip").run()
    at.file_uploader(key="data.upload").upload("shapes.zip", _zip(entries), "application/zip").run()
    assert {m.label: m.value for m in at.metric}["Classes"] == "3", texts(at.error)
    at.button(key="data.use").click().run()
    assert not at.exception
    assert at.radio(key="cfg.data.kind").value == "Folder or zip on the server"
    source = at.text_input(key="cfg.data.path").value
    assert Path(source).is_dir() and Path(source).is_relative_to(workspace.root)


# -- Train -----------------------------------------------------------------------------


def test_train_form_starts_from_the_defaults(workspace):
    at = open_page("train")
    defaults = RunConfig()
    assert at.selectbox(key="cfg.data.builtin").value == defaults.data.source
    assert at.selectbox(key="cfg.model.name").value == defaults.model.name
    assert at.number_input(key="cfg.train.epochs").value == defaults.train.epochs
    assert at.number_input(key="cfg.train.learning_rate").value == pytest.approx(defaults.train.learning_rate)
    assert {m.label: m.value for m in at.metric}["Parameters"] in ("counting…",) or "," in at.metric[0].value


def test_train_form_shows_model_specific_fields(workspace):
    at = open_page("train")
    assert has_widget(at, "cfg.model.activation") and not has_widget(at, "cfg.model.width")
    at.selectbox(key="cfg.model.name").set_value("resnet").run()
    assert at.number_input(key="cfg.model.width").value == 16
    assert not has_widget(at, "cfg.model.activation")
    at.selectbox(key="cfg.model.name").set_value("transfer").run()
    assert at.selectbox(key="cfg.model.base").value == "mobilenet_v2"


def test_train_form_shows_validation_errors_next_to_the_field(workspace, tmp_path):
    at = open_page("train")
    at.number_input(key="cfg.data.val_fraction").set_value(0.5)
    at.number_input(key="cfg.data.test_fraction").set_value(0.4).run()
    at.button(key="train.start").click().run()
    assert not at.exception
    assert "Test share: validation + test must leave at least 20% for training" in texts(at.error)
    assert workspace.list_runs() == []

    at.number_input(key="cfg.data.test_fraction").set_value(0.15).run()
    at.radio(key="cfg.data.kind").set_value("Folder or zip on the server").run()
    at.text_input(key="cfg.data.path").input(str(tmp_path / "missing")).run()
    at.button(key="train.start").click().run()
    assert "Source: no such folder or file on the server" in texts(at.error)

    at.radio(key="cfg.data.kind").set_value("Built-in dataset").run()
    at.selectbox(key="cfg.model.name").set_value("transfer").run()
    at.number_input(key="cfg.data.image_size").set_value(16).run()
    at.button(key="train.start").click().run()
    assert "needs images of at least 32x32" in texts(at.error)
    assert workspace.list_runs() == []


def test_start_submits_a_job_and_opens_its_live_view(workspace):
    at = open_page("train")
    at.text_input(key="cfg.name").input("from the test").run()
    at.number_input(key="cfg.train.epochs").set_value(1).run()
    at.button(key="train.start").click().run()
    try:
        assert not at.exception
        runs = workspace.list_runs()
        assert len(runs) == 1 and runs[0].name == "from the test" and runs[0].config.train.epochs == 1
        assert runs[0].status in ("queued", "running")
        assert at.query_params["run"] == [runs[0].id] or at.query_params["run"] == runs[0].id
        assert any("from the test" in s.value for s in at.subheader)
    finally:
        for run in workspace.list_runs():
            jobs.delete(run.id, workspace, timeout=20)


def test_clone_prefills_the_form(workspace):
    run_id = finished_run(workspace, epochs=7, train={"epochs": 7, "optimizer": "sgd"}, model={"name": "resnet"})
    at = open_page("runs", run=run_id)
    at.button(key="runs.clone").click().run()
    assert not at.exception
    assert at.number_input(key="cfg.train.epochs").value == 7
    assert at.selectbox(key="cfg.train.optimizer").value == "sgd"
    assert at.selectbox(key="cfg.model.name").value == "resnet"
    assert run_id in texts(at.info)


# -- Runs ------------------------------------------------------------------------------


def test_runs_page_empty_state_points_to_train(workspace):
    at = open_page("runs")
    assert "No runs yet — start one on the Train page" in texts(at.info)


def test_runs_page_lists_engine_runs_newest_first_and_filters(workspace):
    first = finished_run(workspace, COMPLETED)
    time.sleep(0.01)
    second = finished_run(workspace, FAILED, model={"name": "resnet"})
    at = open_page("runs")
    table = table_with(at, "ID")
    assert list(table["ID"]) == [second, first]
    assert list(table["Status"]) == ["Failed", "Completed"]
    assert table["Test acc"].iloc[1] == pytest.approx(80.0)
    at.multiselect(key="runs.filter.model").set_value(["lenet5"]).run()
    assert list(table_with(at, "ID")["ID"]) == [first]
    at.multiselect(key="runs.filter.model").set_value([]).run()
    at.text_input(key="runs.filter.text").input("no-such-dataset").run()
    assert "No run matches these filters." in texts(at.info)


def test_runs_page_shows_a_completed_run(workspace):
    run_id = finished_run(workspace, COMPLETED)
    at = open_page("runs", run=run_id)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Epoch"] == "3/3" and metrics["Test accuracy"] == "80.00%" and metrics["Device"] == "CPU"
    config = table_with(at, "Setting")
    assert ("Training", "Epochs", "3") in set(map(tuple, config.values.tolist()))
    assert len(at.get("plotly_chart")) == 4


def test_runs_page_shows_why_a_run_failed(workspace):
    run_id = finished_run(workspace, FAILED)
    at = open_page("runs", run=run_id)
    assert "This run failed:** ValueError: boom" in texts(at.error)
    assert any("ValueError: boom" in c.value for c in at.code)


def test_query_param_selects_the_run(workspace):
    first = finished_run(workspace, COMPLETED)
    finished_run(workspace, COMPLETED)
    at = open_page("runs", run=first)
    assert at.selectbox(key="runs.picker").value == first


def test_cancel_asks_first_then_requests_the_stop(workspace, sleeper):
    run = workspace.create_run(RunConfig())
    job = workspace.claim_next_job(limit=1)
    workspace.set_job_process(job.id, sleeper.pid)
    at = open_page("runs", run=run.id)
    assert at.progress, "an active run shows a progress bar"
    at.button(key="runs.cancel").click().run()
    assert workspace.get_job(job.id).cancel_requested_at is None  # only the dialog so far
    at.button(key="runs.cancel.confirm").click().run()
    assert not at.exception
    assert workspace.get_job(job.id).cancel_requested_at is not None
    workspace.finish_job(job.id, CANCELLED, error="cancelled by the user")


def test_delete_asks_first_then_removes_the_run(workspace):
    run_id = finished_run(workspace, COMPLETED)
    at = open_page("runs", run=run_id)
    at.button(key="runs.delete").click().run()
    assert [r.id for r in workspace.list_runs()] == [run_id]
    at.button(key="runs.delete.confirm").click().run()
    assert not at.exception
    assert workspace.list_runs() == []
    assert not RunFolder(workspace, run_id).path.exists()


# -- The server stays free of TensorFlow ---------------------------------------------------------------


def test_pages_never_import_tensorflow(workspace, image_folder):
    """Runs every page (and its main actions) in a fresh interpreter and checks sys.modules."""
    finished_run(workspace, FAILED)
    seen = in_fresh_interpreter(f"""
        at.segmented_control(key="data.kind").set_value("Folder on the server").run()
        at.text_input(key="data.folder").input({str(image_folder)!r}).run()
        at.button(key="data.use").click().run()
        seen = {{"data+train": {HEAVY_LOADED}}}
        for page in ("data", "train", "runs", "evaluate", "export"):
            at.switch_page(f"views/{{page}}.py").run()
            assert not at.exception, [e.value for e in at.exception]
            seen[page] = {HEAVY_LOADED}
        print(json.dumps(seen))
    """)
    assert not any(seen.values()), seen
