"""engine.compress.prune: the schedule, masks, and a real pruned child run that exports to INT8."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from engine import export
from engine.compress import CompressRequest, child_config, read_compress_report
from engine.compress.job import compress_run
from engine.compress.prune import (MagnitudePruning, PolynomialDecay, magnitude_mask, measure_sparsity,
                                   prunable_kernels, schedule_for, strip)
from engine.runfolder import RunFolder
from engine.store import COMPLETED, Workspace
from tests.helpers.runs import train_tiny_run


def test_the_polynomial_schedule_rises_like_tfmots_and_holds():
    schedule = PolynomialDecay(final_sparsity=0.8, end_step=100, frequency=10)
    values = [schedule.sparsity(step) for step in (0, 10, 50, 90, 100, 500)]
    assert values[0] == 0.0 and values[-1] == values[-2] == pytest.approx(0.8)
    assert values[2] == pytest.approx(0.8 * (1 - 0.5 ** 3))  # fast at first, slow near the end
    assert all(a < b for a, b in zip(values[:5], values[1:5]))
    assert [s for s in range(0, 120) if schedule.updates_at(s)] == list(range(0, 101, 10))
    with pytest.raises(ValueError):
        PolynomialDecay(final_sparsity=1.0, end_step=10)
    assert schedule_for(0.75, 10).end_step == 7 and schedule_for(0.75, 1).end_step == 1


def test_a_magnitude_mask_zeroes_exactly_the_smallest_weights():
    weights = np.array([[0.5, -0.1, 0.05], [-2.0, 0.3, 0.0]], dtype=np.float32)
    mask = magnitude_mask(weights, 0.5)
    assert mask.shape == weights.shape and mask.sum() == 3
    assert (mask == np.array([[1, 0, 0], [1, 1, 0]])).all()
    assert magnitude_mask(weights, 0.0).all() and not magnitude_mask(weights, 1.0).any()


def test_pruning_during_fit_keeps_pruned_weights_at_zero_and_strips_to_plain_layers():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 1))
    x = keras.layers.Conv2D(8, 3, name="conv")(inputs)
    x = keras.layers.DepthwiseConv2D(3, name="depthwise")(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="head")(x)
    model = keras.Model(inputs, outputs)
    model.compile("adam", "sparse_categorical_crossentropy")
    kernels = prunable_kernels(model)
    assert set(kernels) == {"conv", "depthwise", "head"}
    pruning = MagnitudePruning(kernels, schedule_for(0.6, 20))
    x, y = np.random.rand(64, 6, 6, 1).astype("float32"), np.random.randint(0, 3, 64)
    model.fit(x, y, batch_size=16, epochs=5, callbacks=[pruning], verbose=0)
    pruning.finish()
    per_layer, overall = measure_sparsity(model)
    assert all(value == pytest.approx(0.6, abs=0.02) for value in per_layer.values())
    assert overall == pytest.approx(0.6, abs=0.02)
    plain = strip(model)
    assert [type(layer) for layer in plain.layers] == [type(layer) for layer in model.layers]
    assert getattr(plain, "optimizer", None) is None and measure_sparsity(plain) == (per_layer, overall)


@pytest.mark.slow
def test_a_pruned_child_run_is_a_run_every_page_can_open_and_exports_to_int8(tmp_path):
    workspace = Workspace(tmp_path / "workspace")
    parent = train_tiny_run(workspace, epochs=4)
    request = CompressRequest(method="prune", sparsity=0.75, epochs=3)
    child = workspace.create_run(child_config(workspace.get_run(parent).config, request), parent_id=parent,
                                 kind="compress", request_json=json.dumps(request.to_dict()))
    job = workspace.claim_next_job(limit=10)
    progress = []
    result = compress_run(RunFolder(workspace, child.id), request, report=lambda p, m: progress.append(p))
    workspace.finish_job(job.id, COMPLETED)

    run, folder = workspace.get_run(child.id), RunFolder(workspace, child.id)
    assert run.status == COMPLETED and run.parent_id == parent and run.job.kind == "compress"
    assert folder.has_model and folder.predictions().class_names == RunFolder(workspace, parent).class_names()
    assert folder.predictions().indices.tolist() == RunFolder(workspace, parent).predictions().indices.tolist()
    assert len(workspace.epochs(child.id)) == 3 and progress[-1] == 1.0 and progress == sorted(progress)
    assert read_compress_report(workspace, child.id) == json.loads(json.dumps(result))
    assert result["sparsity"] == pytest.approx(0.75, abs=0.01)
    assert set(result["layers"]) == {"conv1", "conv2", "fc1", "fc2", "logits"}
    assert all(layer["sparsity"] == pytest.approx(0.75, abs=0.01) for layer in result["layers"].values())
    saved = keras.saving.load_model(folder.model_file, compile=False)
    assert measure_sparsity(saved)[1] == pytest.approx(result["sparsity"])
    assert result["gzip_sizes"]["keras"]["ratio"] < 0.6 and result["gzip_sizes"]["tflite"]["ratio"] < 0.6
    assert run.test_accuracy == result["test_accuracy"] and result["accuracy_drop_points"] < 15

    report = export.export_run(workspace, child.id, export.ExportRequest(formats=("int8", "openvino"),
                                                                        latency_runs=5))
    assert all(a.error is None and a.passed for a in report.artifacts), report.artifacts
