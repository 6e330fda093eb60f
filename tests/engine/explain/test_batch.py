"""Batch mode: the N most confident mistakes of a tiny trained digits run, explained as a job and stored with the run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from engine import evaluation as ev
from engine import jobs
from engine import store
from engine.config import RunConfig
from engine.explain import batch
from engine.runfolder import RunFolder
from engine.store import Workspace

ROOT = Path(__file__).resolve().parents[3]
DATA = {"source": "digits", "image_size": 16, "max_per_class": 30}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> RunFolder:
    """A LeNet-5 trained in-process for two epochs on 16 px digits, with its real test predictions:
    a run folder holding the model, test predictions and data report as a training job writes them."""
    import keras

    from engine.data import load_images, split_indices
    from engine.models import make_model
    from engine.training import data_report

    config = RunConfig.from_dict({"data": DATA, "train": {"epochs": 2}})
    data = config.data
    images = load_images(data.source, data.image_size, max_per_class=data.max_per_class, seed=data.seed)
    split = split_indices(images.labels, data.val_fraction, data.test_fraction, data.seed,
                          class_names=images.class_names)
    keras.utils.set_random_seed(0)
    model = make_model(config.model, (16, 16, 3), 10, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    x = images.images.astype(np.float32)
    model.fit(x[split.train], images.labels[split.train], epochs=2, batch_size=32, verbose=0)
    home = Workspace(tmp_path_factory.mktemp("trained"))
    folder = RunFolder(home, home.create_run(config).id)
    model.save(folder.model_file)
    probabilities = model.predict(x[split.test], verbose=0)
    ev.save_predictions(folder.predictions_file, probabilities, images.labels[split.test],
                        [images.ids[i] for i in split.test], split.test, images.class_names)
    folder.data_report_file.write_text(json.dumps(data_report(images, split)))
    mistakes = int(np.sum(probabilities.argmax(axis=1) != images.labels[split.test]))
    assert 6 <= mistakes < len(split.test), f"{mistakes} mistakes of {len(split.test)}: the fixture needs some"
    return folder


def trained_run(workspace: Workspace, trained: RunFolder) -> str:
    """A completed run in `workspace` holding the trained model and its test predictions."""
    run = workspace.create_run(RunConfig.from_dict({"data": DATA, "train": {"epochs": 2}}))
    job = workspace.claim_next_job(limit=10)
    folder = RunFolder(workspace, run.id)
    for name in ("model_file", "predictions_file", "data_report_file"):
        shutil.copy(getattr(trained, name), getattr(folder, name))
    workspace.finish_job(job.id, store.COMPLETED)
    return run.id


def wait_for(workspace: Workspace, job_id: str, timeout: float = 180) -> store.Job:
    deadline = time.monotonic() + timeout
    while workspace.get_job(job_id).active and time.monotonic() < deadline:
        jobs.refresh(workspace)
        time.sleep(0.3)
    return workspace.get_job(job_id)


def cli(home: Path, *args, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, **{store.HOME_ENV: str(home), jobs.STANDBY_ENV: "0", "TF_CPP_MIN_LOG_LEVEL": "3",
                              "PYTHONPATH": str(ROOT)})
    result = subprocess.run([sys.executable, "-m", "engine", *map(str, args)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    if check:
        assert result.returncode == 0, result.stderr[-2000:]
    return result


def test_a_batch_in_process_is_stored_and_reloads(workspace, trained):
    run_id = trained_run(workspace, trained)
    progress = []
    request = batch.MistakesRequest(count=2, methods=("lime", "gradcam"), params={"lime": {"num_samples": 200}})
    result = batch.explain_mistakes(workspace, run_id, request, report=lambda p, m: progress.append((p, m)))
    assert result.complete and result.methods == ["gradcam", "lime"] and len(result.rows) == 2
    folder = RunFolder(workspace, run_id)
    predictions = folder.predictions()
    expected = ev.ranked_mistakes(predictions)[:2]
    assert [row.position for row in result.rows] == expected.tolist()
    assert result.mistakes == ev.ranked_mistakes(predictions).size and result.test_images == len(predictions)
    for row in result.rows:
        assert row.true != row.predicted and row.predicted_name == str(row.predicted)
        assert row.id == str(predictions.ids[row.position])
        assert folder.resolve(row.image).is_file()
        for method, explained in row.methods.items():
            attribution = np.load(folder.resolve(explained.map))
            assert attribution.shape == (16, 16) and np.all(np.isfinite(attribution))
            assert folder.resolve(explained.overlay).is_file()
            assert 0 <= explained.deletion_auc <= 1 and explained.seconds > 0
    assert result.rows[1].methods["lime"].params["num_samples"] == 200
    assert set(result.summary) == {"gradcam", "lime"}
    for method, summary in result.summary.items():
        assert summary.images == 2 and summary.mean_seconds > 0 and 0 <= summary.beats_random_share <= 1
        assert summary.mean_deletion_auc == pytest.approx(np.mean([r.methods[method].deletion_auc
                                                                   for r in result.rows]))
    assert progress[-1][0] == 1.0 and progress[-1][1].startswith("done: 2 mistakes")
    assert "warming up Grad-CAM (once per job)" in [m for _, m in progress] and result.warm_up_seconds > 0
    assert [p for p, _ in progress] == sorted(p for p, _ in progress)
    assert batch.load_mistakes(workspace, run_id) == result  # the stored record round-trips

    again = batch.explain_mistakes(workspace, run_id, batch.MistakesRequest(count=1))
    assert batch.load_mistakes(workspace, run_id) == again
    folders = [p.name for p in folder.explanations_dir.iterdir() if p.is_dir()]
    assert folders == [Path(again.folder).name], "the older batch's files are removed"


@pytest.mark.slow
def test_a_shap_batch(workspace, trained):
    """SHAP's first call in a process warms up for about 14 s here, hence slow."""
    run_id = trained_run(workspace, trained)
    result = batch.explain_mistakes(workspace, run_id, batch.MistakesRequest(
        count=1, methods=("shap",), params={"shap": {"max_evals": 100, "batch_size": 50}}))
    shap = result.rows[0].methods["shap"]
    assert shap.params["max_evals"] == 100 and np.all(np.isfinite(np.load(RunFolder(workspace, run_id).resolve(shap.map))))
    assert result.summary["shap"].images == 1 and result.warm_up_seconds > 0


