"""Hostile configs, names and model files through the real entry points (CLI, job, AppTest, loaders).

Every test in tests/hostile uses `untouched_outside` (tests/conftest.py): nothing outside the workspace
may change. Image, archive and folder cases already covered by tests/engine/data/ are not repeated:
zero-byte, truncated, non-image, CMYK/YCCK, 16-bit and palette PNG, RGBA, animated GIF/WebP, EXIF
rotation, decompression bombs, 1x1, unicode names (test_data_images, test_data_folders); zip-slip,
absolute paths, symlinks, zip bombs, too many files, __MACOSX/hidden files, a wrapping folder, empty
and non-zip archives (test_data_archive); one class, tiny classes, duplicates (test_data_split,
test_data_folders). The zip/folder fuzz is test_hostile_fuzz.py. The same image cases as single-image
uploads on the Demo and Explain pages, in a real browser: test_hostile_uploads_browser.py (its server has
its own workspace; the upload bytes never touch the disk, so it does not use untouched_outside).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from engine import cli
from engine import jobs
from engine import store
from engine.config import RunConfig
from engine.runfolder import RunFolder
from tests.conftest import write_image_folder

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "dashboard" / "app.py")
HOSTILE_NAMES = ("<script>alert(1)<", "<img src=x onerror=alert(1)>", "**bold** [link](javascript:x)")


def texts(elements) -> str:
    return " | ".join(str(e.value) for e in elements)


# -- CLI flags: rejected by validation with the field named, exit code 2, no run recorded --------------


@pytest.mark.parametrize(("flags", "message"), [
    (["--lr", "nan"], "train.learning_rate"),
    (["--lr", "inf"], "train.learning_rate"),
    (["--lr", "-0.1"], "train.learning_rate"),
    (["--lr", "1e9"], "train.learning_rate"),
    (["--epochs", "0"], "train.epochs"),
    (["--epochs", "-3"], "train.epochs"),
    (["--batch-size", "0"], "train.batch_size"),
    (["--batch-size", "100000"], "train.batch_size"),
    (["--image-size", "2"], "data.image_size"),
    (["--model", "transfer", "--image-size", "16"], "needs images of at least 32x32"),
    (["--set", "train.optimizer=<script>"], "train.optimizer"),
    (["--set", "nonsense"], "expected SECTION.KEY=VALUE"),
    (["--augment", "rotation=abc"], "augment"),
])
def test_cli_rejects_bad_flags_naming_the_field(workspace, untouched_outside, capsys, flags, message):
    assert cli.main(["train", "--data", "digits", *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("error:") and "Traceback" not in err
    assert workspace.list_runs() == []


# -- in the job: batch size larger than the data, a loss that goes NaN -------------------------------


def run_in_process(workspace, config: RunConfig, monkeypatch):
    """Runs the run's job through `jobs.run_job`, in this process (TensorFlow imported once for all)."""
    monkeypatch.setattr(jobs.worker, "_lower_priority", lambda: None)
    run = workspace.create_run(config)
    job = workspace.claim_next_job(limit=10)
    jobs.run_job(job.id, workspace)
    return workspace.get_run(run.id)


@pytest.mark.slow
def test_batch_size_larger_than_the_training_split_trains_with_a_logged_note(workspace, untouched_outside,
                                                                             monkeypatch, caplog):
    # Decided: not an error (the default 32 on a small folder must work); each epoch is one batch of all images.
    config = RunConfig.from_dict({"data": {"image_size": 8, "max_per_class": 3}, "train": {"epochs": 1,
                                                                                          "batch_size": 64}})
    run = run_in_process(workspace, config, monkeypatch)
    assert run.status == store.COMPLETED, run.job.error
    assert "train.batch_size=64 is larger than the" in caplog.text and "each epoch is one batch" in caplog.text


