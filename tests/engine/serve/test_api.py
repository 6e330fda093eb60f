"""`engine serve` through a plain HTTP client: TF Serving's status, metadata and :predict formats for the Keras
model and the INT8 file, agreeing with `engine evaluate` and LiteRT; :classify_image, :explain and feedback."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from engine.data.images import decode_image
from engine.store import HOME_ENV, PredictionLog
from tests.engine.serve.conftest import ROOT, jpeg_bytes, multipart, png_bytes

CLASSES = [str(i) for i in range(10)]
CHUNK = 128  # images per :predict request (the server takes at most 256)


def predict_all(server, trained, images: np.ndarray, *, columnar: bool, fmt: str | None = None) -> np.ndarray:
    """Every image through :predict in TF Serving's row (`instances`) or columnar (`inputs`) format."""
    key, answer_key = ("inputs", "outputs") if columnar else ("instances", "predictions")
    parts = []
    for start in range(0, len(images), CHUNK):
        chunk = images[start:start + CHUNK].astype(float).tolist()
        reply = server.post_json(trained.path(":predict"), {key: chunk}, format=fmt, log=0)
        assert reply.status == 200, reply.body[:300]
        answer = reply.json()
        assert list(answer) == [answer_key]
        parts.append(np.asarray(answer[answer_key], dtype=np.float64))
    probabilities = np.concatenate(parts)
    assert probabilities.shape == (len(images), len(CLASSES))
    assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-4 if fmt is None else 0.02)  # INT8: 1/256 steps
    return probabilities


