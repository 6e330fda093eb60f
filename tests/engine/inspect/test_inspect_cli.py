"""`python -m engine inspect RUN --json` on a trained run over planted duplicates: one real training and one
real `inspect` job for the module (UMAP map, embeddings, neighbours, health, leakage), then the CLI's errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine import inspect
from engine.runfolder import RunFolder
from engine.store import HOME_ENV, Workspace
from tests.engine.inspect.planted import pair_scores, tree_digest, write_planted_folder

ROOT = Path(__file__).resolve().parents[3]


def cli(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, HOME_ENV: str(home), "TF_CPP_MIN_LOG_LEVEL": "2", "APERTURE_STANDBY": "0"}
    result = subprocess.run([sys.executable, "-m", "engine", *args], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=480)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def inspected(tmp_path_factory):
    """A 2-epoch LeNet-5 at 24 px on 180 planted originals (9 near copies, 2 exact), then `inspect --json`."""
    from engine import jobs
    from engine.config import RunConfig

    base = tmp_path_factory.mktemp("inspect")
    planted = write_planted_folder(base / "data", classes=3, per_class=60, exact=2, dark=2, seed=11)
    digest = tree_digest(planted.root)
    home = base / "workspace"
    previous = os.environ.get(jobs.STANDBY_ENV)
    os.environ[jobs.STANDBY_ENV] = "0"
    try:
        workspace = Workspace(home)
        config = RunConfig.from_dict({"data": {"source": str(planted.root), "image_size": 24},
                                      "train": {"epochs": 2}})
        run = jobs.wait(jobs.submit(config, workspace).id, workspace, poll_seconds=0.3)
    finally:
        if previous is None:
            os.environ.pop(jobs.STANDBY_ENV, None)
        else:
            os.environ[jobs.STANDBY_ENV] = previous
    assert run.status == "completed", (run.job.error, jobs.read_log_tail(workspace, run.id))
    report = json.loads(cli(home, "inspect", run.id, "--json").stdout)
    return planted, digest, home, run.id, report


@pytest.mark.slow
def test_inspect_json_reports_the_planted_duplicates_and_the_adjusted_accuracy(inspected):
    planted, digest, home, run_id, report = inspected
    assert set(report) == {"run_id", "threshold", "signal", "duplicates", "leakage", "health", "label_issues"}
    recall, false_share = pair_scores(planted, [(p["id_a"], p["id_b"]) for p in report["duplicates"]])
    assert recall >= 0.95 and false_share <= 0.05, (recall, false_share)
    assert {"split_a", "split_b", "similarity", "kind"} <= set(report["duplicates"][0])

    folder = RunFolder(Workspace(home), run_id)
    predictions = folder.predictions()
    split = folder.split()
    train_ids = {folder.dataset().ids[i] for i in split.train}
    test_ids = list(predictions.ids)
    leaked = {b if a in train_ids else a for pair in planted.copies + planted.exact for a, b in [pair]
              if (a in train_ids and b in test_ids) or (b in train_ids and a in test_ids)}
    correct = predictions.predicted == predictions.labels
    keep = np.array([i not in leaked for i in test_ids])
    assert report["leakage"] == {"test_with_train_duplicate": len(leaked),
                                 "test_accuracy": pytest.approx(float(correct.mean())),
                                 "test_accuracy_without_leaks": pytest.approx(float(correct[keep].mean()))}
    assert report["health"]["dark"] >= 2 and set(report["health"]) == set(inspect.HEALTH_ISSUES)
    assert all(issue["rank"] == rank for rank, issue in enumerate(report["label_issues"], 1))
    assert tree_digest(planted.root) == digest  # nothing under the source folder changed


@pytest.mark.slow
def test_the_stored_embeddings_cover_every_image_and_match_the_test_predictions(inspected):
    planted, _, home, run_id, _ = inspected
    folder = RunFolder(Workspace(home), run_id)
    embeddings = inspect.run_embeddings(folder)
    images = folder.dataset()
    assert len(embeddings) == len(images) and embeddings.features.dtype == np.float16
    assert embeddings.xy.shape == (len(images), 2) and np.isfinite(embeddings.xy).all()
    stored_map = inspect.inspect_report(folder)["map"]
    assert embeddings.map_method == stored_map["method"] == "pca" and stored_map["asked"] == "auto"
    assert stored_map["trustworthiness"] >= 0.95  # why auto kept PCA: a small model's features are nearly low-rank
    assert [images.ids[i] for i in embeddings.indices] == list(embeddings.ids)
    predictions = folder.predictions()
    test = embeddings.split_names == "test"
    assert list(embeddings.ids[test]) == list(predictions.ids)
    assert np.array_equal(embeddings.predicted[test], predictions.predicted)
    for signal in inspect.SIGNALS:
        neighbours = inspect.run_neighbours(folder, signal)
        assert neighbours.rows.shape == (len(images), inspect.duplicates.NEIGHBOURS)
    # another threshold is answered from the stored neighbours, without a job
    strict = json.loads(cli(home, "inspect", run_id, "--json", "--threshold", "1.0").stdout)
    assert strict["threshold"] == 1.0 and len(strict["duplicates"]) < len(inspect.inspect_report(folder)["duplicates"])
    assert len(Workspace(home).jobs()) == 2  # train and one inspect


@pytest.mark.slow
def test_inspect_refuses_unknown_untrained_runs_and_bad_thresholds(inspected):
    _, _, home, run_id, _ = inspected
    from engine.config import RunConfig

    unknown = cli(home, "inspect", "nosuchrun", check=False)
    assert unknown.returncode == 2 and "nosuchrun" in unknown.stderr
    queued = Workspace(home).create_run(RunConfig())
    untrained = cli(home, "inspect", queued.id, check=False)
    assert untrained.returncode == 2 and "has no saved model" in untrained.stderr
    assert len(untrained.stderr.strip().splitlines()) == 1
    bad = cli(home, "inspect", run_id, "--threshold", "0", check=False)
    assert bad.returncode == 2 and "--threshold 0.0: must be a similarity in (0, 1]" in bad.stderr


@pytest.mark.slow
def test_the_health_job_caches_the_data_health_by_fingerprint(inspected):
    import time

    from engine import jobs

    _, _, home, run_id, report = inspected
    workspace = Workspace(home)
    fingerprint = RunFolder(workspace, run_id).data_report()["fingerprint"]
    cached = inspect.read_health(workspace, fingerprint)
    assert cached is not None and cached.counts() == report["health"]  # the inspect job filled the cache
    inspect.health.health_file(workspace.cache_dir, fingerprint).unlink()
    job = inspect.request_health(workspace, run_id)
    deadline = time.monotonic() + 180
    while job.active and time.monotonic() < deadline:
        time.sleep(0.5)
        jobs.refresh(workspace)
        job = workspace.get_job(job.id)
    assert job.status == "completed", job.error
    assert inspect.read_health(workspace, fingerprint).counts() == report["health"]
