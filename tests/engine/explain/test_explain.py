"""Explanations: every method on real Keras models (reloaded, nested transfer base), a planted cue, faithfulness;
Grad-CAM's placement, sub-cell shifts and compiled-graph cache; the warm-up."""

from __future__ import annotations

import gc
import json
import logging
import subprocess
import sys
import weakref
from pathlib import Path

import keras
import numpy as np
import pytest

from engine.config import ModelConfig
from engine.explain import faithfulness as fa
from engine.explain import gradcam as gc_module
from engine.explain.methods import (METHODS, SIDE_BY_SIDE, Explanation, explain, method_label, most_faithful, verdict,
                                    warm_up)
from engine.models import BASE_LAYER_NAME, last_conv_layer_name, make_model

SIZE = 32
CUE = (slice(0, SIZE // 2), slice(0, SIZE // 2))  # the top-left quadrant carries the class
COLOURS = np.array([[200, 40, 40], [40, 200, 40]], dtype=np.float32)
FAST = {"shap": {"max_evals": 300, "batch_size": 100}, "lime": {"num_samples": 500, "batch_size": 250}}


def planted(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Each quadrant one of two colours at random; the label is the top-left quadrant's colour only."""
    rng = np.random.default_rng(seed)
    half = SIZE // 2
    colours = rng.integers(0, 2, (count, 2, 2))
    images = COLOURS[colours].repeat(half, axis=1).repeat(half, axis=2)
    images = np.clip(images + rng.normal(0, 20, images.shape), 0, 255).astype(np.float32)
    return images, colours[:, 0, 0].astype(np.int32)


@pytest.fixture(scope="module")
def cue_model(tmp_path_factory):
    """A LeNet-5 trained in-process to read only the top-left quadrant, reloaded from its `.keras` file."""
    images, labels = planted(768, seed=0)
    model = make_model(ModelConfig(activation="relu", pooling="max"), (SIZE, SIZE, 3), 2, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(images, labels, epochs=6, batch_size=32, verbose=0)
    path = tmp_path_factory.mktemp("cue") / "model.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path, compile=False)
    test_images, test_labels = planted(64, seed=1)
    accuracy = float(np.mean(np.argmax(reloaded.predict(test_images, verbose=0), axis=1) == test_labels))
    assert accuracy > 0.95, f"the planted-cue model did not learn the cue (accuracy {accuracy:.2f})"
    return reloaded, test_images[:4], test_labels[:4]


def _cue_share(attribution: np.ndarray) -> float:
    positive = np.clip(attribution, 0, None)
    return float(positive[CUE].sum() / max(positive.sum(), 1e-12))


@pytest.mark.parametrize("method", ["gradcam", pytest.param("shap", marks=pytest.mark.slow), "lime"])
def test_each_method_finds_the_planted_cue_and_beats_random(cue_model, method):
    model, images, labels = cue_model
    results = [explain(model, image, method, target=int(label), class_names=["red", "green"], **FAST.get(method, {}))
               for image, label in zip(images, labels)]
    for result in results:
        assert isinstance(result, Explanation)
        assert result.attribution.shape == (SIZE, SIZE) and np.all(np.isfinite(result.attribution))
        assert result.seconds > 0 and result.target_name in ("red", "green")
    shares = [_cue_share(r.attribution) for r in results]
    assert np.mean(shares) > 0.5, f"{method}: {shares} of the positive mass in the cue quadrant (chance 0.25)"
    # Faithfulness: deleting the top-attributed pixels hurts more, inserting them helps more, than random.
    assert np.mean([r.deletion_auc for r in results]) < np.mean([r.random_deletion_auc for r in results])
    assert np.mean([r.insertion_auc for r in results]) > np.mean([r.random_insertion_auc for r in results])
    assert all(r.faithfulness_score is not None for r in results)


@pytest.mark.slow
def test_both_gradcams_find_the_planted_cue_through_a_pooled_head(tmp_path):
    """Grad-CAM++ weighs each location's positive gradient as if the score were linear in globally pooled
    features (a ResNet's or a transfer model's head). On LeNet-5's flatten-and-dense head that does not hold,
    and on the planted cue it loses the class (chance share), so it is tested here on a ResNet."""
    images, labels = planted(768, seed=0)
    model = make_model(ModelConfig(name="resnet", width=8), (SIZE, SIZE, 3), 2, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    model.fit(images, labels, epochs=4, batch_size=32, verbose=0)
    model = _reloaded(model, tmp_path)
    test_images, test_labels = planted(64, seed=1)
    assert np.mean(np.argmax(model.predict(test_images, verbose=0), axis=1) == test_labels) > 0.95
    for method in ("gradcam", "gradcam_pp"):
        results = [explain(model, image, method, target=int(label)) for image, label in zip(test_images[:4],
                                                                                              test_labels[:4])]
        shares = [_cue_share(r.attribution) for r in results]
        assert np.mean(shares) > 0.4, f"{method}: {shares} of the positive mass in the cue quadrant (chance 0.25)"
        assert np.mean([r.deletion_auc for r in results]) < np.mean([r.random_deletion_auc for r in results])
        assert np.mean([r.insertion_auc for r in results]) > np.mean([r.random_insertion_auc for r in results])


def test_explain_defaults_to_the_predicted_class_and_rejects_bad_input(cue_model):
    model, images, _ = cue_model
    result = explain(model, images[0], "gradcam", faithfulness=False)
    assert result.target == int(np.argmax(model.predict(images[:1], verbose=0)[0]))
    assert result.deletion_auc is None and result.faithfulness_score is None
    assert result.target_name == str(result.target)
    with pytest.raises(ValueError, match="method"):
        explain(model, images[0], "occlusion")
    with pytest.raises(ValueError, match="target"):
        explain(model, images[0], "gradcam", target=5)
    with pytest.raises(ValueError, match="image shape"):
        explain(model, images[0][..., 0], "gradcam")


def test_faithfulness_ranks_a_true_map_above_an_inverted_one(cue_model):
    model, images, labels = cue_model
    predict = fa.model_predict(model)
    truth = np.zeros((SIZE, SIZE), dtype=np.float32)
    truth[CUE] = 1
    good = fa.deletion_insertion(predict, images[0], truth, int(labels[0]))
    bad = fa.deletion_insertion(predict, images[0], 1 - truth, int(labels[0]))
    assert good.deletion_auc < good.random_deletion_auc < bad.deletion_auc
    assert good.insertion_auc > bad.insertion_auc
    assert len(good.deletion_curve) == fa.DEFAULT_STEPS + 1
    assert good.deletion_curve[0] == pytest.approx(good.insertion_curve[-1], abs=1e-5)
    with pytest.raises(ValueError, match="shape"):
        fa.deletion_insertion(predict, images[0], truth[:4], 0)


def test_most_faithful_and_verdict():
    def fake(method, d, i, rd=0.5, ri=0.5):
        return Explanation(method, np.zeros((2, 2)), 0, "a", 0.9, deletion_auc=d, insertion_auc=i,
                           random_deletion_auc=rd, random_insertion_auc=ri)

    results = [fake("gradcam", 0.3, 0.7), fake("lime", 0.1, 0.9), fake("shap", 0.6, 0.4)]
    assert most_faithful(results).method == "lime"
    assert verdict(results).startswith("LIME is the most faithful")
    assert "caution" in verdict([fake("shap", 0.6, 0.4)])
    assert verdict([fake("gradcam", 0.3, 0.4)]).startswith("Grad-CAM beats chance here: removing")
    assert most_faithful([]) is None


def test_the_method_table_declares_labels_settings_and_warm_ups():
    assert SIDE_BY_SIDE == ("gradcam", "shap", "lime")
    assert {name: m.label for name, m in METHODS.items()} == {
        "gradcam": "Grad-CAM", "shap": "SHAP", "lime": "LIME", "gradcam_pp": "Grad-CAM++",
        "shap_gradient": "SHAP (gradients)"}
    assert method_label("occlusion") == "occlusion"
    assert METHODS["shap"].defaults == {"max_evals": 500, "batch_size": 50, "masker": "grey"}
    assert METHODS["lime"].defaults == {"num_samples": 1000, "batch_size": 200, "n_segments": 30, "seed": 0}
    assert {name: tuple(m.tunable) for name, m in METHODS.items() if m.side_by_side} == {
        "gradcam": (), "shap": ("max_evals", "batch_size"), "lime": ("num_samples", "batch_size", "n_segments")}
    assert [name for name, m in METHODS.items() if m.needs_conv] == ["gradcam", "gradcam_pp"]
    assert {name: m.job_warm_up for name, m in METHODS.items() if m.job_warm_up is not None} == {
        "gradcam": {}, "shap": {"max_evals": 40, "batch_size": 40}}
    assert METHODS["gradcam"].warm_up is METHODS["gradcam_pp"].warm_up  # one graph serves both
    assert [name for name, m in METHODS.items() if m.instant] == ["gradcam"]


def test_listing_methods_imports_no_tensorflow():
    code = ("import sys, engine.explain.methods, engine.explain.batch; "
            "assert not {'tensorflow', 'keras', 'shap', 'lime'} & set(sys.modules), sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[3], check=True, timeout=60)


def test_pointing_game():
    mask = np.zeros((4, 4), dtype=bool)
    mask[:2, :2] = True
    inside, outside = np.zeros((4, 4)), np.zeros((4, 4))
    inside[1, 1], outside[3, 3] = 1, 1
    assert fa.pointing_hit(inside, mask) and not fa.pointing_hit(outside, mask)
    assert fa.pointing_game([inside, outside], [mask, mask]) == 0.5
    near = np.zeros((4, 4))
    near[2, 2] = 1  # one pixel diagonally off the mask's corner
    assert not fa.pointing_hit(near, mask) and not fa.pointing_hit(near, mask, tolerance=1)
    assert fa.pointing_hit(near, mask, tolerance=2) and not fa.pointing_hit(outside, mask, tolerance=2)
    assert np.isnan(fa.pointing_game([], []))


def _reloaded(model, tmp_path):
    model.save(tmp_path / "model.keras")
    return keras.saving.load_model(tmp_path / "model.keras", compile=False)


@pytest.mark.parametrize("base", ["mobilenet_v2", pytest.param("efficientnet_v2b0", marks=pytest.mark.slow)])
def test_gradcam_through_a_nested_transfer_base(monkeypatch, tmp_path, caplog, base):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # no ImageNet weights here: random, as asked, no download
    config = ModelConfig(name="transfer", base=base, weights="random")
    with caplog.at_level(logging.WARNING):
        model = make_model(config, (SIZE, SIZE, 3), 3, seed=0)
    assert BASE_LAYER_NAME in {layer.name for layer in model.layers}
    image = np.random.default_rng(0).uniform(0, 255, (SIZE, SIZE, 3)).astype(np.float32)
    for net in (model, _reloaded(model, tmp_path)):
        for method in ("gradcam", "gradcam_pp"):
            result = explain(net, image, method, layer_name=last_conv_layer_name(config), steps=5)
            assert result.attribution.shape == (SIZE, SIZE) and np.all(np.isfinite(result.attribution))
            assert result.params["layer"] == last_conv_layer_name(config)
            assert result.deletion_auc is not None
    # At 64 px the base's last map is 2x2 (a cell every 32 px): the shifts spread over that stride.
    assert gc_module.default_shifts((64, 64, 3), (2, 2)) == (4, 4) and gc_module._offsets(4, 32) == [-16, -8, 0, 8]
    assert gc_module.default_shifts((SIZE, SIZE, 3), (1, 1)) == (1, 1)  # on 32 px the map is 1x1: nothing to shift


@pytest.mark.parametrize("config", [ModelConfig(name="resnet", width=8),
                                    pytest.param(ModelConfig(name="resnet_cbam", width=8), marks=pytest.mark.slow)],
                         ids=["resnet", "resnet_cbam"])
def test_both_gradcams_on_reloaded_resnets(config, tmp_path):
    model = _reloaded(make_model(config, (SIZE, SIZE, 3), 4, seed=0), tmp_path)
    image = np.random.default_rng(1).uniform(0, 255, (SIZE, SIZE, 3)).astype(np.float32)
    layer = last_conv_layer_name(config)
    for method in ("gradcam", "gradcam_pp"):
        result = explain(model, image, method, target=2, faithfulness=False)
        assert result.params["layer"] == layer and result.target == 2
        assert result.attribution.shape == (SIZE, SIZE) and np.all(np.isfinite(result.attribution))
        assert 0 <= result.attribution.min() and result.attribution.max() <= 1
    rows, cols = gc_module.cell_centres(model, layer, image.shape)
    assert len(rows) == len(cols) == SIZE // 4 and np.all(np.diff(rows) > 0) and 0 < rows[0] < rows[-1] < SIZE


def _lenet_geometry_model():
    """LeNet-5's geometry (5x5 same conv, 2x2 pooling, 5x5 valid conv) with uniform kernels, so that each cell's
    receptive field is symmetric about its geometric centre."""
    inputs = keras.Input((SIZE, SIZE, 1), name="image")
    x = keras.layers.Conv2D(1, 5, padding="same", use_bias=False, kernel_initializer="ones", name="conv1")(inputs)
    x = keras.layers.AveragePooling2D(2, name="pool1")(x)
    x = keras.layers.Conv2D(1, 5, padding="valid", use_bias=False, kernel_initializer="ones", name="conv2")(x)
    logits = keras.layers.Dense(2, name="logits")(keras.layers.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, keras.layers.Activation("softmax")(logits))


def test_gradcam_places_each_cell_where_it_looks(cue_model):
    """LeNet-5's conv2 on 32 px is valid: its 12 cells are centred on pixels 5, 7, ..., 27 (from the image's
    edge); a plain resize spreads them over 1.3 .. 30.7, up to 3.7 px off."""
    expected, plain = 5 + 2 * np.arange(12), gc_module._even(12, SIZE)
    rows, cols = gc_module.cell_centres(_lenet_geometry_model(), "conv2", (SIZE, SIZE, 1))
    assert np.allclose(rows[1:-1], expected[1:-1], atol=0.05) and np.allclose(cols, rows)
    # The border cells sit a little inwards: part of their field is conv1's zero padding.
    assert expected[0] < rows[0] < expected[0] + 0.5 and expected[-1] - 0.5 < rows[-1] < expected[-1]
    # The trained LeNet-5: learned kernels are not symmetric, so its fields are not either, but they stay close.
    model, images, _ = cue_model
    rows, cols = gc_module.cell_centres(model, "conv2", images[0].shape)
    for centres in (rows, cols):
        assert np.abs(centres - expected).max() < 1.5 < 3 < np.abs(plain - expected).max()


def _pooling_model():
    """A hand-set model whose class-0 score is the mean brightness, seen through a 4x4 average-pooled grid."""
    inputs = keras.Input((SIZE, SIZE, 1), name="image")
    pooled = keras.layers.AveragePooling2D(4, name="pool")(inputs)
    features = keras.layers.Conv2D(1, 1, use_bias=False, kernel_initializer="ones", name="conv")(pooled)
    x = keras.layers.GlobalAveragePooling2D()(features)
    logits = keras.layers.Dense(2, kernel_initializer=keras.initializers.Constant([[1.0, -1.0]]), name="logits")(x)
    return keras.Model(inputs, keras.layers.Activation("softmax")(logits))


def test_gradcam_shifts_resolve_a_spot_to_the_pixel():
    """A 2x2 spot on a 4 px grid: one pass can only say which cell; the shifted passes, placed back, find it."""
    model = _pooling_model()
    rows, _ = gc_module.cell_centres(model, "conv", (SIZE, SIZE, 1))
    assert np.allclose(rows, 4 * np.arange(8) + 2, atol=1e-3)  # average pooling: no padding, no offset
    errors = {1: [], None: []}
    for y, x in [(5, 9), (14, 14), (17, 22), (26, 3), (10, 28)]:
        image = np.zeros((SIZE, SIZE, 1), dtype=np.float32)
        image[y:y + 2, x:x + 2] = 255  # centred on (y + 1, x + 1) in pixel-edge coordinates
        for shifts in errors:
            for variant in gc_module.VARIANTS:
                heat = gc_module.gradcam(model, image, "conv", 0, shifts=shifts, variant=variant)
                peak = np.argwhere(heat >= heat.max() - 1e-6).mean(axis=0) + 0.5
                errors[shifts].append(np.abs(peak - (y + 1, x + 1)).max())
    assert max(errors[None]) <= 1.0, errors
    assert max(errors[1]) > max(errors[None])


def test_gradcam_compiles_once_per_model_and_layer_and_forgets_with_the_model():
    model = make_model(ModelConfig(), (16, 16, 3), 3, seed=0)
    images = np.random.default_rng(2).uniform(0, 255, (3, 16, 16, 3)).astype(np.float32)
    for image in images:
        for target in (None, 0, 2):
            for variant in gc_module.VARIANTS:
                gc_module.gradcam(model, image, "conv2", target, variant=variant)
    graph = gc_module._cam_graph(model, "conv2")
    assert graph._cams.experimental_get_tracing_count() == 1  # every class, image and variant: one trace
    heat = gc_module.gradcam(model, images[0], "conv2", 0)
    assert heat.shape == (16, 16) and heat.dtype == np.float32 and 0 <= heat.min() and heat.max() <= 1
    with pytest.raises(ValueError, match="variant"):
        gc_module.gradcam(model, images[0], "conv2", variant="gradcam_xx")
    with pytest.raises(ValueError, match="spatial"):
        gc_module.gradcam(model, images[0], "fc1")
    alive = weakref.ref(model)
    del model, graph
    gc.collect()
    assert alive() is None  # the cache holds no reference to the model


def test_shap_gradient_on_a_reloaded_model(cue_model):
    model, images, labels = cue_model
    background, _ = planted(16, seed=2)
    result = explain(model, images[0], "shap_gradient", target=int(labels[0]), background=background, nsamples=64)
    assert result.attribution.shape == (SIZE, SIZE) and result.attribution.dtype == np.float32
    assert np.all(np.isfinite(result.attribution)) and np.abs(result.attribution).max() > 0
    assert result.params == {"nsamples": 64, "background": 16}
    with pytest.raises(ValueError, match="background"):
        explain(model, images[0], "shap_gradient", faithfulness=False)
    assert _cue_share(result.attribution) > 0.5  # expected gradients also find the planted cue


def test_warm_up_prepares_gradcam_and_lime(cue_model):
    model, images, labels = cue_model
    spent = warm_up(model, methods=("gradcam", "lime"))
    assert set(spent) == {"gradcam", "lime"} and all(seconds >= 0 for seconds in spent.values())
    graph = gc_module._cam_graph(model, "conv2")
    traces = graph._cams.experimental_get_tracing_count()
    explain(model, images[1], "gradcam", target=int(labels[1]), faithfulness=False)
    assert graph._cams.experimental_get_tracing_count() == traces  # nothing left to trace


@pytest.mark.slow
def test_warm_up_compiles_shaps_numba_functions():
    """The root cause of SHAP's slow first call: shap's numba functions compile in every new process."""
    from shap.explainers import _partition
    from shap.maskers import _image

    first = warm_up(methods=("shap",))["shap"]
    assert _partition.lower_credit.signatures and _image._jit_build_partition_tree.signatures
    assert warm_up(methods=("shap",))["shap"] < min(0.5, first)  # once per process


# -- the CLI -----------------------------------------------------------------------


@pytest.fixture
def run_with_model(workspace):
    """A completed digits run (16 px) whose model.keras is a freshly built LeNet-5."""
    from tests.dashboard.test_evaluate_page import completed_run

    from engine.runfolder import RunFolder

    run_id = completed_run(workspace)
    make_model(ModelConfig(), (16, 16, 3), 10, seed=0).save(RunFolder(workspace, run_id).model_file)
    return run_id


def _png(path, size=20):
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
    return path


def test_cli_explain_writes_maps_overlays_and_json(workspace, run_with_model, tmp_path):
    from tests.engine.cli.test_cli import cli

    out = tmp_path / "out"
    result = cli("explain", run_with_model, "--image", _png(tmp_path / "seven.png"), "--method", "gradcam",
                 "--class", "7", "--out", out, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    row = report["methods"]["gradcam"]
    assert row["target_name"] == "7" and row["seconds"] >= 0
    for key in ("deletion_auc", "insertion_auc", "random_deletion_auc"):
        assert 0 <= row[key] <= 1
    assert np.load(row["map_path"]).shape == (16, 16)
    assert (out / "seven-gradcam.png").exists() and report["verdict"]


def test_cli_explain_bad_input_exits_2(workspace, run_with_model, tmp_path):
    from tests.engine.cli.test_cli import cli

    result = cli("explain", run_with_model, "--image", _png(tmp_path / "a.png"), "--class", "cat")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "unknown class 'cat'" in result.stderr
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    result = cli("explain", run_with_model, "--image", broken)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "--image" in result.stderr