@pytest.fixture(scope="module")
def evaluated(trained) -> dict:
    """`python -m engine evaluate RUN --data split:test --json`: the Keras model re-predicting the test split."""
    result = subprocess.run([sys.executable, "-m", "engine", "evaluate", trained.run_id, "--data", "split:test",
                             "--json"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, HOME_ENV: str(trained.home), "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def test_split(trained):
    return trained.test_images()


def test_status_is_tf_servings_exactly(server, trained):
    expected = {"model_version_status": [{"version": "1", "state": "AVAILABLE",
                                          "status": {"error_code": "OK", "error_message": ""}}]}
    for path in (trained.path(), trained.path("/versions/1")):
        reply = server.call("GET", path)
        assert reply.status == 200 and reply.headers["content-type"].startswith("application/json")
        assert reply.json() == expected
    listed = server.call("GET", "/v1/models").json()["models"]
    assert [m["name"] for m in listed] == [trained.run_id] and {"keras", "int8"} <= set(listed[0]["formats"])


def test_metadata_describes_the_signature_and_the_classes(server, trained):
    answer = server.call("GET", trained.path("/metadata")).json()
    assert answer["model_spec"] == {"name": trained.run_id, "signature_name": "", "version": "1"}
    signature = answer["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["method_name"] == "tensorflow/serving/predict"
    images = signature["inputs"]["images"]
    assert images["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in images["tensor_shape"]["dim"]] == ["-1", "16", "16", "3"]
    output = signature["outputs"]["probabilities"]
    assert [d["size"] for d in output["tensor_shape"]["dim"]] == ["-1", "10"]
    extra = answer["aperture"]
    assert extra["input"]["name"] == "images" and extra["input"]["shape"] == [-1, 16, 16, 3]
    assert extra["input"]["dtype"] == "float32" and extra["input"]["range"] == [0, 255]
    assert extra["input"]["channels"] == "RGB"
    assert extra["class_names"] == CLASSES
    assert {"keras", "int8"} <= set(extra["formats"])


def test_keras_predictions_in_both_formats_agree_with_engine_evaluate(server, trained, test_split, evaluated):
    images, labels, saved = test_split
    rows = predict_all(server, trained, images, columnar=False)
    columns = predict_all(server, trained, images, columnar=True)
    assert np.allclose(rows, columns, atol=1e-5)
    assert np.allclose(rows, saved, atol=1e-4), np.abs(rows - saved).max()
    assert np.array_equal(rows.argmax(1), saved.argmax(1))
    predicted = rows.argmax(1)
    assert evaluated["num_samples"] == len(images)
    assert evaluated["accuracy"] == pytest.approx(float(np.mean(predicted == labels)), abs=1e-12)
    confusion = np.zeros((10, 10), int)
    np.add.at(confusion, (labels, predicted), 1)
    assert confusion.tolist() == evaluated["confusion_matrix"]


def test_int8_predictions_agree_with_litert_and_the_parity_report(server, trained, test_split, evaluated):
    from engine import export
    from engine.runfolder import RunFolder

    images, labels, saved = test_split
    rows = predict_all(server, trained, images, columnar=False, fmt="int8")
    columns = predict_all(server, trained, images, columnar=True, fmt="int8")
    assert np.allclose(rows, columns, atol=1e-6)
    runner = export.load_runner(RunFolder(trained.workspace, trained.run_id).exports()["int8"], "int8")
    direct = np.concatenate([runner.predict(images[i:i + 1].astype(np.float32)) for i in range(len(images))])
    assert np.allclose(rows, direct, atol=1e-6), np.abs(rows - direct).max()
    report = export.read_report(trained.workspace, trained.run_id).artifact("int8")
    assert float(np.mean(rows.argmax(1) == labels)) == pytest.approx(report.accuracy, abs=1e-9)
    assert np.mean(rows.argmax(1) == saved.argmax(1)) >= 0.9  # the INT8 file keeps the Keras model's answers
    assert abs(report.accuracy - evaluated["accuracy"]) <= 0.02 + 1e-9  # within the parity gate


def test_tf_servings_named_input_forms_are_accepted(server, trained, test_split):
    images = test_split[0][:3].astype(float).tolist()
    plain = server.post_json(trained.path(":predict"), {"instances": images}, log=0).json()["predictions"]
    named_rows = server.post_json(trained.path(":predict"), {"instances": [{"images": i} for i in images],
                                                             "signature_name": "serving_default"}, log=0)
    named_columns = server.post_json(trained.path(":predict"), {"inputs": {"images": images}}, log=0)
    assert named_rows.status == 200 and named_columns.status == 200
    assert np.allclose(named_rows.json()["predictions"], plain, atol=1e-6)
    assert np.allclose(named_columns.json()["outputs"], plain, atol=1e-6)


def test_predict_logs_every_image_and_returns_their_ids(server, trained, test_split):
    log = PredictionLog(trained.workspace)
    images = test_split[0][:4]
    reply = server.post_json(trained.path(":predict"), {"instances": images.astype(float).tolist()}, format="int8")
    assert reply.status == 200
    ids = reply.headers["x-aperture-log-ids"].split(",")
    assert len(ids) == 4 and len(set(ids)) == 4
    probabilities = np.asarray(reply.json()["predictions"])
    for log_id, p, image in zip(ids, probabilities, images):
        row = log.get(log_id)
        assert (row.run_id, row.format, row.source) == (trained.run_id, "int8", "api")
        assert row.top1 == int(p.argmax()) and row.top1_probability == pytest.approx(p.max(), abs=1e-6)
        assert row.pixel_mean == pytest.approx(image.mean(), abs=1e-3) and row.feedback_label is None
    before = log.count(trained.run_id)
    assert server.post_json(trained.path(":predict"), {"instances": images.astype(float).tolist()}, log=0).status == 200
    assert log.count(trained.run_id) == before  # log=0: the dashboard's own test-set views are not recorded


def digit(test_split, index: int = 0, size: int = 16) -> np.ndarray:
    """A test image, enlarged to `size` so the server has to resize it as the Data pipeline does."""
    from PIL import Image

    image = test_split[0][index]
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.NEAREST))


@pytest.mark.parametrize("kind", ["png", "jpeg", "png-multipart", "jpeg-multipart"])
def test_classify_image_gives_top_k_and_a_log_id_and_matches_predict(server, trained, test_split, kind):
    image = digit(test_split, 3, size=40)
    fmt = kind.split("-")[0]
    data = png_bytes(image) if fmt == "png" else jpeg_bytes(image)
    if kind.endswith("multipart"):
        body, content_type = multipart("file", f"digit.{fmt}", data, f"image/{fmt}")
        reply = server.post_file(trained.path(":classify_image"), body, content_type)
    else:
        reply = server.post_file(trained.path(":classify_image"), data, f"image/{fmt}")
    assert reply.status == 200, reply.body[:300]
    answer = reply.json()
    assert answer["model"] == trained.run_id and answer["format"] == "keras"
    top = answer["top_k"]
    assert len(top) == 5 and [t["probability"] for t in top] == sorted((t["probability"] for t in top), reverse=True)
    assert all(t["class"] == CLASSES[t["index"]] for t in top)
    probabilities = np.asarray(answer["probabilities"])
    assert top[0]["index"] == int(probabilities.argmax())
    row = PredictionLog(trained.workspace).get(answer["log_id"])
    assert row.top1 == top[0]["index"] and row.format == "keras" and row.batch_size == answer["batch_size"] >= 1

    decoded = decode_image(data, 16)  # what the Data pipeline makes of the same file
    assert decoded.shape == (16, 16, 3)
    same = server.post_json(trained.path(":predict"), {"instances": [decoded.astype(float).tolist()]}, log=0)
    assert np.allclose(same.json()["predictions"][0], probabilities, atol=1e-5)


def test_classify_image_top_k_and_int8(server, trained, test_split):
    data = png_bytes(test_split[0][5])
    answer = server.post_file(trained.path(":classify_image"), data, "image/png", k=3, format="int8").json()
    assert answer["format"] == "int8" and len(answer["top_k"]) == 3
    decoded = decode_image(data, 16).astype(float).tolist()
    same = server.post_json(trained.path(":predict"), {"instances": [decoded]}, format="int8", log=0).json()
    assert np.allclose(same["predictions"][0], answer["probabilities"], atol=1e-6)
    assert len(server.post_file(trained.path(":classify_image"), data, "image/png", k=99).json()["top_k"]) == 10


def test_explain_returns_an_attribution_of_the_images_size(server, trained, test_split):
    data = png_bytes(test_split[0][7])
    reply = server.post_file(trained.path(":explain"), data, "image/png", timeout=120)
    assert reply.status == 200, reply.body[:300]
    answer = reply.json()
    attribution = np.asarray(answer["attribution"], dtype=np.float64)
    assert attribution.shape == (16, 16) and np.isfinite(attribution).all() and attribution.max() > attribution.min()
    assert answer["method"] == "gradcam" and answer["model"] == trained.run_id
    predicted = server.post_file(trained.path(":classify_image"), data, "image/png", log=0).json()
    assert answer["target"] == predicted["top_k"][0]["index"]
    assert np.allclose(answer["probabilities"], predicted["probabilities"], atol=1e-5)
    assert PredictionLog(trained.workspace).get(answer["log_id"]).run_id == trained.run_id


def test_feedback_judges_the_logged_prediction_and_records_the_label(server, trained, test_split):
    log = PredictionLog(trained.workspace)
    images, labels, _ = test_split
    for index, label in ((0, lambda y: int(y)), (1, lambda y: CLASSES[int(y)])):  # by index, then by name
        answer = server.post_file(trained.path(":classify_image"), png_bytes(images[index]), "image/png").json()
        predicted = answer["top_k"][0]["index"]
        reply = server.post_json(trained.path("/feedback"), {"log_id": answer["log_id"],
                                                             "label": label(labels[index])})
        assert reply.status == 200, reply.body
        assert reply.json() == {"log_id": answer["log_id"], "label": CLASSES[int(labels[index])],
                                "predicted": CLASSES[predicted], "correct": predicted == int(labels[index])}
        row = log.get(answer["log_id"])
        assert row.feedback_label == int(labels[index]) and row.feedback_at is not None
        assert row.correct == (predicted == int(labels[index]))
    wrong = (predicted + 1) % 10  # a later label replaces the first, and the verdict follows it
    again = server.post_json(trained.path("/feedback"), {"log_id": answer["log_id"], "label": wrong}).json()
    assert again["correct"] is False and log.get(answer["log_id"]).feedback_label == wrong
