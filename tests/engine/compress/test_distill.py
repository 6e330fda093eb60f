"""engine.compress.distill: the Distiller's loss, and a real distilled child run compared with the student alone."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from engine.compress import CompressRequest, child_config
from engine.compress.distill import Distiller, soften
from engine.compress.job import compress_run
from engine.runfolder import RunFolder
from engine.store import COMPLETED, Workspace
from tests.helpers.runs import train_tiny_run


def _softmax_model(units: int, seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4,))
    return keras.Model(inputs, keras.layers.Dense(units, activation="softmax")(inputs))


def test_softening_at_temperature_1_gives_the_probabilities_back_and_flattens_above():
    p = np.array([[0.7, 0.2, 0.1]], dtype=np.float32)
    assert np.allclose(keras.ops.convert_to_numpy(soften(p, 1.0)), p, atol=1e-6)
    soft = keras.ops.convert_to_numpy(soften(p, 4.0))
    assert soft.max() < 0.7 and soft.min() > 0.1 and np.isclose(soft.sum(), 1.0)
    assert soft.argmax() == 0


def test_the_distillation_loss_is_alpha_hard_plus_t_squared_kl_of_the_softened_answers():
    student, teacher = _softmax_model(3, 0), _softmax_model(3, 1)
    distiller = Distiller(student, teacher)
    distiller.compile(keras.optimizers.Adam(), alpha=0.3, temperature=2.0)
    x = np.random.default_rng(0).random((8, 4)).astype("float32")
    y = keras.ops.one_hot(np.arange(8) % 3, 3)
    y_pred = student(x)
    loss = float(distiller.compute_loss(x, y, y_pred))
    hard = float(keras.losses.CategoricalCrossentropy()(y, y_pred))
    t, s = (keras.ops.convert_to_numpy(soften(m(x), 2.0)) for m in (teacher, student))
    kl = float(np.mean(np.sum(t * np.log(t / s), axis=1)))
    assert loss == pytest.approx(0.3 * hard + 0.7 * 4.0 * kl, rel=1e-4)
    assert not teacher.trainable and distiller(x).shape == (8, 3)


def test_fitting_the_distiller_trains_only_the_student():
    student, teacher = _softmax_model(3, 0), _softmax_model(3, 1)
    before_teacher, before_student = teacher.get_weights(), student.get_weights()
    distiller = Distiller(student, teacher)
    distiller.compile(keras.optimizers.Adam(0.05), metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")])
    x = np.random.default_rng(1).random((32, 4)).astype("float32")
    history = distiller.fit(x, keras.ops.one_hot(np.arange(32) % 3, 3), epochs=2, verbose=0)
    assert "accuracy" in history.history and len(history.history["loss"]) == 2
    assert all(np.array_equal(a, b) for a, b in zip(before_teacher, teacher.get_weights()))
    assert not all(np.array_equal(a, b) for a, b in zip(before_student, student.get_weights()))


@pytest.mark.slow
def test_a_distilled_child_run_reports_the_student_beside_itself_alone_and_the_teacher(tmp_path):
    workspace = Workspace(tmp_path / "workspace")
    parent = train_tiny_run(workspace, model={"name": "resnet", "width": 16}, epochs=3)
    request = CompressRequest(method="distill", student="lenet5", epochs=2)
    child = workspace.create_run(child_config(workspace.get_run(parent).config, request), parent_id=parent,
                                 kind="compress", request_json=json.dumps(request.to_dict()))
    job = workspace.claim_next_job(limit=10)
    result = compress_run(RunFolder(workspace, child.id), request)
    workspace.finish_job(job.id, COMPLETED)

    run, folder = workspace.get_run(child.id), RunFolder(workspace, child.id)
    assert run.status == COMPLETED and run.model == "lenet5" and run.parent_id == parent
    saved = keras.saving.load_model(folder.model_file, compile=False)
    assert saved.name == "lenet5" and saved.count_params() == run.params == result["models"]["student"]["params"]
    models = result["models"]
    assert set(models) == {"student", "alone", "teacher"} and result["teacher_id"] == parent
    assert models["teacher"]["params"] == workspace.get_run(parent).params > 3 * models["student"]["params"]
    assert models["teacher"]["accuracy"] == pytest.approx(workspace.get_run(parent).test_accuracy)
    assert models["alone"]["params"] == models["student"]["params"]
    for facts in models.values():
        assert facts["size_bytes"] > facts["gzip_bytes"] > 0 and facts["latency_ms"] > 0
    assert models["student"]["accuracy"] == pytest.approx(run.test_accuracy) and run.test_accuracy > 0.5
    assert len(result["val_accuracy_curves"]["student"]) == len(result["val_accuracy_curves"]["alone"]) == 2
    assert result["gain_points"] == pytest.approx(100 * (models["student"]["accuracy"] - models["alone"]["accuracy"]))
