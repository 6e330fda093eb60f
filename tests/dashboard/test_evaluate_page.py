"""The Evaluate page in AppTest: runs recorded by hand through the store API (real digits, no TensorFlow)."""

from __future__ import annotations


import numpy as np
from streamlit.testing.v1 import AppTest

from engine.config import RunConfig
from engine.data import load_images, split_indices
from engine.runfolder import RunFolder
from engine.store import COMPLETED, Workspace, write_json_atomic
from tests.dashboard.apptest import HEAVY_LOADED, in_fresh_interpreter, open_app, texts

DATA = {"image_size": 16, "max_per_class": 30}


def completed_run(workspace: Workspace, *, mistakes: float = 0.2, seed: int = 0, data: dict | None = None) -> str:
    """A completed digits run with a data report and test predictions a job would have written."""
    data = {**DATA, **(data or {})}
    config = RunConfig.from_dict({"data": data, "train": {"epochs": 1}})
    run = workspace.create_run(config)
    job = workspace.claim_next_job(limit=10)
    images = load_images("digits", data["image_size"], max_per_class=data["max_per_class"], seed=0)
    split = split_indices(images.labels, config.data.val_fraction, config.data.test_fraction, config.data.seed)
    labels = images.labels[split.test]
    rng = np.random.default_rng(seed)
    predicted = labels.copy()
    wrong = rng.random(labels.size) < mistakes
    predicted[wrong] = (labels[wrong] + 3) % 10  # a consistent confusion: d -> d+3
    probs = rng.dirichlet(np.ones(10) * 0.3, size=labels.size) * 0.3
    probs[np.arange(labels.size), predicted] += 0.7
    np.savez_compressed(RunFolder(workspace, run.id).predictions_file, probabilities=probs.astype(np.float32),
                        labels=labels.astype(np.int32), ids=np.asarray([images.ids[i] for i in split.test], str),
                        indices=split.test.astype(np.int64), class_names=np.asarray(images.class_names, str))
    write_json_atomic(RunFolder(workspace, run.id).data_report_file,
                      {"source": "digits", "class_names": images.class_names, "fingerprint": images.fingerprint,
                       "counts": {}, "skipped": []})
    workspace.update_run(run.id, test_accuracy=float(np.mean(predicted == labels)), num_classes=10,
                         fingerprint=images.fingerprint)
    workspace.finish_job(job.id, COMPLETED)
    return run.id


def open_evaluate(**query) -> AppTest:
    return open_app("evaluate", **query)


def test_empty_state_without_completed_runs(workspace):
    workspace.create_run(RunConfig())  # queued: no predictions yet
    at = open_evaluate()
    assert "No completed run yet" in texts(at.info)


def test_a_completed_run_shows_metrics_matrix_and_mistakes(workspace):
    run_id = completed_run(workspace)
    at = open_evaluate()
    assert at.selectbox(key="eval.picker").value == run_id
    metrics = {m.label: m.value for m in at.metric}
    accuracy = workspace.get_run(run_id).test_accuracy
    assert metrics["Accuracy"] == f"{100 * accuracy:.2f}%"
    assert {"Top-5 accuracy", "Macro F1", "Weighted F1", "Mistakes", "ECE"} <= set(metrics)
    charts = " ".join(c.proto.id for c in at.get("plotly_chart"))
    assert all(key in charts for key in ("eval.cm.chart", "eval.reliability", "eval.per_class.chart"))
    per_class = next(f.value for f in at.dataframe if "Support" in f.value.columns)
    assert list(per_class["Class"]) == [str(i) for i in range(10)] and per_class["Support"].sum() > 0
    captions = [t.value for t in at.text if "→" in t.value]
    assert captions and all(c.startswith("✗") for c in captions)  # the gallery defaults to mistakes only
    assert len(at.image) >= len(captions)  # a thumbnail per card
    batch = [link for link in at.get("page_link") if "most confident mistakes" in link.proto.label]
    assert batch and batch[0].proto.page.endswith("explain") and f"run={run_id}" in batch[0].proto.query_string


