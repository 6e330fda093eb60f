"""KerasHub presets as transfer bases (`model.base=hub:<preset>`), offline: a tiny ResNet preset the test saves
is trained from, imported, listed and refused when missing, and bad preset folders are named."""

from __future__ import annotations

import json

import numpy as np
import pytest

import engine  # noqa: F401  (the oneDNN setting before TensorFlow)
from engine import weights, zoo
from engine.config import ModelConfig, RunConfig
from engine.models import BASE_LAYER_NAME, last_conv_layer_name, load_run_model, make_model
from engine.runfolder import RunFolder
from tests.engine.cli.test_cli import cli
from tests.helpers.runs import train_tiny_run

BASE = "hub:tiny_resnet"


@pytest.fixture
def hub_home(tmp_path, monkeypatch):
    """Empty Keras and KerasHub caches: nothing of the user's is seen, nothing is downloaded."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "kagglehub"))
    return tmp_path


def save_tiny_preset(folder, *, width: int = 16, blocks: int = 1, seed: int = 3):
    """Saves a random tiny ResNet image classifier (backbone + ImageNet converter) as a KerasHub preset folder."""
    import keras
    import keras_hub

    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64, width],
        stackwise_num_blocks=[1, blocks], stackwise_num_strides=[1, 2], block_type="basic_block")
    std, mean = np.array([0.229, 0.224, 0.225]), np.array([0.485, 0.456, 0.406])
    converter = keras_hub.layers.ResNetImageConverter(image_size=(32, 32), scale=(1 / (255 * std)).tolist(),
                                                      offset=(-mean / std).tolist())
    classifier = keras_hub.models.ResNetImageClassifier(
        backbone=backbone, num_classes=2, preprocessor=keras_hub.models.ResNetImageClassifierPreprocessor(converter))
    classifier.save_to_preset(str(folder))
    return backbone, converter


def test_a_missing_preset_is_refused_before_training_with_the_how_to(workspace, hub_home):
    with pytest.raises(zoo.WeightsMissing, match=f"weights get {BASE}.*weights import PRESET_FOLDER --base {BASE}"):
        zoo.resolve_weights(BASE, "imagenet")
    result = cli("train", "--model", "transfer", "--set", f"model.base={BASE}", "--image-size", "32")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert f"weights get {BASE}" in result.stderr and workspace.list_runs() == []
    result = cli("train", "--model", "transfer", "--set", "model.base=hub:no such", "--image-size", "32")
    assert result.returncode == 2 and "hub:<preset name>" in result.stderr


@pytest.mark.slow
def test_a_run_from_a_preset_folder_starts_from_its_weights_takes_0_255_and_fine_tunes_the_top(workspace, hub_home):
    import keras

    from engine.explain.gradcam import gradcam

    folder = hub_home / "preset"
    backbone, converter = save_tiny_preset(folder)
    config = ModelConfig(name="transfer", base=BASE, weights=str(folder))
    keras.utils.set_random_seed(99)  # another random init: only the preset can make the weights equal
    model = make_model(config, (32, 32, 3), 10)
    base = model.get_layer(BASE_LAYER_NAME)
    assert len(base.get_weights()) == len(backbone.get_weights()) > 20
    for a, b in zip(base.get_weights(), backbone.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not base.trainable_weights, "pretrained: frozen by default"
    pixels = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(model.get_layer("preprocess")(pixels), converter(pixels), rtol=1e-5, atol=1e-4)

    run_id = train_tiny_run(workspace, epochs=1, image_size=32, max_per_class=20, model={
        "name": "transfer", "base": BASE, "weights": str(folder)})
    assert RunConfig.from_dict({"model": {"name": "transfer", "base": BASE}}).model.base == BASE
    record = RunFolder(workspace, run_id).weights_record()
    assert record == {"base": BASE, "source": "import", "preset": str(folder),
                      "sha256": zoo.file_sha256(folder / "model.weights.h5")}
    trained = load_run_model(workspace, run_id)
    out = trained.predict(pixels.round(), verbose=0)
    assert out.shape == (2, 10) and np.allclose(out.sum(axis=1), 1, atol=1e-4)
    layer = last_conv_layer_name(config)
    assert trained.get_layer(BASE_LAYER_NAME).get_layer(layer) is not None
    heat = gradcam(trained, pixels[0], layer)
    assert np.isfinite(heat).all() and heat.max() > 0


@pytest.mark.slow
def test_two_phase_fine_tuning_moves_only_the_top_layers_of_a_hub_backbone(workspace, hub_home):
    import keras

    folder = hub_home / "preset"
    backbone, _ = save_tiny_preset(folder)
    config = RunConfig.from_dict({
        "data": {"source": "digits", "image_size": 32, "max_per_class": 20},
        "model": {"name": "transfer", "base": BASE, "weights": str(folder), "fine_tune_layers": 2},
        "train": {"epochs": 2, "head_epochs": 1, "batch_size": 32, "schedule": "constant", "early_stopping": 0},
        "augment": {"rotation": 0, "shift": 0, "zoom": 0}})
    from engine.training import train

    run = workspace.create_run(config)
    train(config, RunFolder(workspace, run.id))
    assert [m.epoch for m in workspace.epochs(run.id)] == [1, 2]
    base = keras.saving.load_model(RunFolder(workspace, run.id).last_checkpoint, compile=False).get_layer(
        BASE_LAYER_NAME)
    reference = {layer.name: layer.get_weights() for layer in backbone.layers}
    changed = {layer.name for layer in base.layers if layer.weights and any(
        not np.array_equal(a, b) for a, b in zip(layer.get_weights(), reference[layer.name]))}
    weighted = [layer.name for layer in base.layers
                if layer.weights and not isinstance(layer, keras.layers.BatchNormalization)]
    assert changed == set(weighted[-2:]), "only the top 2 weighted layers moved; batch norm stayed frozen"


def test_import_checks_the_folder_and_weights_list_shows_it(workspace, hub_home):
    good = hub_home / "good"
    save_tiny_preset(good)
    (hub_home / "empty").mkdir()
    result = cli("weights", "import", hub_home / "empty", "--base", BASE)
    assert result.returncode == 2 and "lacks config.json, model.weights.h5, image_converter.json" in result.stderr
    (hub_home / "converter_only").mkdir()
    for name in ("config.json", "model.weights.h5", "image_converter.json"):
        source = good / ("image_converter.json" if name == "config.json" else name)
        (hub_home / "converter_only" / name).write_bytes(source.read_bytes())
    with pytest.raises(weights.WeightsError, match="ResNetImageConverter, not a KerasHub Backbone"):
        weights.import_weights(hub_home / "converter_only", BASE)
    wider = hub_home / "wider"
    save_tiny_preset(wider, width=32)
    mismatched = hub_home / "mismatched"
    mismatched.mkdir()
    for name in zoo.PRESET_FILES:
        (mismatched / name).write_bytes(((wider if name == "model.weights.h5" else good) / name).read_bytes())
    with pytest.raises(weights.WeightsError, match="not a usable KerasHub preset"):
        weights.import_weights(mismatched, BASE)
    deeper = hub_home / "deeper"
    save_tiny_preset(deeper, blocks=2)
    (deeper / "model.weights.h5").write_bytes((good / "model.weights.h5").read_bytes())  # lacks a block's layers
    with pytest.raises(weights.WeightsError, match="not a usable KerasHub preset: its model.weights.h5 lacks weights"):
        weights.import_weights(deeper, BASE)
    assert not zoo.status(BASE).present

    target = weights.import_weights(good, BASE)
    assert target == zoo.hub_import_dir(BASE) and zoo.status(BASE).source == "import"
    with pytest.raises(weights.WeightsError, match="backbone config differs in stackwise_num_filters"):
        weights.import_weights(wider, BASE)
    listed = {row["base"]: row for row in json.loads(cli("weights", "list", "--json").stdout)}
    sha = zoo.file_sha256(good / "model.weights.h5")
    assert listed[BASE]["present"] and listed[BASE]["source"] == "import" and listed[BASE]["sha256"] == sha
    assert not listed["hub:resnet_50_imagenet"]["present"]
    _, record = zoo.resolve_weights(BASE, "imagenet")
    assert record == {"source": "import", "sha256": sha, "preset": str(target)}


def test_a_mobilenet_preset_builds_with_its_converter_and_reloads(hub_home):
    import keras
    import keras_hub

    from engine.explain.gradcam import gradcam

    backbone = keras_hub.models.MobileNetBackbone(
        stackwise_expansion=[[40, 56], [64, 144]], stackwise_num_blocks=[2, 2], stackwise_num_filters=[[16, 16], [24, 24]],
        stackwise_kernel_size=[[3, 3], [5, 5]], stackwise_num_strides=[[2, 1], [2, 1]],
        stackwise_se_ratio=[[None, None], [0.25, 0.25]], stackwise_activation=[["relu", "relu"], ["hard_swish"] * 2],
        stackwise_padding=[[1, 1], [2, 2]], output_num_filters=32, last_layer_filter=32, input_activation="hard_swish",
        output_activation="hard_swish", input_num_filters=16, depthwise_filters=8, depthwise_stride=2,
        depthwise_residual=False, squeeze_and_excite=0.5, image_shape=(None, None, 3))
    converter = keras_hub.layers.MobileNetImageConverter(image_size=(32, 32), scale=1 / 255.0)
    keras_hub.models.MobileNetImageClassifier(
        backbone=backbone, num_classes=2, preprocessor=keras_hub.models.MobileNetImageClassifierPreprocessor(converter)
    ).save_to_preset(str(hub_home / "mobilenet"))
    model = make_model(ModelConfig(name="transfer", base="hub:tiny_mobilenet", weights=str(hub_home / "mobilenet")),
                       (32, 32, 3), 3)
    model.save(hub_home / "m.keras")
    reloaded = keras.saving.load_model(hub_home / "m.keras", compile=False)
    pixels = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(reloaded.get_layer("preprocess")(pixels), pixels / 255.0, atol=1e-5)
    np.testing.assert_allclose(reloaded.predict(pixels, verbose=0), model.predict(pixels, verbose=0), atol=1e-5)
    heat = gradcam(reloaded, pixels[0], zoo.HUB_FEATURES)
    assert heat.shape[:2] == (32, 32) and np.isfinite(heat).all()
