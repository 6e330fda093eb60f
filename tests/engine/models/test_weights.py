"""Pretrained weights: the zoo builds offline with its preprocessing inside; `weights get` downloads from a
local HTTP server (resuming a broken download, checking the hash); `weights import` checks shapes and the
model then starts from exactly the imported weights."""

from __future__ import annotations

import hashlib
from pathlib import Path

import keras
import numpy as np
import pytest

from engine import weights, zoo
from engine.config import TRANSFER_BASES, ModelConfig
from engine.models import BASE_LAYER_NAME, last_conv_layer_name, make_model
from engine.models.transfer import make_base
from tests.helpers.weights_server import weights_server


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    return tmp_path / "keras"


@pytest.fixture
def server():
    with weights_server() as httpd:
        yield httpd


def test_download_resumes_a_broken_transfer_and_checks_the_hash(keras_home, server, monkeypatch):
    server.payload = np.random.default_rng(0).bytes(3 * 1024**2 + 17)
    server.cut_at = 1024**2 + 5
    monkeypatch.setenv(zoo.WEIGHTS_URL_ENV, f"http://127.0.0.1:{server.server_address[1]}/apps/")
    sha = hashlib.sha256(server.payload).hexdigest()
    with pytest.raises(weights.WeightsError, match="broke off.*weights get mobilenet_v2"):
        weights.download("mobilenet_v2", expected_hash=sha)
    assert weights.partial_path("mobilenet_v2").stat().st_size == 1024**2 + 5
    seen = []
    path = weights.download("mobilenet_v2", expected_hash=sha, progress=lambda done, total: seen.append((done, total)))
    assert server.requests == [None, f"bytes={1024**2 + 5}-"], "the second request resumes with a Range"
    assert path == keras_home / "models" / zoo.get_base("mobilenet_v2").file
    assert path.read_bytes() == server.payload and seen[-1] == (len(server.payload), len(server.payload))
    assert zoo.status("mobilenet_v2").present and zoo.weights_source(path) == {"source": "imagenet", "sha256": sha}

    with pytest.raises(weights.WeightsError, match="not the published"):  # the real published md5 cannot match
        weights.download("efficientnet_v2b0")
    assert not weights.partial_path("efficientnet_v2b0").exists() and not zoo.status("efficientnet_v2b0").present


def test_a_second_download_of_the_same_base_is_refused_while_the_first_writes(keras_home, server, monkeypatch):
    """Two `weights get` of one base (two shells, or the CLI and the Train page's Get job) must not append to one
    `.part` file: the second is refused with why, the first completes with the right bytes."""
    import threading

    server.payload, server.delay = np.random.default_rng(1).bytes(20 * 64 * 1024), 0.05
    monkeypatch.setenv(zoo.WEIGHTS_URL_ENV, f"{server.url}/apps/")
    sha = hashlib.sha256(server.payload).hexdigest()
    started, result = threading.Event(), {}
    first = threading.Thread(target=lambda: result.setdefault("path", weights.download(
        "mobilenet_v2", expected_hash=sha, progress=lambda done, total: started.set())))
    first.start()
    assert started.wait(10)
    with pytest.raises(weights.WeightsError, match="being downloaded by another process"):
        weights.download("mobilenet_v2", expected_hash=sha)
    first.join(30)
    assert result["path"].read_bytes() == server.payload and len(server.requests) == 1
    assert weights.download("mobilenet_v2", expected_hash=sha) == result["path"]  # the lock is let go


def test_download_without_a_server_says_how_to_import(keras_home, monkeypatch):
    monkeypatch.setenv(zoo.WEIGHTS_URL_ENV, "http://127.0.0.1:9/")
    with pytest.raises(weights.WeightsError, match="cannot download.*weights import FILE --base resnet50_v2"):
        weights.download("resnet50_v2", timeout=5)


def test_import_checks_shapes_and_the_model_starts_from_the_file(keras_home, tmp_path):
    keras.utils.set_random_seed(7)
    reference = make_base("mobilenet_v3_small", (32, 32, 3), None)
    saved = tmp_path / "mine.weights.h5"
    reference.save_weights(saved)
    with pytest.raises(weights.WeightsError, match="does not fit the mobilenet_v2 base"):
        weights.import_weights(saved, "mobilenet_v2")
    (tmp_path / "fake.h5").write_text("not hdf5")
    with pytest.raises(weights.WeightsError, match="not an HDF5"):
        weights.import_weights(tmp_path / "fake.h5", "mobilenet_v3_small")
    with pytest.raises(weights.WeightsError, match="no such file"):
        weights.import_weights(tmp_path / "none.h5", "mobilenet_v3_small")
    assert not zoo.status("mobilenet_v3_small").present

    target = weights.import_weights(saved, "mobilenet_v3_small")
    assert zoo.status("mobilenet_v3_small").source == "import"
    keras.utils.set_random_seed(99)  # a different random init: only the file can make them equal
    model = make_model(ModelConfig(name="transfer", base="mobilenet_v3_small"), (32, 32, 3), 3)
    loaded = model.get_layer(BASE_LAYER_NAME).get_weights()
    expected = reference.get_weights()
    assert len(loaded) == len(expected) > 50
    for a, b in zip(loaded, expected, strict=True):
        np.testing.assert_array_equal(a, b)
    _, record = zoo.resolve_weights("mobilenet_v3_small", "imagenet")
    assert record == {"source": "import", "sha256": hashlib.sha256(target.read_bytes()).hexdigest()}
    assert not model.get_layer(BASE_LAYER_NAME).trainable_weights, "pretrained: frozen by default"


@pytest.mark.slow
@pytest.mark.parametrize("base", TRANSFER_BASES)
def test_every_base_builds_offline_with_its_preprocessing_inside(base, keras_home):
    model = make_model(ModelConfig(name="transfer", base=base, weights="random"), (32, 32, 3), 3)
    inner = model.get_layer(BASE_LAYER_NAME)
    names = [layer.name for layer in model.layers] + [layer.name for layer in inner.layers]
    assert inner.get_layer(last_conv_layer_name(ModelConfig(name="transfer", base=base))) is not None
    assert "rescale" in names or any("rescaling" in n or "normalization" in n for n in names), names[:8]
    out = model.predict(np.full((1, 32, 32, 3), 255.0, np.float32), verbose=0)
    assert np.isfinite(out).all() and abs(out.sum() - 1) < 1e-4


def test_zoo_lists_the_bases_with_their_published_files(keras_home):
    assert set(TRANSFER_BASES) == set(zoo.BASES) and len(TRANSFER_BASES) == 8
    assert zoo.get_base("convnext_tiny").url.startswith("https://storage.googleapis.com/tensorflow/")
    assert all(Path(b.file).suffix == ".h5" for b in zoo.BASES.values())
    assert "weights get efficientnet_v2s" in zoo.how_to_get("efficientnet_v2s")
