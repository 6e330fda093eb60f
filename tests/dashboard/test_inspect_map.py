"""Evaluate's Map and Duplicates tabs in AppTest, on runs recorded through the store API (real digits, no TensorFlow).

The stored inspection is written with `engine.inspect`'s own writers from real features (the images'
pixels, mapped by PCA), as the inspect job would write them; the job itself is tested with the engine.
"""

from __future__ import annotations

import base64
import json

import numpy as np
from sklearn.decomposition import PCA

from engine import inspect
from engine.config import RunConfig
from engine.data import SPLIT_CODES, load_images, split_dataset
from engine.inspect.duplicates import (content_hashes, hash_neighbours, nearest_neighbours, perceptual_hashes,
                                       save_neighbours)
from engine.inspect.embeddings import save_embeddings
from engine.runfolder import RunFolder
from engine.store import COMPLETED, Workspace, write_json_atomic
from tests.dashboard.apptest import HEAVY_LOADED, in_fresh_interpreter, open_app, texts

DATA = {"image_size": 16, "max_per_class": 20}


def recorded_run(workspace: Workspace, source: str = "digits", *, mistakes: float = 0.25, seed: int = 0,
                 wrong_ids: set[str] = frozenset(), embeddings: bool = True, name: str = "recorded") -> str:
    """A completed run on `source` with the data report and test predictions a training job writes (and,
    with `embeddings`, the stored inspection); `wrong_ids` are predicted wrong on purpose."""
    config = RunConfig.from_dict({"name": name, "data": {"source": source, **DATA}, "train": {"epochs": 1}})
    run = workspace.create_run(config)
    job = workspace.claim_next_job(limit=10)
    folder = RunFolder(workspace, run.id)
    images = load_images(source, DATA["image_size"], max_per_class=DATA["max_per_class"], seed=0,
                         cache_dir=workspace.cache_dir)
    split = split_dataset(images, config.data.val_fraction, config.data.test_fraction, config.data.seed)
    n = len(images.class_names)
    rng = np.random.default_rng(seed)
    labels = np.asarray(images.labels, np.int64)
    predicted = labels.copy()
    wrong = (rng.random(labels.size) < mistakes) | np.isin(np.asarray(images.ids), list(wrong_ids))
    predicted[wrong] = (labels[wrong] + 3) % n
    probs = rng.dirichlet(np.ones(n) * 0.3, size=labels.size) * 0.3
    probs[np.arange(labels.size), predicted] += 0.7
    test = split.test
    np.savez_compressed(folder.predictions_file, probabilities=probs[test].astype(np.float32),
                        labels=labels[test].astype(np.int32), ids=np.asarray([images.ids[i] for i in test], str),
                        indices=test.astype(np.int64), class_names=np.asarray(images.class_names, str))
    write_json_atomic(folder.data_report_file, {"source": source, "class_names": images.class_names,
                                                "fingerprint": images.fingerprint, "counts": {}, "skipped": []})
    if embeddings:
        splits = np.zeros(len(images), np.int8)
        splits[split.val], splits[split.test] = SPLIT_CODES["val"], SPLIT_CODES["test"]
        features = np.asarray(images.images, np.float32).reshape(len(images), -1) / 255.0
        save_embeddings(folder.embeddings_file, inspect.Embeddings(
            features=features.astype(np.float16), xy=PCA(2, random_state=0).fit_transform(features).astype(np.float32),
            map_method="pca", ids=np.asarray(images.ids, str), indices=np.arange(len(images)), splits=splits,
            labels=labels.astype(np.int32), predicted=predicted.astype(np.int32),
            confidence=probs.max(axis=1).astype(np.float16), content_hashes=content_hashes(images.images),
            class_names=list(images.class_names)))
        save_neighbours(folder.neighbours_file, [hash_neighbours(perceptual_hashes(images.images)),
                                                 nearest_neighbours(features)])
    workspace.update_run(run.id, test_accuracy=float(np.mean(predicted[test] == labels[test])), num_classes=n,
                         fingerprint=images.fingerprint)
    workspace.finish_job(job.id, COMPLETED)
    return run.id


def _select(at, rows) -> None:
    """What a box/lasso selection on the map sends back: the points with their row as customdata."""
    at.session_state["eval.map.chart"] = {"selection": {"points": [{"customdata": int(r)} for r in rows],
                                                        "box": [], "lasso": [], "point_indices": list(rows)}}


def map_figure(at) -> dict:
    """The Map tab's plotly figure as sent to the browser."""
    return json.loads(next(c for c in at.get("plotly_chart") if "eval.map.chart" in c.proto.id).proto.spec)


