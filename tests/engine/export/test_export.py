"""engine.export: every format from a tiny real model, loaded back in its own runtime; the gate; metadata; Grad-CAM."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine import export
from engine.config import ModelConfig
from engine.model_card import build_model_card, write_model_card
from engine.runfolder import RunFolder
from engine.store import Workspace
from tests.helpers.runs import train_tiny_run

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny digits run (lenet5, 16x16), trained once for the module."""
    workspace = Workspace(tmp_path_factory.mktemp("export") / "workspace")
    return workspace, train_tiny_run(workspace)


@pytest.fixture(scope="module")
def exported(trained):
    workspace, run_id = trained
    report = export.export_run(workspace, run_id, export.ExportRequest(formats=export.FORMATS, latency_runs=5))
    return workspace, run_id, report


def test_every_format_loads_back_in_its_own_runtime_and_matches_keras(exported):
    workspace, run_id, report = exported
    assert [a.format for a in report.artifacts] == list(export.FORMATS)
    assert report.reference_accuracy > 0.6, report.reference_accuracy
    for artifact in report.artifacts:
        assert artifact.error is None, (artifact.format, artifact.error)
        path = RunFolder(workspace, run_id).resolve(artifact.path)
        assert path == RunFolder(workspace, run_id).export_artifact(artifact.format).resolve()
        assert path.exists() and artifact.size_bytes > 0
        assert artifact.runtime == export.FORMATS[artifact.format].runtime
        tolerance = {"int8": 0.03, "uint8": 0.03, "openvino_int8": 0.03, "dynamic": 0.01,
                     "float16": 0.002}.get(artifact.format, 1e-4)
        assert artifact.mean_abs_prob_diff <= tolerance, (artifact.format, artifact.mean_abs_prob_diff)
        assert abs(artifact.accuracy_drop) <= 2.0 and artifact.passed, artifact
        assert artifact.latency_ms_median > 0 and artifact.latency_ms_p95 >= artifact.latency_ms_median
    sizes = {a.format: a.size_bytes for a in report.artifacts}
    assert sizes["int8"] < 0.4 * sizes["float32"] and sizes["float16"] < 0.6 * sizes["float32"]
    assert export.read_report(workspace, run_id) == report


def test_runners_agree_with_keras_on_fresh_images(exported):
    workspace, run_id, report = exported
    data = export.load_run_split(workspace, run_id)
    images = data["images"][data["test_indices"][:8]].astype(np.float32)
    folder = RunFolder(workspace, run_id)
    keras_probs = export.load_runner(folder.model_file, "keras").predict(images)
    for fmt in ("float32", "int8", "uint8", "saved_model", "onnx"):
        probs = export.load_runner(folder.exports()[fmt], fmt).predict(images)
        assert probs.shape == keras_probs.shape
        assert np.allclose(probs.sum(1), 1, atol=0.05)
        assert np.max(np.abs(probs - keras_probs)) < (0.1 if fmt in ("int8", "uint8") else 1e-3), fmt


def test_metadata_round_trips_and_describes_the_input(exported):
    workspace, run_id, report = exported
    metadata = export.read_metadata(RunFolder(workspace, run_id).export_metadata_file)
    assert metadata == RunFolder(workspace, run_id).export_metadata()
    config = workspace.get_run(run_id).config
    assert metadata == export.export_metadata(run_id, config, report.class_names, report.artifacts)
    assert json.loads(json.dumps(metadata)) == metadata
    assert metadata["class_names"] == [str(i) for i in range(10)]
    assert metadata["input"]["shape"] == [None, 16, 16, 3] and metadata["input"]["range"] == [0.0, 255.0]
    int8 = metadata["artifacts"]["int8"]
    assert int8["input_dtype"] == "int8" and int8["input_scale"] > 0 and "input_zero_point" in int8


def test_max_drop_gate_fails_a_broken_int8_export(trained, tmp_path):
    workspace, run_id = trained
    zeros = np.zeros((20, 16, 16, 3), np.uint8)  # a useless calibration set: every range collapses
    report = export.export_run(workspace, run_id, export.ExportRequest(formats=("int8",), max_drop=0.5,
                                                                       latency_runs=5), calibration_images=zeros)
    int8 = report.artifact("int8")
    assert not int8.passed and not report.passed
    assert int8.accuracy_drop > 0.5 and len(int8.flipped) > 0
    assert "float16" in int8.suggestion and "calibrat" in int8.suggestion