def test_requests_are_checked_before_queueing(workspace, trained):
    run_id = trained_run(workspace, trained)
    for request, message in [(batch.MistakesRequest(count=0), "at least 1 mistake"),
                             (batch.MistakesRequest(count=batch.MAX_COUNT + 1), "at most"),
                             (batch.MistakesRequest(methods=()), "one or more of"),
                             (batch.MistakesRequest(methods=("occlusion",)), "occlusion"),
                             (batch.MistakesRequest(params={"gradcam": {"max_evals": 5}}), "not a setting"),
                             (batch.MistakesRequest(methods=("shap",), params={"shap": {"max_evals": 0}}), ">= 1")]:
        with pytest.raises(batch.ExplanationError, match=message):
            batch.request_mistakes(workspace, run_id, request)

    queued = workspace.create_run(RunConfig())
    with pytest.raises(batch.ExplanationError, match="has no trained model yet"):
        batch.request_mistakes(workspace, queued.id)
    shutil.copy(trained.model_file, RunFolder(workspace, queued.id).model_file)
    with pytest.raises(batch.ExplanationError, match=r"has no test predictions \(status: queued\)"):
        batch.request_mistakes(workspace, queued.id)

    perfect = trained_run(workspace, trained)
    predictions = RunFolder(workspace, perfect).predictions()
    ev.save_predictions(RunFolder(workspace, perfect).predictions_file, np.eye(10)[predictions.labels],
                        predictions.labels, predictions.ids, predictions.indices, predictions.class_names)
    with pytest.raises(batch.ExplanationError, match=f"makes no mistakes on its {len(predictions)} test images"):
        batch.request_mistakes(workspace, perfect)
    assert all(workspace.latest_job(r, batch.EXPLAIN_JOB) is None for r in (run_id, queued.id, perfect))
    assert batch.load_mistakes(workspace, run_id) is None