@pytest.mark.slow
def test_a_diverging_loss_fails_the_run_with_that_reason(workspace, untouched_outside, monkeypatch):
    # No small config diverges reliably (Keras clips the probabilities in cross-entropy: even sgd at
    # lr 10 stays finite), so the loss itself is made to go NaN; the rest is the real job.
    import keras

    from engine import training

    def nan_loss(**_):
        return lambda y_true, y_pred: keras.ops.mean(keras.ops.log(y_pred - 2.0))  # log of a negative: NaN

    monkeypatch.setattr(training.keras.losses, "CategoricalCrossentropy", nan_loss)
    config = RunConfig.from_dict({"data": {"image_size": 8, "max_per_class": 10},
                                  "train": {"epochs": 3, "batch_size": 16, "learning_rate": 10}})
    run = run_in_process(workspace, config, monkeypatch)
    assert run.status == store.FAILED, run.job.traceback
    assert "the training loss became nan in epoch 1" in run.job.error and "lower the learning rate" in run.job.error
    assert run.epochs_done == 0 and not RunFolder(workspace, run.id).last_checkpoint.exists()


@pytest.mark.slow
def test_an_integer_learning_rate_in_a_json_config_trains(workspace, untouched_outside, monkeypatch):
    # Found by these tests: `"learning_rate": 10` (an int) made Keras refuse the optimizer.
    config = RunConfig.from_dict({"data": {"image_size": 8, "max_per_class": 10},
                                  "train": {"epochs": 1, "batch_size": 16, "learning_rate": 1,
                                            "schedule": "constant"}})
    run = run_in_process(workspace, config, monkeypatch)
    assert run.status == store.COMPLETED, run.job.error


# -- model files: a Lambda layer is refused (safe_mode), a corrupt file says so ----------------------


def _completed_run_with_model(workspace, model_bytes: bytes | None = None, model=None) -> str:
    run = workspace.create_run(RunConfig.from_dict({"data": {"image_size": 8}, "train": {"epochs": 1}}))
    job = workspace.claim_next_job(limit=10)
    workspace.finish_job(job.id, store.COMPLETED)
    path = RunFolder(workspace, run.id).model_file
    if model is not None:
        model.save(path)
    else:
        path.write_bytes(model_bytes)
    return run.id


@pytest.mark.slow
def test_a_model_with_a_lambda_layer_is_refused_by_every_loader(workspace, untouched_outside, tmp_path):
    import keras

    from engine.models import load_run_model

    marker = tmp_path / "pwned"
    inputs = keras.Input((8, 8, 3))
    hostile = keras.layers.Lambda(lambda x: x * 1.0)(inputs)  # arbitrary Python code on load
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(hostile))
    run_id = _completed_run_with_model(workspace, model=keras.Model(inputs, outputs))
    with pytest.raises(ValueError, match="(?i)lambda|safe_mode"):
        load_run_model(workspace, run_id)  # Evaluate (and the CLI `evaluate --data`)
    with pytest.raises(ValueError, match="(?i)lambda|safe_mode"):
        keras.saving.load_model(RunFolder(workspace, run_id).model_file, compile=False)  # Export, Demo
    assert not marker.exists()


@pytest.mark.slow
def test_a_lambda_layer_in_a_resume_checkpoint_fails_the_job_clearly(workspace, untouched_outside, monkeypatch):
    import keras

    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.Dense(10)(keras.layers.Flatten()(keras.layers.Lambda(lambda x: x + 0.0)(inputs)))
    config = RunConfig.from_dict({"data": {"image_size": 8, "max_per_class": 5}, "train": {"epochs": 2,
                                                                                          "batch_size": 8}})
    run = workspace.create_run(config)
    keras.Model(inputs, outputs).save(RunFolder(workspace, run.id).last_checkpoint)
    store.write_json_atomic(RunFolder(workspace, run.id).last_checkpoint_info, {"epoch": 1})
    monkeypatch.setattr(jobs.worker, "_lower_priority", lambda: None)
    jobs.run_job(workspace.claim_next_job(limit=10).id, workspace)
    run = workspace.get_run(run.id)
    assert run.status == store.FAILED and "safe_mode" in run.job.error.lower() + (run.job.traceback or "").lower()


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 not really a zip", b"\x00" * 1000, np.arange(500).tobytes()])
def test_a_corrupt_model_file_gives_a_clear_error(workspace, untouched_outside, content):
    from engine.models import load_run_model

    run_id = _completed_run_with_model(workspace, content)
    with pytest.raises((ValueError, OSError)) as caught:
        load_run_model(workspace, run_id)
    assert str(caught.value).strip(), "an error without a message"


