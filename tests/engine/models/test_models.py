"""Model factories on real TensorFlow with tiny random batches."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from engine.config import ConfigError, ModelConfig
from engine.cpu import CHOICE_ENV, ISA_ENV, ONEDNN_ENV, cpu_flags
from engine.models import (BASE_LAYER_NAME, describe_model, imagenet_weights_path, last_conv_layer_name,
                           make_model)
from engine.models.transfer import weights_file_names

NUM_CLASSES = 3
LENET5_PARAMS_32x32x3_10 = 83_126  # 456 + 2,416 + 576*120+120 + 120*84+84 + 84*10+10

OWN_MODELS = {
    "lenet5_tanh_average": ModelConfig(name="lenet5"),
    "lenet5_relu_max": ModelConfig(name="lenet5", activation="relu", pooling="max", dropout=0.2),
    "resnet": ModelConfig(name="resnet", width=8, depth=1, dropout=0.1),
    "resnet_cbam": ModelConfig(name="resnet_cbam", width=8, depth=2),
}


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    labels = np.arange(4) % NUM_CLASSES
    return images, labels


def check_trains_saves_and_reloads(model, batch, path):
    """Asserts probabilities out, one finite training step, and identical predictions after a reload."""
    images, labels = batch
    probabilities = model(images, training=False).numpy()
    assert probabilities.shape == (len(images), NUM_CLASSES)
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)

    # Eager: one step needs no tf.function trace, which would cost seconds per model.
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", run_eagerly=True)
    loss = model.train_on_batch(images, labels)
    assert np.isfinite(loss)

    model.save(path)
    reloaded = keras.models.load_model(path)  # safe mode: no Lambda layers allowed
    np.testing.assert_allclose(reloaded(images, training=False).numpy(), model(images, training=False).numpy(),
                               atol=1e-6)
    return reloaded


@pytest.mark.parametrize("key", OWN_MODELS)
def test_own_models_train_reload_and_give_gradcam_gradients(key, batch, tmp_path):
    config = OWN_MODELS[key]
    model = make_model(config, (32, 32, 3), NUM_CLASSES, seed=1)
    reloaded = check_trains_saves_and_reloads(model, batch, tmp_path / "model.keras")

    name = last_conv_layer_name(config)
    assert describe_model(reloaded)["last_conv"] == name
    grad_model = keras.Model(reloaded.inputs, [reloaded.get_layer(name).output, reloaded.output])
    images = tf.constant(batch[0][:1])
    with tf.GradientTape() as tape:
        features, probabilities = grad_model(images)
        score = probabilities[:, int(tf.argmax(probabilities[0]))]
    gradient = tape.gradient(score, features)
    assert gradient is not None
    assert gradient.shape == features.shape
    assert np.isfinite(gradient.numpy()).all()


def test_layer_names_are_stable():
    assert last_conv_layer_name(ModelConfig(name="lenet5")) == "conv2"
    assert last_conv_layer_name(ModelConfig(name="resnet", depth=2)) == "stage3_block2_out"
    assert last_conv_layer_name(ModelConfig(name="resnet_cbam", depth=3)) == "stage3_block3_out"
    assert last_conv_layer_name(ModelConfig(name="transfer", base="mobilenet_v2")) == "out_relu"
    assert last_conv_layer_name(ModelConfig(name="transfer", base="efficientnet_v2b0")) == "top_activation"

    model = make_model(ModelConfig(name="resnet_cbam", width=4, depth=2), (16, 16, 3), NUM_CLASSES)
    names = {layer.name for layer in model.layers}
    assert {"rescale", "stem_conv", "stage1_block1_out", "stage2_block1_proj_conv", "stage3_block2_out",
            "stage3_block2_cbam_channel_pool", "stage3_block2_cbam_spatial_conv", "avg_pool", "logits",
            "probabilities"} <= names
    assert "stage1_block1_proj_conv" not in names  # same shape: identity shortcut
    assert model.get_layer("stage3_block2_out").output.shape == (None, 4, 4, 16)


def test_lenet5_parameter_count_is_stable():
    model = make_model(ModelConfig(name="lenet5"), (32, 32, 3), 10)
    assert model.count_params() == LENET5_PARAMS_32x32x3_10
    description = describe_model(model)
    assert description == {"name": "lenet5", "params": LENET5_PARAMS_32x32x3_10,
                           "trainable_params": LENET5_PARAMS_32x32x3_10, "layers": 11, "last_conv": "conv2"}


@pytest.mark.parametrize("side", [8, 9, 16, 28])
def test_lenet5_builds_for_small_images(side):
    model = make_model(ModelConfig(name="lenet5"), (side, side, 3), NUM_CLASSES)
    probabilities = model(np.zeros((2, side, side, 3), "float32")).numpy()
    assert probabilities.shape == (2, NUM_CLASSES)
    if side == 28:  # the paper's geometry: 16 maps of 5x5 before the dense layers
        assert model.get_layer("flatten").output.shape == (None, 400)


def test_resnet_builds_for_8px_grayscale_and_non_square_images():
    for shape in [(8, 8, 1), (12, 20, 3)]:
        model = make_model(ModelConfig(name="resnet_cbam", width=4), shape, NUM_CLASSES)
        assert model(np.zeros((1, *shape), "float32")).shape == (1, NUM_CLASSES)


def test_seed_makes_builds_reproducible():
    config = ModelConfig(name="resnet_cbam", width=4)
    first, second, other = (make_model(config, (16, 16, 3), NUM_CLASSES, seed=seed) for seed in (7, 7, 8))
    for a, b in zip(first.get_weights(), second.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(first.get_weights(), other.get_weights(), strict=True))


def test_weight_decay_regularizes_every_kernel():
    config = ModelConfig(name="resnet_cbam", width=4)
    plain = make_model(config, (16, 16, 3), NUM_CLASSES)
    assert plain.losses == []
    model = make_model(config, (16, 16, 3), NUM_CLASSES, weight_decay=1e-4)
    kernels = [layer for layer in model.layers if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))]
    assert kernels and all(layer.kernel_regularizer is not None for layer in kernels)
    assert len(model.losses) == len(kernels)


MIXED_PRECISION_PROBE = """
import keras, numpy as np
from engine.config import ModelConfig
from engine.models import make_model
keras.mixed_precision.set_global_policy("mixed_float16")
for name in ("lenet5", "resnet_cbam"):
    model = make_model(ModelConfig(name=name, width=4), (16, 16, 3), 3)
    assert model.get_layer("logits").compute_dtype == "float16"
    probabilities = model(np.full((2, 16, 16, 3), 128, "float32"))
    assert probabilities.dtype == "float32"
    np.testing.assert_allclose(probabilities.numpy().sum(axis=1), 1.0, rtol=1e-3)