def test_choosing_a_cell_filters_the_gallery(workspace):
    completed_run(workspace)
    at = open_evaluate()
    at.selectbox(key="eval.filter.true").set_value(2).run()
    at.selectbox(key="eval.filter.pred").set_value(5).run()  # the planted confusion 2 -> 5
    assert not at.exception
    cards = [t.value for t in at.text if "→" in t.value]
    assert cards and all(c.startswith("✗ true 2 → 5") for c in cards), cards
    assert f"true 2 predicted as 5 · {len(cards)} image" in texts(at.caption)
    at.selectbox(key="eval.filter.pred").set_value(7).run()  # no 2 -> 7 mistakes were planted
    assert "the model makes no such mistake" in texts(at.info)
    at.toggle(key="eval.filter.mistakes").set_value(False).run()
    at.selectbox(key="eval.filter.pred").set_value(2).run()  # the diagonal: right answers
    cards = [t.value for t in at.text if "→" in t.value]
    assert cards and all(c.startswith("✓ true 2 → 2") for c in cards)


def test_details_show_the_top_five(workspace):
    completed_run(workspace)
    at = open_evaluate()
    button = next(b for b in at.button if b.key and b.key.startswith("eval.gallery.open."))
    button.click().run()
    assert not at.exception
    assert any(t.value.startswith("Image id: digits/") for t in at.text)
    assert any("eval.gallery.detail.chart" in c.proto.id for c in at.get("plotly_chart"))
    at.button(key="eval.gallery.close").click().run()
    assert not any(t.value.startswith("Image id: digits/") for t in at.text)


def test_label_errors_table_and_csv_download(workspace):
    completed_run(workspace)
    at = open_evaluate()
    table = next(f.value for f in at.dataframe if "Model suggests" in f.value.columns)
    assert len(table) > 0 and list(table["Rank"])[:3] == [1, 2, 3]
    assert (table["P(given)"].diff().dropna() >= -1e-9).all()  # most doubtful first
    downloads = at.get("download_button")
    assert len(downloads) == 1


def test_compare_tab_with_two_runs(workspace):
    first = completed_run(workspace, mistakes=0.3, seed=1)
    second = completed_run(workspace, mistakes=0.05, seed=2)
    at = open_evaluate(run=second)
    assert at.selectbox(key="eval.compare.other").value == first
    metrics = next(f.value for f in at.dataframe if "B − A (pts)" in f.value.columns)
    assert list(metrics["Metric"])[:2] == ["Accuracy", "Macro F1"]
    verdict = texts(at.success) + texts(at.info)
    assert "McNemar's test" in verdict and "A is significantly better than B" in verdict, verdict
    cards = [t.value for t in at.text if t.value.startswith("true ") and " · A: " in t.value]
    assert cards


def test_compare_refuses_runs_on_different_test_sets(workspace):
    completed_run(workspace, data={"max_per_class": 20})
    second = completed_run(workspace)
    at = open_evaluate(run=second)
    assert "cannot be compared" in texts(at.warning)


def test_evaluate_never_imports_tensorflow(workspace):
    """The page, every tab and the detail view in a fresh interpreter: no TensorFlow, no Keras."""
    completed_run(workspace, seed=1)
    completed_run(workspace, seed=2)
    assert in_fresh_interpreter(f"""
        at.switch_page("views/evaluate.py").run()
        assert not at.exception, [e.value for e in at.exception]
        next(b for b in at.button if b.key and b.key.startswith("eval.gallery.open.")).click().run()
        assert not at.exception, [e.value for e in at.exception]
        print(json.dumps({HEAVY_LOADED}))
    """) is False