@pytest.mark.slow
def test_cancel_stops_the_job_and_keeps_the_images_done(workspace, trained):
    run_id = trained_run(workspace, trained)
    job = batch.request_mistakes(workspace, run_id, batch.MistakesRequest(count=12, methods=("gradcam", "lime")))
    with pytest.raises(batch.ExplanationError, match="already explaining"):
        batch.request_mistakes(workspace, run_id)
    deadline = time.monotonic() + 120
    while workspace.get_job(job.id).progress < 0.2 and workspace.get_job(job.id).active:
        assert time.monotonic() < deadline, workspace.get_job(job.id)
        time.sleep(0.1)
    jobs.cancel_job(job.id, workspace)
    job = wait_for(workspace, job.id)
    assert job.status == store.CANCELLED, (job.error, job.traceback, jobs.read_log_tail(workspace, run_id))
    stored = batch.load_mistakes(workspace, run_id)
    assert stored is not None and not stored.complete and stored.requested == 12
    assert 1 <= len(stored.rows) < 12 and stored.summary["lime"].images == len(stored.rows)
    assert stored.job_id == job.id


@pytest.mark.slow
def test_cli_batch_waits_and_prints_per_image_rows_and_a_summary(workspace, trained):
    run_id = trained_run(workspace, trained)
    result = cli(workspace.root, "explain", run_id[-4:], "--mistakes", "3", "--method", "gradcam", "--wait",
                 "--json")
    report = json.loads(result.stdout)
    assert report["status"] == "completed" and report["complete"] and report["run_id"] == run_id
    assert [row["rank"] for row in report["images"]] == [1, 2, 3]
    confidences = [row["confidence"] for row in report["images"]]
    assert confidences == sorted(confidences, reverse=True)
    gradcam = report["images"][0]["methods"]["gradcam"]
    assert np.all(np.isfinite(np.load(gradcam["map"]))) and Path(gradcam["overlay"]).is_file()
    summary = report["summary"]["gradcam"]
    assert summary["images"] == 3 and summary["mean_seconds"] > 0 and 0 <= summary["beats_random_share"] <= 1
    job = workspace.latest_job(run_id, batch.EXPLAIN_JOB)
    assert job.status == store.COMPLETED and job.message.startswith("done: 3 mistakes explained with Grad-CAM")
    assert len(batch.load_mistakes(workspace, run_id).rows) == 3

    queued = json.loads(cli(workspace.root, "explain", run_id, "--mistakes", "2", "--json").stdout)
    assert queued["status"] in ("queued", "running") and queued["job_id"] != job.id
    jobs.cancel_job(queued["job_id"], workspace)
    assert wait_for(workspace, queued["job_id"]).status == store.CANCELLED
    assert len(batch.load_mistakes(workspace, run_id).rows) == 3, "a batch cancelled before its first image "\
        "leaves the stored one alone"


def test_cli_batch_bad_input_exits_2_with_one_line(workspace, trained):
    run_id = trained_run(workspace, trained)
    queued = workspace.create_run(RunConfig())
    for args, message in [([run_id, "--mistakes", "0"], "--mistakes 0: explain at least 1 mistake"),
                          ([queued.id, "--mistakes", "3"], "has no trained model yet"),
                          ([run_id, "--mistakes", "3", "--class", "7"], "--class"),
                          ([run_id, "--image", "x.png", "--mistakes", "3"], "not allowed with argument")]:
        result = cli(workspace.root, "explain", *args, check=False)
        assert result.returncode == 2 and message in result.stderr, result.stderr
        if "argument" not in message:  # argparse's own errors come with a usage line
            assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert workspace.latest_job(run_id, batch.EXPLAIN_JOB) is None