def test_cli_evaluate_on_a_corrupt_model_exits_2_with_a_message(workspace, image_folder, untouched_outside, capsys):
    run_id = _completed_run_with_model(workspace, b"garbage")
    code = cli.main(["evaluate", run_id, "--data", str(image_folder)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error:") and "Traceback" not in err


# -- class and run names with HTML, script and markdown: shown as text ------------------------------


def test_no_page_renders_raw_html():
    offenders = [f"{p.relative_to(ROOT)}:{n}" for p in (ROOT / "dashboard").rglob("*.py")
                 for n, line in enumerate(p.read_text().splitlines(), 1)
                 if "unsafe_allow_html=True" in line or "store.html(" in line or "components.html(" in line]
    assert offenders == []


@pytest.fixture
def hostile_folder(tmp_path):
    return write_image_folder(tmp_path / "hostile", classes=HOSTILE_NAMES, per_class=4)


def test_data_page_shows_hostile_class_names_as_text(workspace, hostile_folder, untouched_outside):
    folder = hostile_folder
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.segmented_control(key="data.kind").set_value("Folder on the server").run()
    at.text_input(key="data.folder").input(str(folder)).run()
    assert not at.exception and not at.error, texts(at.error)
    assert {m.label: m.value for m in at.metric}["Classes"] == "3"
    assert set(at.selectbox(key="data.aug.class").options) == set(HOSTILE_NAMES)


def test_runs_page_shows_hostile_run_names_as_text(workspace, untouched_outside):
    name = "<script>alert(1)</script> **bold**"
    run = workspace.create_run(RunConfig.from_dict({"name": name}))
    workspace.finish_job(workspace.claim_next_job(limit=10).id, store.FAILED, error="<b>boom</b>")
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.switch_page("views/runs.py").run()
    assert not at.exception
    table = next(f.value for f in at.dataframe if "Run" in f.value.columns)
    assert name in list(table["Run"])
    assert any(name in str(o) for o in at.selectbox(key="runs.picker").options)
    assert "<b>boom</b>" in texts(at.error)
    assert run.id in str(at.query_params.get("run"))


# -- found by the fuzz ----------------------------------------------------------------------


@pytest.mark.parametrize("names", [["cats/x.png", "cats/x.png/y.png"], ["cats", "cats/y.png"]])
def test_a_zip_with_a_file_and_a_folder_of_the_same_name_is_refused(workspace, untouched_outside, tmp_path, names):
    import zipfile

    from engine.data import DatasetError, extract_zip

    zip_path = workspace.root / "upload.zip"
    with zipfile.ZipFile(zip_path, "w") as archive:
        for name in names:
            archive.writestr(name, b"x")
    with pytest.raises(DatasetError, match="both a file and a folder"):
        extract_zip(zip_path, workspace.root / "uploads" / "x")


# -- resume and publish on the wrong runs ---------------------------------------------------------


def test_cli_resume_and_publish_refuse_the_wrong_runs(workspace, untouched_outside, capsys):
    run = workspace.create_run(RunConfig())
    workspace.finish_job(workspace.claim_next_job(limit=10).id, store.COMPLETED)
    for argv, message in ((["resume", run.id], "only a failed or cancelled run can be resumed"),
                          (["resume", "no-such-run"], "no run with id"),
                          (["publish", "../.."], "no run with id")):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
    assert len(workspace.jobs()) == 1 and not RunFolder(workspace, run.id).published