def saved_evaluation(workspace: Workspace, run_id: str, name: str, *, count: int = 25, source: str = "split:val"):
    """A fresh evaluation as an evaluate job would have saved it: all predicted as class 0."""
    from engine.evaluation import save_predictions

    labels = np.arange(count) % 10
    probs = np.full((count, 10), 0.02, np.float32)
    probs[:, 0] = 0.82
    folder = RunFolder(workspace, run_id)
    path = folder.evaluation_file(name)
    path.parent.mkdir(exist_ok=True)
    save_predictions(path, probs, labels, [f"digits/{i}" for i in range(count)], np.arange(count),
                     [str(i) for i in range(10)])
    write_json_atomic(folder.evaluation_file(name, ".json"), {"source": source})


def test_the_predictions_selector_lists_saved_evaluations(workspace):
    run_id = completed_run(workspace)
    saved_evaluation(workspace, run_id, "val-split")
    at = open_evaluate()
    selector = at.selectbox(key="eval.source")
    assert selector.options == ["Test split (from training)", "val-split · Validation split (fresh)"]
    assert selector.value == ""
    selector.set_value("val-split").run()
    assert not at.exception, [e.value for e in at.exception]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Accuracy"] == "12.00%" and metrics["Mistakes"] == "22 of 25"  # 3 of 25 are class 0
    at.selectbox(key="eval.source").set_value("").run()
    accuracy = workspace.get_run(run_id).test_accuracy
    assert {m.label: m.value for m in at.metric}["Accuracy"] == f"{100 * accuracy:.2f}%"


def test_evaluate_on_other_data_shows_request_errors_and_the_jobs_error(workspace, tmp_path):
    run_id = completed_run(workspace)  # no model.keras: a request is refused before it is queued
    at = open_evaluate()
    at.radio(key="eval.other.kind").set_value("A folder or .zip on the server")
    at.text_input(key="eval.other.path").input(str(tmp_path / "nowhere"))
    at.button[[b.proto.label for b in at.button].index("Start evaluation")].click().run()
    assert "no such folder or .zip" in texts(at.error)
    job = workspace.create_job(run_id, "evaluate")  # a job that failed the way a class mismatch fails
    workspace.finish_job(job.id, "failed", error="DatasetError: the folder's classes do not match the run's "
                                                 "(missing '2'); it needs one sub-folder per class named 0, 1, 2")
    at = open_evaluate()
    assert "The evaluation failed:** DatasetError: the folder's classes do not match" in texts(at.error)


def test_compare_pairs_an_evaluation_with_the_other_runs_evaluation_of_the_same_data(workspace):
    other = completed_run(workspace, seed=1)
    run_id = completed_run(workspace, seed=2)
    saved_evaluation(workspace, run_id, "val-split")
    at = open_evaluate(run=run_id)
    at.selectbox(key="eval.source").set_value("val-split").run()
    assert at.selectbox(key="eval.compare.other").value == other
    assert f"Run {other} has not been evaluated on its validation split yet" in texts(at.info)
    assert has_button(at, "eval.compare.evaluate")

    saved_evaluation(workspace, other, "validation", source="split:val")  # B's own name for the same data
    saved_evaluation(workspace, other, "elsewhere", source="/data/other")
    at.run()
    assert not at.exception
    assert not has_button(at, "eval.compare.evaluate")
    assert "25 shared images" in texts(at.caption)
    assert "predict the same class for every image" in texts(at.info)  # both say class 0 throughout


def has_button(at: AppTest, key: str) -> bool:
    return any(b.key == key for b in at.button)


def test_a_link_names_a_run_by_a_short_id_or_says_it_is_not_there(workspace):
    run_id = completed_run(workspace)
    completed_run(workspace, seed=1)  # the newest, shown by default
    at = open_evaluate(run=run_id[-4:])
    assert at.selectbox(key="eval.picker").value == run_id and not at.warning
    at = open_evaluate(run="gone-`**<b>x</b>")
    assert "The link names run `gone-bxb`, which is not one of these runs" in texts(at.warning)
