"""engine.inspect.duplicates without a model: planted near copies by perceptual hash, exact copies, the chunked
neighbour search against brute force, leakage by hand, and `data.group_near_duplicates` at split time."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from engine.data import load_images, split_dataset
from engine.inspect import (DEFAULT_NEAR_THRESHOLD, Embeddings, Neighbours, duplicate_pairs, hash_duplicate_pairs,
                            leakage, near_duplicate_groups, nearest_neighbours, perceptual_hashes)
from engine.inspect import duplicates as duplicates_module
from engine.inspect import make_map
from tests.engine.inspect.planted import pair_scores, tree_digest, write_planted_folder


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """400 textured originals in 4 classes, 20 (5 %) with a resized, JPEG-70, 10 %-brighter copy, 3 exact copies."""
    root = tmp_path_factory.mktemp("planted") / "data"
    folder = write_planted_folder(root, classes=4, per_class=100, exact=3, seed=3)
    return folder, load_images(str(root), 24)


def test_planted_near_copies_are_found_by_the_hash_at_the_default_threshold(planted):
    folder, images = planted
    before = tree_digest(folder.root)
    pairs = hash_duplicate_pairs(images)
    recall, false_share = pair_scores(folder, [(p.id_a, p.id_b) for p in pairs])
    assert len(folder.copies) == 20
    assert recall >= 0.95 and false_share <= 0.05, (recall, false_share, len(pairs))
    assert tree_digest(folder.root) == before  # reading never writes under the source


def test_exact_copies_are_exact_pairs_and_first(planted):
    folder, images = planted
    pairs = hash_duplicate_pairs(images)
    exact = {frozenset((p.id_a, p.id_b)) for p in pairs if p.kind == "exact"}
    assert exact == {frozenset(p) for p in folder.exact}
    assert all(p.kind == "exact" for p in pairs[:len(exact)]) and all(p.similarity == 1.0 for p in pairs[:3])


def test_perceptual_hash_has_the_bits_of_imagehash_phash():
    import imagehash

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    images[1] = np.linspace(0, 255, 32 * 32 * 3).reshape(32, 32, 3).astype(np.uint8)
    ours = perceptual_hashes(images)
    theirs = np.stack([imagehash.phash(Image.fromarray(img)).hash.reshape(64) for img in images])
    assert np.array_equal(ours, theirs)
    shuffled = perceptual_hashes(images, np.array([3, 0, 4]))  # rows in the order asked for
    assert np.array_equal(shuffled, ours[[3, 0, 4]])


def test_chunked_neighbours_equal_brute_force_across_chunks(monkeypatch):
    monkeypatch.setattr(duplicates_module, "CHUNK", 7)  # several chunks, one partial
    rng = np.random.default_rng(1)
    features = rng.normal(size=(30, 5)).astype(np.float16)
    got = nearest_neighbours(features, k=4)
    unit = features.astype(np.float32) / np.linalg.norm(features.astype(np.float32), axis=1, keepdims=True)
    full = unit @ unit.T
    np.fill_diagonal(full, -np.inf)
    expected = np.argsort(-full, axis=1)[:, :4]
    assert np.array_equal(got.rows, expected)
    assert np.allclose(got.similarity.astype(np.float32), np.take_along_axis(full, expected, axis=1), atol=1e-3)


def _embeddings(splits, labels, predicted, hashes=None) -> Embeddings:
    n = len(splits)
    return Embeddings(np.zeros((n, 2), np.float16), np.zeros((n, 2), np.float32), "pca",
                      np.array([f"img/{i}" for i in range(n)]), np.arange(n) + 10, np.asarray(splits, np.int8),
                      np.asarray(labels, np.int32), np.asarray(predicted, np.int32), np.ones(n, np.float16),
                      np.asarray(hashes if hashes is not None else [str(i) for i in range(n)]), ["a", "b"])


def test_leakage_and_thresholds_by_hand():
    # rows: 0,1 train; 2 val; 3,4,5 test. Test 3 (correct) copies train 0; test 4 (wrong) is an exact copy of 1.
    emb = _embeddings([0, 0, 1, 2, 2, 2], [0, 1, 0, 0, 1, 1], [0, 1, 0, 0, 0, 1], hashes=["x", "y", "z", "w", "y", "v"])
    neighbours = Neighbours(np.array([[3], [4], [5], [0], [1], [2]]),
                            np.array([[0.9], [0.5], [0.86], [0.9], [0.5], [0.86]], np.float16))
    pairs = duplicate_pairs(emb, neighbours)  # default: the hash's 0.84375
    assert DEFAULT_NEAR_THRESHOLD == pytest.approx(1 - 10 / 64)
    assert [(p.a, p.b, p.kind) for p in pairs] == [(1, 4, "exact"), (0, 3, "near"), (2, 5, "near")]
    assert (pairs[1].id_a, pairs[1].index_b, pairs[1].split_a, pairs[1].split_b) == ("img/0", 13, "train", "test")
    result = leakage(emb, pairs)
    assert result.to_dict() == {"test_with_train_duplicate": 2, "test_accuracy": pytest.approx(2 / 3),
                                "test_accuracy_without_leaks": 1.0}
    assert sorted(result.leaked_ids) == ["img/3", "img/4"] and result.test_count == 3
    assert [(p.a, p.b) for p in duplicate_pairs(emb, neighbours, 0.95)] == [(1, 4)]
    assert [(p.a, p.b) for p in duplicate_pairs(emb, neighbours, splits=("val", "test"))] == [(2, 5)]
    with pytest.raises(ValueError, match="threshold=1.5"):
        duplicate_pairs(emb, neighbours, 1.5)
    with pytest.raises(ValueError, match="give two of train, val, test"):
        duplicate_pairs(emb, neighbours, splits=("train", "dev"))


def test_group_near_duplicates_keeps_every_planted_pair_in_one_split(planted):
    folder, images = planted
    position = {image_id: i for i, image_id in enumerate(images.ids)}

    def split_of(split):
        part = np.zeros(len(images), int)
        part[split.val], part[split.test] = 1, 2
        return part

    groups = near_duplicate_groups(images.images)
    for a, b in folder.copies + folder.exact:
        assert groups[position[a]] == groups[position[b]]
    plain = split_of(split_dataset(images, 0.2, 0.2, seed=0))
    grouped_split = split_dataset(images, 0.2, 0.2, seed=0, group_near_duplicates=True)
    grouped = split_of(grouped_split)
    pairs = [(position[a], position[b]) for a, b in folder.copies + folder.exact]
    assert any(plain[a] != plain[b] for a, b in pairs)  # without the option some copies straddle splits
    assert all(grouped[a] == grouped[b] for a, b in pairs)
    assert sorted(np.concatenate([grouped_split.train, grouped_split.val, grouped_split.test]).tolist()) == \
        list(range(len(images)))
    assert abs(len(grouped_split.test) - 0.2 * len(images)) < 0.05 * len(images)  # the fractions hold


def test_auto_map_keeps_pca_where_it_preserves_neighbourhoods_and_names_bad_methods():
    rng = np.random.default_rng(2)
    low_rank = (rng.normal(size=(300, 2)) @ rng.normal(size=(2, 40)) + rng.normal(0, 0.01, (300, 40)))
    feature_map = make_map(low_rank.astype(np.float16))
    assert feature_map.method == "pca" and feature_map.trustworthiness > 0.99
    assert feature_map.xy.shape == (300, 2) and feature_map.xy.dtype == np.float32
    with pytest.raises(ValueError, match="map method 'mds': expected one of auto, umap, pca, tsne"):
        make_map(low_rank, "mds")
