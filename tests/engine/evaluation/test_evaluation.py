"""engine.evaluation: every metric against hand-computed values, label-error ranking, McNemar, comparisons, CLI."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from engine import store
from engine.evaluation import (NotComparable, Predictions, calibration_bins, compare_runs, evaluate,
                               find_label_issues, label_issues_csv, mcnemar, ranked_mistakes)
from engine.runfolder import RunFolder
from engine.store import Workspace
from tests.helpers.images import write_digit_folder, write_image_folder

ROOT = Path(__file__).resolve().parents[3]

# Three classes, eight samples. Predicted: A A B B B C C B -> mistakes at 2 (A->B), 5 (B->C), 7 (C->B).
PROBS = np.array([
    [0.7, 0.2, 0.1],
    [0.6, 0.3, 0.1],
    [0.2, 0.7, 0.1],
    [0.1, 0.8, 0.1],
    [0.1, 0.9, 0.0],
    [0.3, 0.2, 0.5],
    [0.1, 0.1, 0.8],
    [0.1, 0.6, 0.3],
], np.float32)
LABELS = np.array([0, 0, 0, 1, 1, 1, 2, 2])


def tiny(probs=PROBS, labels=LABELS, *, ids=None, fingerprint="f1", run_id="a") -> Predictions:
    n = len(labels)
    ids = np.array([f"img/{i}" for i in range(n)] if ids is None else ids)
    return Predictions(np.asarray(probs, np.float32), np.asarray(labels), ids, np.arange(100, 100 + n),
                       ["A", "B", "C"], fingerprint, run_id)


def test_headline_metrics_match_hand_computed_values():
    ev = evaluate(tiny(), top_k=(1, 2))
    # Confusion (rows true, columns predicted): A [2 1 0], B [0 2 1], C [0 1 1].
    assert ev.confusion_matrix == [[2, 1, 0], [0, 2, 1], [0, 1, 1]]
    assert np.allclose(ev.confusion_normalized, [[2 / 3, 1 / 3, 0], [0, 2 / 3, 1 / 3], [0, 1 / 2, 1 / 2]])
    assert ev.accuracy == pytest.approx(5 / 8) and ev.mistakes == 3
    # Top-2: only sample 5 (label B, p=.2 behind C .5 and A .3) misses.
    assert ev.top_k_accuracy == {1: pytest.approx(5 / 8), 2: pytest.approx(7 / 8)}
    per = {c.name: c for c in ev.per_class}
    assert (per["A"].precision, per["A"].recall, per["A"].f1, per["A"].support) == pytest.approx((1, 2 / 3, 0.8, 3))
    assert (per["B"].precision, per["B"].recall, per["B"].f1, per["B"].support) == pytest.approx((0.5, 2 / 3, 4 / 7, 3))
    assert (per["C"].precision, per["C"].recall, per["C"].f1, per["C"].support) == pytest.approx((0.5, 0.5, 0.5, 2))
    assert ev.macro_precision == pytest.approx(2 / 3)
    assert ev.macro_recall == pytest.approx(11 / 18)
    assert ev.macro_f1 == pytest.approx(131 / 210)
    assert ev.weighted_precision == pytest.approx(11 / 16)
    assert ev.weighted_recall == pytest.approx(5 / 8)
    assert ev.weighted_f1 == pytest.approx(179 / 280)
    pairs = [(p.true, p.predicted, p.count, round(p.share, 4)) for p in ev.confused_pairs]
    assert pairs == [("A", "B", 1, 0.3333), ("B", "C", 1, 0.3333), ("C", "B", 1, 0.5)]


def test_default_top_k_needs_more_classes_than_k():
    assert set(evaluate(tiny()).top_k_accuracy) == {1}  # 3 and 5 are not below 3 classes
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(10), size=50).astype(np.float32)
    labels = rng.integers(0, 10, 50)
    p = Predictions(probs, labels, np.array([str(i) for i in range(50)]), np.arange(50), [str(i) for i in range(10)])
    top = evaluate(p).top_k_accuracy
    assert set(top) == {1, 3, 5}
    rank = (probs > probs[np.arange(50), labels][:, None]).sum(axis=1)  # classes scored above the label
    assert top[3] == pytest.approx(np.mean(rank < 3)) and top[5] == pytest.approx(np.mean(rank < 5))


def test_expected_calibration_error_by_hand():
    # Confidences .7 .6 .7 .8 .9 .5 .8 .6, right? 1 1 0 1 1 0 1 0; each value alone in its 1/15-wide bin:
    # .7: acc .5 (2 samples) .6: acc .5 (2) .8: acc 1 (2) .9: acc 1 (1) .5: acc 0 (1)
    expected = (2 * 0.2 + 2 * 0.1 + 2 * 0.2 + 1 * 0.1 + 1 * 0.5) / 8
    ev = evaluate(tiny())
    assert ev.ece == pytest.approx(expected, abs=1e-6)
    assert len(ev.calibration) == 15 and sum(b.count for b in ev.calibration) == 8
    nine = next(b for b in ev.calibration if b.count and abs(b.confidence - 0.9) < 1e-6)
    assert nine.accuracy == 1.0 and nine.lower < 0.9 <= nine.upper
    # Perfectly calibrated: 10 samples at .8 confidence, 8 of them right.
    ece, _ = calibration_bins(np.full(10, 0.8), np.arange(10) < 8)
    assert ece == pytest.approx(0.0)


def test_mistakes_rank_by_confidence_and_filter_by_cell():
    p = tiny()
    assert ranked_mistakes(p).tolist() == [2, 7, 5]  # confidences .7, .6, .5
    assert ranked_mistakes(p, true=2, predicted=1).tolist() == [7]
    assert ranked_mistakes(p, true=0, mistakes_only=False).tolist() == [0, 2, 1]
    assert ranked_mistakes(p, true=0, predicted=2).tolist() == []


def test_label_issues_on_the_hand_made_set():
    # Thresholds: A (.7+.6+.2)/3=.5, B (.8+.9+.2)/3=.633, C (.8+.3)/2=.55. Only sample 2 has its label
    # below threshold while another class (B, .7) is above its own.
    issues = find_label_issues(tiny())
    assert [(i.position, i.index, i.given, i.suggested) for i in issues] == [(2, 102, "A", "B")]
    assert issues[0].self_confidence == pytest.approx(0.2) and issues[0].margin == pytest.approx(-0.5)
    csv = label_issues_csv(issues).splitlines()
    assert csv[0].startswith("rank,id,index,given_label,suggested_label") and csv[1].startswith("1,img/2,102,A,B,")


def test_planted_label_errors_rank_near_the_top():
    """A real model (linear discriminant analysis, out-of-fold probabilities) on digits with 5% of labels flipped."""
    from sklearn.datasets import load_digits
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.model_selection import cross_val_predict

    digits = load_digits()
    rng = np.random.default_rng(0)
    labels = digits.target.copy()
    planted = rng.choice(labels.size, size=int(0.05 * labels.size), replace=False)
    labels[planted] = (labels[planted] + rng.integers(1, 10, planted.size)) % 10
    probs = cross_val_predict(LinearDiscriminantAnalysis(), digits.data / 16, labels, cv=5, method="predict_proba")
    p = Predictions(probs.astype(np.float32), labels, np.array([f"digits/{i}" for i in range(labels.size)]),
                    np.arange(labels.size), [str(i) for i in range(10)])
    ranked = [issue.position for issue in find_label_issues(p)]
    planted = set(planted.tolist())

    def hits(top: int) -> int:
        return len(set(ranked[:top]) & planted)

    assert hits(len(planted) // 2) >= 0.9 * (len(planted) // 2), ranked[:20]  # the first ranks: nearly all planted
    assert hits(len(planted)) >= 0.8 * len(planted)
    assert len(set(ranked) & planted) >= 0.9 * len(planted)  # and few planted errors escape the list


def test_mcnemar_exact_and_chi_square():
    exact = mcnemar(10, 2)  # n=12 < 25: p = 2 * P(X <= 2 | Bin(12, .5)) = 2 * 79 / 4096
    assert exact.method == "exact binomial" and exact.p_value == pytest.approx(2 * 79 / 4096)
    big = mcnemar(30, 10)  # (|30-10|-1)^2/40 = 9.025; sf of chi2(1) = erfc(sqrt(x/2))
    assert big.statistic == pytest.approx(9.025)
    assert big.p_value == pytest.approx(math.erfc(math.sqrt(9.025 / 2)))
    assert mcnemar(0, 0).p_value == 1.0 and mcnemar(3, 3).p_value == 1.0


def test_compare_runs_aligns_by_id_and_gives_a_verdict():
    a = tiny()
    better = PROBS.copy()
    better[[2, 5, 7]] = [[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]]  # B fixes all three mistakes
    order = np.array([7, 3, 0, 5, 1, 6, 2, 4])
    b = tiny(better[order], LABELS[order], ids=np.array([f"img/{i}" for i in order]), run_id="b")
    result = compare_runs(a, b)
    assert result.a.accuracy == pytest.approx(5 / 8) and result.b.accuracy == pytest.approx(1.0)
    assert result.b_only == [2, 5, 7] and result.a_only == [] and result.disagreements == [2, 5, 7]
    assert result.test.p_value == pytest.approx(0.25)  # 3 discordant, all one way: 2 * .5^3
    assert result.verdict.startswith("No significant difference (p = 0.25")
    deltas = {d.name: round(d.delta, 4) for d in result.class_deltas}
    assert deltas == {"A": round(1 - 0.8, 4), "B": round(1 - 4 / 7, 4), "C": 0.5}
    json.dumps(result.to_dict())
    assert compare_runs(a, a).verdict.startswith("The two runs get exactly the same test images right")


def test_compare_runs_refuses_different_test_sets():
    a = tiny()
    with pytest.raises(NotComparable, match="different data"):
        compare_runs(a, tiny(fingerprint="other"))
    with pytest.raises(NotComparable, match="tested on different images"):
        compare_runs(a, tiny(ids=[f"other/{i}" for i in range(8)]))
    with pytest.raises(NotComparable, match="tested on different images"):
        compare_runs(a, tiny(PROBS[:6], LABELS[:6]))


def test_evaluation_is_json_able():
    data = json.loads(json.dumps(evaluate(tiny()).to_dict()))
    assert {"accuracy", "macro_f1", "per_class", "confusion_matrix", "class_names", "ece", "calibration"} <= set(data)


# -- a real tiny run through the CLI ---------------------------------------------------------------------


def cli(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, **{store.HOME_ENV: str(home), "APERTURE_STANDBY": "0", "TF_CPP_MIN_LOG_LEVEL": "3",
                              "PYTHONPATH": str(ROOT)})
    result = subprocess.run([sys.executable, "-m", "engine", *args], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=300)
    if check:
        assert result.returncode == 0, result.stderr[-2000:]
    return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny digits run (16 px, 2 epochs, 40 images per class), trained for real by a job once per module."""
    from engine import jobs
    from engine.config import RunConfig

    home = tmp_path_factory.mktemp("eval") / "workspace"
    previous = os.environ.get(jobs.STANDBY_ENV)
    os.environ[jobs.STANDBY_ENV] = "0"
    try:
        workspace = Workspace(home)
        config = RunConfig.from_dict({"data": {"source": "digits", "image_size": 16, "max_per_class": 40},
                                      "train": {"epochs": 2}})
        run = jobs.wait(jobs.submit(config, workspace).id, workspace, poll_seconds=0.3)
    finally:
        if previous is None:
            os.environ.pop(jobs.STANDBY_ENV, None)
        else:
            os.environ[jobs.STANDBY_ENV] = previous
    assert run.status == "completed", (run.job.error, jobs.read_log_tail(workspace, run.id))
    return home, run.id