"""


def test_outputs_stay_float32_under_mixed_precision():
    """In a fresh process: float16 convolutions on the CPU need oneDNN off where AVX-512 limits it to AVX2."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[3]), TF_CPP_MIN_LOG_LEVEL="2")
    if "avx512f" in cpu_flags():
        env = {k: v for k, v in env.items() if k not in (ISA_ENV, CHOICE_ENV)} | {ONEDNN_ENV: "0"}
    done = subprocess.run([sys.executable, "-c", MIXED_PRECISION_PROBE], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.parametrize("kwargs, message", [
    ({"input_shape": (4, 4, 3)}, "input_shape=(4, 4, 3)"),
    ({"input_shape": (32, 32)}, "input_shape=(32, 32)"),
    ({"num_classes": 1}, "num_classes=1"),
    ({"weight_decay": -0.1}, "weight_decay=-0.1"),
    ({"config": ModelConfig(name="transfer"), "input_shape": (16, 16, 3)}, "at least 32x32"),
    ({"config": ModelConfig(name="transfer"), "input_shape": (32, 32, 1)}, "3 channels"),
])
def test_bad_arguments_are_named(kwargs, message):
    arguments = {"config": ModelConfig(), "input_shape": (32, 32, 3), "num_classes": NUM_CLASSES, **kwargs}
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make_model(arguments.pop("config"), **arguments)


def test_bad_config_is_a_config_error():
    with pytest.raises(ConfigError, match="model.name"):
        make_model(ModelConfig(name="vgg"), (32, 32, 3), NUM_CLASSES)


# Transfer models: each base is built once per module, with an empty Keras cache so that
# the test never depends on (or touches) the machine's ~/.keras.

class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def empty_keras_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("keras_home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KERAS_HOME", str(home))
        yield home


def cache_weights(home: Path, base: str, size: int = 32):
    """A base with random weights, saved as its ImageNet file in keras' legacy .h5 layout under `home/models`."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    from engine import zoo
    from engine.models.transfer import make_base

    reference = make_base(base, (size, size, 3), None)
    (home / "models").mkdir(parents=True, exist_ok=True)
    with h5py.File(home / "models" / zoo.get_base(base).file, "w") as file:
        legacy_h5_format.save_weights_to_hdf5_group(file, reference)
    return reference


def _build_transfer(config, home):
    cache_weights(home, config.base)
    records = _Records()
    logger = logging.getLogger("engine.models")
    logger.addHandler(records)
    try:
        model = make_model(config, (32, 32, 3), NUM_CLASSES, seed=0)
    finally:
        logger.removeHandler(records)
    return model, records.messages


@pytest.fixture(scope="module")
def mobilenet(empty_keras_home):
    """MobileNetV2 with its top 10 weighted layers fine-tuning."""
    config = ModelConfig(name="transfer", base="mobilenet_v2", fine_tune_layers=10, dropout=0.2)
    return (config, *_build_transfer(config, empty_keras_home))


@pytest.fixture(scope="module")
def efficientnet(empty_keras_home):
    """EfficientNetV2B0, frozen."""
    config = ModelConfig(name="transfer", base="efficientnet_v2b0")
    return (config, *_build_transfer(config, empty_keras_home))


@pytest.mark.slow
@pytest.mark.parametrize("which", ["mobilenet", "efficientnet"])
def test_transfer_models_train_and_reload(which, request, batch, tmp_path):
    config, model, warnings = request.getfixturevalue(which)
    assert warnings == []
    assert model.get_layer(BASE_LAYER_NAME).trainable_weights or config.fine_tune_layers == 0
    base_before = [w.copy() for w in model.get_layer(BASE_LAYER_NAME).get_weights()]

    reloaded = check_trains_saves_and_reloads(model, batch, tmp_path / "model.keras")

    changed = [not np.array_equal(a, b) for a, b in
               zip(base_before, model.get_layer(BASE_LAYER_NAME).get_weights(), strict=True)]
    assert any(changed) == (config.fine_tune_layers > 0)
    name = last_conv_layer_name(config)
    assert reloaded.get_layer(BASE_LAYER_NAME).get_layer(name).output.shape[1:3] == (1, 1)
    assert describe_model(reloaded)["last_conv"] == name
    assert describe_model(reloaded)["trainable_params"] == describe_model(model)["trainable_params"]


def test_a_transfer_model_without_its_weights_is_refused_with_the_how_to(tmp_path, monkeypatch):
    from engine.models.transfer import WeightsMissing

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(WeightsMissing, match="python -m engine weights get mobilenet_v3_small.*weights import"):
        make_model(ModelConfig(name="transfer", base="mobilenet_v3_small"), (32, 32, 3), NUM_CLASSES)
    with pytest.raises(WeightsMissing, match="no such file"):
        make_model(ModelConfig(name="transfer", weights=str(tmp_path / "nope.h5")), (32, 32, 3), NUM_CLASSES)


def test_random_weights_only_when_asked_and_then_the_base_trains(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    model = make_model(ModelConfig(name="transfer", base="mobilenet_v3_small", weights="random"), (32, 32, 3),
                       NUM_CLASSES)
    base = model.get_layer(BASE_LAYER_NAME)
    assert base.trainable and len(base.trainable_weights) > 50
    assert "rescale" not in [layer.name for layer in model.layers], "MobileNetV3 preprocesses 0..255 itself"


def test_transfer_frozen_base_trains_only_the_head(efficientnet):
    _, model, _ = efficientnet
    assert model.get_layer(BASE_LAYER_NAME).trainable_weights == []
    head = model.get_layer("logits")
    assert describe_model(model)["trainable_params"] == head.count_params() == 1280 * NUM_CLASSES + NUM_CLASSES
    assert model.get_layer(BASE_LAYER_NAME).get_layer("top_activation").output.shape == (None, 1, 1, 1280)


def test_transfer_fine_tunes_exactly_the_top_layers(mobilenet):
    config, model, _ = mobilenet
    base = model.get_layer(BASE_LAYER_NAME)
    trainable = [layer.name for layer in base.layers if layer.trainable and layer.trainable_weights]
    assert len(trainable) == config.fine_tune_layers == 10
    weighted = [layer for layer in base.layers
                if layer.weights and not isinstance(layer, keras.layers.BatchNormalization)]
    assert trainable == [layer.name for layer in weighted[-10:]]
    assert trainable[-1] == "Conv_1"
    assert not any(layer.trainable for layer in base.layers if isinstance(layer, keras.layers.BatchNormalization))


def test_imagenet_weights_path_finds_only_cached_files(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert imagenet_weights_path("mobilenet_v2") is None
    assert imagenet_weights_path("efficientnet_v2b0") is None

    models = tmp_path / "models"
    models.mkdir()
    (models / "efficientnetv2-b0_notop.h5").write_bytes(b"")
    generic = models / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
    generic.write_bytes(b"")
    assert imagenet_weights_path("efficientnet_v2b0") == models / "efficientnetv2-b0_notop.h5"
    assert imagenet_weights_path("mobilenet_v2") == generic
    assert imagenet_weights_path("mobilenet_v2", image_size=96) == generic
    specific = models / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_96_no_top.h5"
    specific.write_bytes(b"")
    assert imagenet_weights_path("mobilenet_v2", image_size=96) == specific
    with pytest.raises(ValueError, match="base='vgg16'"):
        imagenet_weights_path("vgg16")


def test_transfer_loads_cached_imagenet_weights(tmp_path, monkeypatch, caplog):
    """A weights file in the Keras cache (here: random weights in keras' legacy .h5 layout) is loaded."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    reference = keras.applications.MobileNetV2(include_top=False, input_shape=(32, 32, 3), weights=None)
    (tmp_path / "models").mkdir()
    with h5py.File(tmp_path / "models" / weights_file_names("mobilenet_v2")[-1], "w") as file:
        legacy_h5_format.save_weights_to_hdf5_group(file, reference)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))

    with caplog.at_level(logging.INFO, logger="engine.models"):
        model = make_model(ModelConfig(name="transfer"), (32, 32, 3), NUM_CLASSES)
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]
    for loaded, expected in zip(model.get_layer(BASE_LAYER_NAME).get_weights(), reference.get_weights(),
                                strict=True):
        np.testing.assert_array_equal(loaded, expected)
