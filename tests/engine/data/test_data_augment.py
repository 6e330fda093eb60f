"""RandomGeometry: rotation, shift, zoom and flip composed into one affine transform per image."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from engine.data.augment import RandomGeometry, geometry_transform

SIZE = 16


def square_image(top: int = 4, left: int = 4, side: int = 4) -> np.ndarray:
    """A black (1, 16, 16, 3) float image with one white square."""
    image = np.zeros((1, SIZE, SIZE, 3), np.float32)
    image[0, top:top + side, left:left + side] = 255.0
    return image


def apply(image: np.ndarray, transform, fill_mode: str = "constant") -> np.ndarray:
    return np.asarray(keras.ops.image.affine_transform(image, transform, interpolation="bilinear",
                                                       fill_mode=fill_mode))


def one(angle=0.0, shift_x=0.0, shift_y=0.0, zoom=1.0, flip=0.0):
    return geometry_transform([angle], [shift_x], [shift_y], [zoom], [flip], SIZE, SIZE)


def photos(count: int = 8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    smooth = rng.uniform(0, 255, (count, 4, 4, 3)).repeat(4, axis=1).repeat(4, axis=2)
    return smooth.astype(np.float32)


def test_identity_transform_returns_the_image():
    image = photos(1)
    assert np.allclose(np.asarray(one()), [[1, 0, 0, 0, 1, 0, 0, 0]], atol=1e-6)
    assert np.allclose(apply(image, one()), image, atol=1e-3)


def test_shift_moves_pixels_right_and_down_by_the_fraction():
    moved = apply(square_image(top=4, left=4), one(shift_x=0.25, shift_y=0.125))  # 4 px right, 2 px down
    assert np.allclose(moved, square_image(top=6, left=8), atol=1e-3)
    back = apply(square_image(top=6, left=8), one(shift_x=-0.25, shift_y=-0.125))
    assert np.allclose(back, square_image(top=4, left=4), atol=1e-3)


def test_flip_mirrors_exactly_and_rotation_by_90_degrees_turns_the_image():
    image = photos(1)
    assert np.allclose(apply(image, one(flip=1.0)), np.flip(image, axis=2), atol=1e-3)
    turned = apply(image, one(angle=90.0))
    assert np.allclose(turned, np.rot90(image, k=1, axes=(1, 2)), atol=1e-3) or \
        np.allclose(turned, np.rot90(image, k=-1, axes=(1, 2)), atol=1e-3)
    quarter = apply(image, one(angle=90.0))
    assert np.allclose(apply(quarter, one(angle=-90.0)), image, atol=1e-3)  # the sign is consistent


def test_zoom_follows_keras_random_zoom():
    # Above 1 zooms out (the square shrinks), below 1 zooms in; as keras.layers.RandomZoom's factor.
    image = square_image(top=4, left=4, side=8)
    out = apply(image, one(zoom=2.0))
    inside = out[0, ..., 0] > 127
    assert inside.sum() == 16 and inside[6:10, 6:10].all()  # 8x8 -> 4x4 about the centre
    zoomed_in = apply(image, one(zoom=0.5))
    assert (zoomed_in[0, ..., 0] > 127).all()  # the central 8x8 fills the frame
    keras_zoom = keras.layers.RandomZoom((1.0, 1.0), fill_mode="constant", seed=0)  # factor 1 + 1.0 = 2
    assert np.allclose(np.asarray(keras_zoom(image, training=True)), out, atol=1e-3)


def test_layer_output_shape_dtype_and_range():
    layer = RandomGeometry(rotation=20, shift=0.2, zoom=0.2, flip=True, seed=1)
    batch = photos(8)
    out = np.asarray(layer(batch, training=True))
    assert out.shape == batch.shape and out.dtype == np.float32
    assert out.min() >= -1e-3 and out.max() <= 255 + 1e-3 and not np.allclose(out, batch)
    single = np.asarray(layer(batch[0], training=True))
    assert single.shape == batch[0].shape
    as_bytes = np.asarray(layer(batch.astype(np.uint8), training=True))
    assert as_bytes.dtype == np.float32 and as_bytes.shape == batch.shape


def test_identity_when_off_or_not_training():
    batch = photos(4)
    assert np.array_equal(np.asarray(RandomGeometry(seed=0)(batch, training=True)), batch)
    layer = RandomGeometry(rotation=30, shift=0.3, zoom=0.3, flip=True, seed=0)
    assert np.array_equal(np.asarray(layer(batch, training=False)), batch)


def test_flip_only_flips_half_the_images():
    batch = photos(64, seed=2)
    out = np.asarray(RandomGeometry(flip=True, seed=3)(batch, training=True))
    kept = [np.allclose(o, b, atol=1e-3) for o, b in zip(out, batch)]
    flipped = [np.allclose(o, np.flip(b, axis=1), atol=1e-3) for o, b in zip(out, batch)]
    assert all(k or f for k, f in zip(kept, flipped))
    assert 16 <= sum(flipped) <= 48


def test_draws_stay_within_the_configured_ranges():
    layer = RandomGeometry(rotation=20, shift=0.2, zoom=0.2, flip=True, seed=4)
    m = np.asarray(layer.random_transforms(2000, SIZE, SIZE))
    scale = np.hypot(m[:, 0], m[:, 3])  # the zoom factor (rotation and flip keep lengths)
    assert 0.8 - 1e-5 <= scale.min() < 0.85 and 1.15 < scale.max() <= 1.2 + 1e-5
    angle = np.degrees(np.arctan2(m[:, 3], m[:, 4]))
    assert -20 - 1e-3 <= angle.min() < -18 and 18 < angle.max() <= 20 + 1e-3
    determinant = m[:, 0] * m[:, 4] - m[:, 1] * m[:, 3]
    assert 0.4 < (determinant < 0).mean() < 0.6  # flipped half the time
    # The output centre samples c - M t (M the 2x2 part, t the shift in pixels): recover t.
    c = (SIZE - 1) / 2
    source = np.stack([m[:, 0] * c + m[:, 1] * c + m[:, 2], m[:, 3] * c + m[:, 4] * c + m[:, 5]], axis=1)
    shift = np.linalg.solve(np.stack([m[:, 0:2], m[:, 3:5]], axis=1), (c - source)[..., None])[..., 0]
    assert np.abs(shift).max() <= 0.2 * SIZE + 1e-3 and (np.abs(shift).max(axis=0) > 0.18 * SIZE).all()


def test_deterministic_with_a_seed_and_different_per_image():
    batch = np.repeat(photos(1), 8, axis=0)
    first = np.asarray(RandomGeometry(rotation=20, shift=0.2, zoom=0.2, flip=True, seed=7)(batch, training=True))
    again = np.asarray(RandomGeometry(rotation=20, shift=0.2, zoom=0.2, flip=True, seed=7)(batch, training=True))
    other = np.asarray(RandomGeometry(rotation=20, shift=0.2, zoom=0.2, flip=True, seed=8)(batch, training=True))
    assert np.array_equal(first, again) and not np.allclose(first, other)
    assert all(not np.allclose(first[0], first[i]) for i in range(1, 8))  # one transform per image


def test_rejects_bad_arguments():
    with pytest.raises(ValueError):
        RandomGeometry(zoom=1.0)
    with pytest.raises(ValueError):
        RandomGeometry(rotation=-1)
    with pytest.raises(ValueError):
        RandomGeometry(fill_mode="mirror")


def test_saves_and_loads_inside_a_model_in_safe_mode(tmp_path):
    inputs = keras.Input((SIZE, SIZE, 3))
    outputs = RandomGeometry(rotation=12, shift=0.1, zoom=0.15, flip=True, seed=5, name="geometry")(inputs)
    model = keras.Model(inputs, outputs)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    layer = loaded.get_layer("geometry")
    assert isinstance(layer, RandomGeometry)
    assert layer.get_config() == model.get_layer("geometry").get_config()
    batch = photos(2)
    assert np.array_equal(np.asarray(loaded(batch, training=False)), batch)
    assert np.asarray(loaded(batch, training=True)).shape == batch.shape