@pytest.mark.slow
def test_cli_evaluate_a_trained_run(trained):
    home, run_id = trained
    data = json.loads(cli(home, "evaluate", run_id, "--json").stdout)
    assert {"accuracy", "macro_f1", "per_class", "confusion_matrix", "class_names"} <= set(data)
    assert data["class_names"] == [str(i) for i in range(10)]
    matrix = np.array(data["confusion_matrix"])
    assert matrix.shape == (10, 10) and matrix.sum() == data["num_samples"]
    assert data["accuracy"] == pytest.approx(Workspace(home).get_run(run_id).test_accuracy)
    assert data["accuracy"] == pytest.approx(np.trace(matrix) / matrix.sum())
    saved = RunFolder(Workspace(home), run_id).predictions()
    assert saved.fingerprint and len(saved) == data["num_samples"]
    table = cli(home, "evaluate", run_id[-4:]).stdout
    assert "precision" in table and "confusion matrix" in table


@pytest.mark.slow
def test_cli_evaluate_refuses_runs_without_predictions_and_bad_paths(trained, tmp_path):
    home, run_id = trained
    from engine.config import RunConfig

    queued = Workspace(home).create_run(RunConfig())
    try:
        result = cli(home, "evaluate", queued.id, check=False)
        assert result.returncode == 2 and "has no test predictions (status: queued)" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    finally:
        Workspace(home).delete_run(queued.id)
    result = cli(home, "evaluate", run_id, "--data", str(tmp_path / "nowhere"), check=False)
    assert result.returncode == 2 and "no such folder" in result.stderr
    shapes = write_image_folder(tmp_path / "shapes", classes=("0", "1", "cat"), per_class=3)
    result = cli(home, "evaluate", run_id, "--data", str(shapes), check=False)
    assert result.returncode == 2, result.stderr
    assert "missing '2', '3'" in result.stderr and "not known to the model 'cat'" in result.stderr


