"""Two-phase fine-tuning: the head alone, then the top of the base at a lower rate, in one run's curves."""

from __future__ import annotations

import numpy as np
import pytest

import engine  # noqa: F401  (the oneDNN setting before TensorFlow)
from engine.config import RunConfig
from engine.models import BASE_LAYER_NAME
from engine.runfolder import RunFolder
from engine.training import train
from tests.engine.models.test_models import cache_weights
from tests.helpers.images import write_image_folder


@pytest.mark.slow
def test_two_phase_fine_tuning_trains_the_head_then_the_top_layers(workspace, tmp_path, monkeypatch):
    import keras

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    reference = cache_weights(tmp_path / "keras", "mobilenet_v3_small")
    folder = write_image_folder(tmp_path / "imgs", classes=("a", "b"), per_class=10, size=32)
    config = RunConfig.from_dict({
        "data": {"source": str(folder), "image_size": 32, "val_fraction": 0.2, "test_fraction": 0.2},
        "model": {"name": "transfer", "base": "mobilenet_v3_small", "fine_tune_layers": 4},
        "train": {"epochs": 3, "head_epochs": 1, "learning_rate": 0.01, "fine_tune_lr_factor": 0.1,
                  "schedule": "constant", "batch_size": 8},
        "augment": {"rotation": 0, "shift": 0, "zoom": 0}})
    run = workspace.create_run(config)
    result = train(config, RunFolder(workspace, run.id))
    assert result.epochs == 3
    history = workspace.epochs(run.id)
    assert [m.epoch for m in history] == [1, 2, 3], "both phases in one run's curves"
    assert history[0].learning_rate == pytest.approx(0.01) and history[2].learning_rate == pytest.approx(0.001)

    model = keras.saving.load_model(RunFolder(workspace, run.id).last_checkpoint, compile=False)
    base = model.get_layer(BASE_LAYER_NAME)
    changed = {layer.name for layer, ref in zip(base.layers, reference.layers, strict=True)
               if layer.weights and any(not np.array_equal(a, b) for a, b in zip(layer.get_weights(),
                                                                                    ref.get_weights()))}
    weighted = [layer.name for layer in base.layers
                if layer.weights and not isinstance(layer, keras.layers.BatchNormalization)]
    assert changed == set(weighted[-4:]), "only the top 4 weighted layers moved; batch norm stayed frozen"
    assert RunFolder(workspace, run.id).weights_record()["source"] == "imagenet"