def values(array) -> np.ndarray:
    """A trace's array as plotly sends it: a list, or typed binary (`{"dtype", "bdata"}`)."""
    if isinstance(array, dict):
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=np.dtype(array["dtype"]))
    return np.asarray(array)


def points(figure: dict) -> int:
    return sum(values(t["x"]).size for t in figure["data"])


def test_the_map_colours_points_and_a_selection_fills_the_gallery(workspace):
    run_id = recorded_run(workspace)
    at = open_app("evaluate")
    assert at.selectbox(key="eval.picker").value == run_id
    figure = map_figure(at)
    assert {t["type"] for t in figure["data"]} == {"scattergl"} and len(figure["data"]) == 10  # one per true class
    assert points(figure) == 200
    assert sorted(np.concatenate([values(t["customdata"]) for t in figure["data"]]).tolist()) == list(range(200))
    assert "Select points on the map" in texts(at.info)

    at.segmented_control(key="eval.map.colour").set_value("Correct / wrong").run()
    assert [t["name"] for t in map_figure(at)["data"]] == ["correct", "wrong"]

    _select(at, [0, 1, 2, 5])
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    md = texts(at.markdown)
    assert "Selected: 4 images" in md and "4 images selected" in md
    assert any(c.value.startswith(("✓", "✗")) for c in at.caption)


def test_a_highlighted_class_greys_the_others_and_the_splits_filter(workspace):
    recorded_run(workspace)
    at = open_app("evaluate")
    at.selectbox(key="eval.map.class").set_value(4).run()
    figure = map_figure(at)
    assert figure["data"][0]["name"] == "others" and figure["data"][0]["marker"]["color"] == "#ced4da"
    at.multiselect(key="eval.map.splits").set_value(["test"]).run()
    assert points(map_figure(at)) == 30


def test_without_embeddings_the_map_offers_the_inspect_job_and_says_why_it_cannot_start(workspace):
    run_id = recorded_run(workspace, embeddings=False)
    at = open_app("evaluate")
    assert "has no embeddings yet" in texts(at.info)
    at.button(key="eval.inspect.start.the").click().run()  # a recorded run has no model file: the job is refused
    assert not at.exception and "has no saved model" in texts(at.error)
    assert workspace.latest_job(run_id, inspect.INSPECT_JOB) is None


def test_duplicates_show_the_leakage_headline_and_exclude_the_test_copies(workspace):
    recorded_run(workspace)
    at = open_app("evaluate")
    assert at.selectbox(key="eval.dups.signal").value == "hash"
    assert at.slider(key="eval.dups.threshold.hash").value == inspect.DEFAULT_NEAR_THRESHOLD
    # Digits at 16 px: 3 of the 30 test images have a training image within 10 hash bits (19 of 30 right).
    assert "Test accuracy 63.3 % → 59.3 % without 3 near-copies of training images (3 of 30" in texts(at.warning)
    at.slider(key="eval.dups.threshold.hash").set_value(1.0).run()
    assert "no test image has a near-copy" in texts(at.success)
    at.slider(key="eval.dups.threshold.hash").set_value(inspect.DEFAULT_NEAR_THRESHOLD).run()
    at.button(key="eval.dups.exclude").click().run()
    assert any("Save 3 fixes as a dataset version" in b.label for b in at.button)
    pair_buttons = [b for b in at.button if b.key and b.key.startswith("eval.dups.x.")]
    assert len(pair_buttons) == 8  # 4 train/test pairs, an Exclude under each image
    at.selectbox(key="eval.dups.signal").set_value("embedding").run()
    at.slider(key="eval.dups.threshold.embedding").set_value(0.97).run()
    assert "63.3 % → 54.5 % without 8 near-copies" in texts(at.warning)
    at.segmented_control(key="eval.dups.scope").set_value("All pairs").run()
    assert not at.exception and "pairs (" in texts(at.caption)


def test_the_inspect_tabs_and_health_never_load_tensorflow_umap_or_cleanvision(workspace):
    recorded_run(workspace)
    loaded = in_fresh_interpreter(f"""
        assert not at.exception, [e.value for e in at.exception]
        at.switch_page("views/evaluate.py").run()
        at.session_state["eval.map.chart"] = {{"selection": {{"points": [{{"customdata": 1}}]}}}}
        at.run()
        at.switch_page("views/data.py").run()
        assert not at.exception, [e.value for e in at.exception]
        print(json.dumps([{HEAVY_LOADED}, *(m in sys.modules for m in ("umap", "cleanvision", "numba"))]))
    """)
    assert loaded == [False, False, False, False]