@pytest.mark.slow
def test_cli_evaluate_a_new_folder(trained, tmp_path):
    """Fresh predictions over a folder of digit PNGs named like the run's classes (streams through the model)."""
    home, run_id = trained
    labels = write_digit_folder(tmp_path / "new", 60)
    data = json.loads(cli(home, "evaluate", run_id, "--data", str(tmp_path / "new"), "--batch-size", "16",
                          "--json").stdout)
    assert data["num_samples"] == 60 and data["class_names"] == [str(i) for i in range(10)]
    assert [c["support"] for c in data["per_class"]] == np.bincount(labels, minlength=10).tolist()
    assert data["accuracy"] > 0.3  # two epochs on 400 images; chance is 0.1


# -- evaluate jobs (the dashboard's "Evaluate on other data") ---------------------------------------


def run_evaluate_job(home: Path, run_id: str, source: str, name: str | None = None):
    from engine import evaluation, jobs

    workspace = Workspace(home)
    job = evaluation.request_evaluation(workspace, run_id, source, name)
    deadline = time.monotonic() + 240
    while workspace.get_job(job.id).active and time.monotonic() < deadline:
        jobs.refresh(workspace)
        time.sleep(0.3)
    return workspace, workspace.get_job(job.id)


@pytest.mark.slow
def test_evaluate_job_over_the_validation_split(trained):
    home, run_id = trained
    workspace, job = run_evaluate_job(home, run_id, "split:val")
    assert job.status == "completed", (job.error, job.traceback)
    assert job.progress == 1.0 and job.message.startswith("done:")
    folder = RunFolder(workspace, run_id)
    with np.load(folder.evaluation_file("val-split")) as saved:
        assert set(saved.files) == {"probabilities", "labels", "ids", "indices", "class_names"}
        with np.load(folder.predictions_file) as test:
            assert set(saved.files) == set(test.files)
    report = folder.data_report()
    predictions = folder.predictions("val-split")
    assert predictions.probabilities.shape == (sum(report["counts"]["val"]), 10)
    assert np.bincount(predictions.labels, minlength=10).tolist() == report["counts"]["val"]
    assert predictions.fingerprint == RunFolder(workspace, run_id).predictions().fingerprint
    assert not set(predictions.indices) & set(RunFolder(workspace, run_id).predictions().indices)  # val, not test
    result = evaluate(predictions)
    assert result.num_samples == len(predictions) and 0.0 <= result.accuracy <= 1.0
    find_label_issues(predictions)
    assert folder.evaluations() == ["val-split"]
    assert folder.evaluation_source("val-split") == "split:val"
    assert not (folder.evaluations_dir / "val-split.tmp.npz").exists()