def test_the_format_table_keeps_every_name_workspaces_and_clients_rely_on(tmp_path):
    """File names, labels, runtimes and the Demo's choices are what existing workspaces and pages have."""
    assert {name: f.artifact for name, f in export.FORMATS.items()} == {
        "float32": "model_float32.tflite", "dynamic": "model_dynamic.tflite", "float16": "model_float16.tflite",
        "int8": "model_int8.tflite", "uint8": "model_uint8.tflite", "saved_model": "saved_model",
        "onnx": "model.onnx", "keras": "model.keras", "openvino": "openvino", "openvino_int8": "openvino_int8"}
    assert export.DEFAULT_FORMATS == ("float32", "dynamic", "float16", "int8", "saved_model", "onnx", "keras",
                                      "openvino", "openvino_int8")
    assert export.TFLITE_FORMATS == ("float32", "dynamic", "float16", "int8", "uint8")
    assert [export.format_label(f) for f in ("int8", "uint8", "saved_model", "keras", "old")] == [
        "TFLite INT8 (int8 I/O)", "TFLite INT8 (uint8 I/O)", "TF SavedModel", "Keras (.keras)", "old"]
    assert {f.runtime for f in export.FORMATS.values()} == {"LiteRT", "TensorFlow", "onnxruntime", "Keras",
                                                                "OpenVINO"}
    assert [(f, export.FORMATS[f].demo) for f in export.DEMO_FORMATS] == [
        ("int8", "INT8 TFLite"), ("uint8", "INT8 TFLite (uint8)"), ("float32", "float32 TFLite"), ("keras", "Keras")]
    folder = RunFolder(Workspace(tmp_path / "workspace"), "20240101-000000-abcd")
    for name, spec in export.FORMATS.items():
        assert folder.export_artifact(name) == folder.exports_dir / spec.artifact
        assert callable(spec.writer()) and issubclass(spec.runner(), export.Runner)
    assert export.ExportRequest(formats=export.FORMATS).formats == tuple(export.FORMATS)
    assert "use float32" in export.suggest_fallback("float16", 10)
    assert "calibrate" in export.suggest_fallback("uint8", 10)


def test_listing_formats_imports_no_tensorflow():
    code = ("import sys, engine.export.formats, engine.export, engine.runfolder; "
            "assert not {'tensorflow', 'keras', 'onnxruntime'} & set(sys.modules), sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


def test_request_validation_names_the_bad_value():
    with pytest.raises(export.ExportError, match="tflite9"):
        export.ExportRequest(formats=("tflite9",)).validate()
    with pytest.raises(export.ExportError, match="max_drop"):
        export.ExportRequest(max_drop=-1).validate()
    assert export.ExportRequest.from_dict(export.ExportRequest().to_dict()) == export.ExportRequest()


def test_model_card_has_data_metrics_parity_and_limits(exported):
    workspace, run_id, _ = exported
    md_path, html_path = write_model_card(workspace, run_id)
    text = md_path.read_text()
    for heading in ("## Data", "## Model and training configuration", "## Metrics", "## Known confusions",
                    "## Exports and parity", "## Intended use and limits"):
        assert heading in text
    assert "TFLite INT8 (int8 I/O)" in text and "| 0 |" in text  # class 0 row in the data table
    assert html_path.read_text().startswith("<!doctype html>") and "<table>" in html_path.read_text()
    assert RunFolder(workspace, run_id).model_card() == text and RunFolder(workspace, run_id).model_card("html")
    assert build_model_card(workspace, run_id).title.startswith("Model card")


@pytest.mark.slow
def test_cli_export_prints_json_and_exits_by_the_gate(trained):
    workspace, run_id = trained
    env = dict(os.environ, PYTHONPATH=str(ROOT), APERTURE_HOME=str(workspace.root), APERTURE_STANDBY="0")
    result = subprocess.run([sys.executable, "-m", "engine", "export", run_id[-4:], "--format", "float16", "--json"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout)
    assert {"path", "format", "size_bytes", "accuracy", "reference_accuracy", "flipped", "latency_ms_median",
            "passed"} <= set(out)
    assert out["format"] == "float16" and out["passed"] and Path(out["path"]).exists()
    assert workspace.latest_job(run_id, "export").status == "completed"
    assert workspace.get_run(run_id).job.kind == "train"  # the run's status still follows its train job

    bad = subprocess.run([sys.executable, "-m", "engine", "export", run_id, "--format", "tflite9"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "tflite9" in bad.stderr


@pytest.mark.parametrize("model", [{"name": "lenet5"}, {"name": "resnet", "depth": 1, "width": 8},
                                   {"name": "transfer", "base": "mobilenet_v2", "weights": "random"}])
def test_gradcam_returns_a_non_constant_map(model, tmp_path):
    import keras

    from engine.explain.gradcam import gradcam, overlay
    from engine.models import last_conv_layer_name, make_model

    size = 64 if model["name"] == "transfer" else 24  # MobileNetV2's last map is 1x1 below 64 px
    config = ModelConfig(**model)
    net = make_model(config, (size, size, 3), 3, seed=0)
    if config.name == "transfer":  # a random base trains whole (model.weights=random); this test wants it frozen
        net.get_layer("base").trainable = False
    rng = np.random.default_rng(0)
    images = rng.integers(0, 60, (30, size, size, 3)).astype(np.float32)
    labels = np.arange(30) % 3
    images[np.arange(30), :, :, labels] += 150  # colour says the class
    net.compile("adam", "sparse_categorical_crossentropy")
    net.fit(images, labels, epochs=2, verbose=0)
    net.save(tmp_path / "model.keras")
    net = keras.saving.load_model(tmp_path / "model.keras", compile=False)  # must also work after save/load
    cam = gradcam(net, images[0], last_conv_layer_name(config))
    assert cam.shape == (size, size) and cam.dtype == np.float32
    assert 0 <= cam.min() and cam.max() <= 1 and cam.std() > 1e-3
    assert overlay(images[0].astype(np.uint8), cam).shape == (size, size, 3)