@pytest.mark.slow
def test_evaluate_job_over_a_new_folder_and_a_mismatched_one(trained, tmp_path):
    home, run_id = trained
    labels = write_digit_folder(tmp_path / "new", 50)
    workspace, job = run_evaluate_job(home, run_id, str(tmp_path / "new"), "fresh")
    assert job.status == "completed", (job.error, job.traceback)
    predictions = RunFolder(workspace, run_id).predictions("fresh")
    assert predictions.probabilities.shape == (50, 10)
    assert predictions.class_names == [str(i) for i in range(10)]
    assert np.bincount(predictions.labels, minlength=10).tolist() == np.bincount(labels, minlength=10).tolist()
    assert evaluate(predictions).accuracy > 0.3  # two epochs on 400 images; chance is 0.1

    shapes = write_image_folder(tmp_path / "shapes", classes=("0", "1", "cat"), per_class=3)
    workspace, job = run_evaluate_job(home, run_id, str(shapes), "shapes")
    assert job.status == "failed"
    assert "missing '2', '3'" in job.error and "not known to the model 'cat'" in job.error
    assert "shapes" not in RunFolder(workspace, run_id).evaluations()


def test_evaluation_requests_are_checked_before_queueing(workspace, tmp_path):
    from engine import evaluation
    from engine.config import RunConfig

    run = workspace.create_run(RunConfig())
    with pytest.raises(evaluation.EvaluationError, match="no such folder"):
        evaluation.request_evaluation(workspace, run.id, str(tmp_path / "nowhere"))
    with pytest.raises(evaluation.EvaluationError, match="expected one of"):
        evaluation.request_evaluation(workspace, run.id, "split:holdout")
    with pytest.raises(evaluation.EvaluationError, match="evaluation name"):
        evaluation.request_evaluation(workspace, run.id, "split:val", "../escape")
    with pytest.raises(evaluation.NoPredictions, match="no saved model"):
        evaluation.request_evaluation(workspace, run.id, "split:val")
    assert evaluation.default_evaluation_name("split:val") == "val-split"
    assert evaluation.default_evaluation_name("/data/new photos.zip") == "new_photos"
    assert workspace.latest_job(run.id, "evaluate") is None
