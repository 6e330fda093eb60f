"""Exact and near duplicates, within and across splits, and how much they inflate a test score (leakage).

Three signals, one pair type (`DuplicatePair`):

- exact: equal decoded pixels (`content_hashes`; two files that decode to the same image are one image
  to the model, whatever their bytes);
- near, `hash` (the default): a 64-bit perceptual hash (DCT pHash, the algorithm of `imagehash.phash`,
  vectorised over the whole set), similarity `1 - differing bits / 64`. It needs no model, so it also
  serves runs without embeddings and the split option `data.group_near_duplicates`;
- near, `embedding`: cosine similarity of the model's penultimate-layer features.

Both near signals keep each image's `NEIGHBOURS` most similar others (`nearest_neighbours`: a chunked
matrix product, memory `CHUNK x N` floats, never `N x N`), stored with the run; `duplicate_pairs`
filters them by a threshold at once, so a slider can move it.

Measured on planted copies (1,000 textured 48 px images, 5 % with a copy resized, recompressed as
JPEG 70 and 10 % brighter; a 3-epoch LeNet-5 at 24 px; `tests/benchmarks/bench_inspect.py` prints it):
the hash finds 100 % of the planted pairs with 0 % other pairs at distances 4 to 10 bits (2 % at 12,
13 % at 14), so the default is 10 bits (similarity 0.84). The embedding finds 47 % of them at any
threshold from 0.9 to 0.995 while reporting thousands of other pairs: a small classifier maps all
images of a class to nearly one point (its features are for telling classes apart, not images), so
same-class strangers are as similar as copies. It stays available (`signal="embedding"`) for
large pretrained models, whose features do separate images.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

NEIGHBOURS = 10  # nearest others kept per image: enough for bursts of a few near-copies
CHUNK = 128  # rows per block: the block, its negation and argpartition's int64 indices, ~100 MB at N = 50,000
DEFAULT_HASH_DISTANCE = 10  # differing bits of 64 in the perceptual hash (measured: see the module's note)
DEFAULT_NEAR_THRESHOLD = 1 - DEFAULT_HASH_DISTANCE / 64  # the hash signal's similarity threshold, 0.84375
DEFAULT_EMBEDDING_THRESHOLD = 0.99  # cosine, for `signal="embedding"`
SIGNALS = ("hash", "embedding")
_HASH_SIDE = 32  # pHash: grayscale 32x32, DCT, top-left 8x8 against its median


@dataclass(frozen=True)
class DuplicatePair:
    """Two images that are (nearly) the same, `a < b`.

    Args:
        a: the first image's row (into `Embeddings`, or into the `ImageSet` for hash pairs).
        b: the second image's row.
        id_a: the first image's id.
        id_b: the second image's id.
        index_a: the first image's row in the run's dataset (its thumbnail).
        index_b: the second image's row in the run's dataset.
        split_a: `train`, `val` or `test`.
        split_b: `train`, `val` or `test`.
        similarity: cosine similarity (1.0 for exact duplicates); for hash pairs 1 - distance / 64.
        kind: `exact` or `near`.
    """

    a: int
    b: int
    id_a: str
    id_b: str
    index_a: int
    index_b: int
    split_a: str
    split_b: str
    similarity: float
    kind: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Neighbours:
    """Each row's nearest other rows by one signal: `rows` `(N, K)`, `similarity` `(N, K)` float16, most similar first.

    Args:
        rows: `(N, K)` row numbers of the neighbours.
        similarity: `(N, K)` their similarity: `1 - bits / 64` for `hash`, cosine for `embedding`.
        signal: `hash` or `embedding`.
    """

    rows: np.ndarray
    similarity: np.ndarray
    signal: str = "hash"


@dataclass(frozen=True)
class Leakage:
    """Test accuracy as it is and without the test images that have a duplicate in train.

    Args:
        test_with_train_duplicate: test images with an exact or near duplicate in the training split.
        test_accuracy: accuracy on the whole test split.
        test_accuracy_without_leaks: accuracy on the test images without such a duplicate (NaN if none is left).
        test_count: test images in all.
        leaked_ids: the ids of the test images with a training duplicate.
    """

    test_with_train_duplicate: int
    test_accuracy: float
    test_accuracy_without_leaks: float
    test_count: int
    leaked_ids: list[str]

    def to_dict(self) -> dict:
        """The three numbers `inspect --json` prints under `leakage`."""
        return {"test_with_train_duplicate": self.test_with_train_duplicate, "test_accuracy": self.test_accuracy,
                "test_accuracy_without_leaks": self.test_accuracy_without_leaks}


def save_neighbours(path: Path, neighbours: list[Neighbours]) -> None:
    """Writes `inspect/neighbours.npz` (`<signal>_rows`, `<signal>_similarity` per signal), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    arrays = {}
    for n in neighbours:
        arrays[f"{n.signal}_rows"] = np.asarray(n.rows, np.int32)
        arrays[f"{n.signal}_similarity"] = np.asarray(n.similarity, np.float16)
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def load_neighbours(path: Path, signal: str = "hash") -> Neighbours:
    """Reads one signal's neighbours from `inspect/neighbours.npz`.

    Raises:
        NoEmbeddings: the file is missing. ValueError: an unknown signal.
    """
    from engine.inspect.embeddings import NoEmbeddings

    if signal not in SIGNALS:
        raise ValueError(f"signal {signal!r}: expected one of {', '.join(SIGNALS)}")
    if not Path(path).is_file():
        raise NoEmbeddings(f"{path} does not exist: run `python -m engine inspect RUN` first")
    with np.load(path, allow_pickle=False) as data:
        return Neighbours(data[f"{signal}_rows"].astype(np.int64), data[f"{signal}_similarity"], signal)


def content_hashes(images: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """`(len(rows),)` hex digests of the decoded pixels of `images[rows]` (all rows by default), one image at a time."""
    rows = np.arange(images.shape[0]) if rows is None else np.asarray(rows)
    return np.array([hashlib.blake2b(np.ascontiguousarray(images[int(i)]).tobytes(), digest_size=12).hexdigest()
                     for i in rows], dtype=str)


def hash_neighbours(bits: np.ndarray, k: int = NEIGHBOURS, *, on_chunk=None) -> Neighbours:
    """The `k` nearest other rows of each row by perceptual hash (`perceptual_hashes` bits), `1 - bits / 64`."""
    signs = np.where(bits, 1.0, -1.0).astype(np.float32)  # cosine of signs = 1 - 2 * bits / 64
    nearest = nearest_neighbours(signs, k, on_chunk=on_chunk)
    similarity = ((1.0 + nearest.similarity.astype(np.float32)) / 2).astype(np.float16)
    return Neighbours(nearest.rows, similarity, "hash")


def nearest_neighbours(features: np.ndarray, k: int = NEIGHBOURS, *, on_chunk=None) -> Neighbours:
    """The `k` most cosine-similar other rows of each row, by a chunked matrix product (memory `CHUNK x N`).

    Args:
        features: `(N, D)` features (any float dtype; a memmap is read a chunk at a time).
        k: neighbours per row (capped at N - 1); default `NEIGHBOURS`.
        on_chunk: called with `(done, total)` rows after each chunk (it may raise to stop).

    Returns:
        `Neighbours`, each row's most similar first.
    """
    n = int(features.shape[0])
    k = max(0, min(k, n - 1))
    unit = _unit_rows(features)
    rows = np.zeros((n, k), np.int32)
    similarity = np.zeros((n, k), np.float16)
    for start in range(0, n, CHUNK):
        block = unit[start:start + CHUNK] @ unit.T  # (chunk, N) float32
        block[np.arange(block.shape[0]), np.arange(start, start + block.shape[0])] = -np.inf  # not itself
        if k:
            np.negative(block, out=block)  # in place: argpartition finds the smallest
            top = np.argpartition(block, k - 1, axis=1)[:, :k]
            np.negative(block, out=block)
            top_sim = np.take_along_axis(block, top, axis=1)
            order = np.argsort(-top_sim, axis=1)
            rows[start:start + block.shape[0]] = np.take_along_axis(top, order, axis=1)
            similarity[start:start + block.shape[0]] = np.take_along_axis(top_sim, order, axis=1)
        if on_chunk is not None:
            on_chunk(min(start + CHUNK, n), n)
    return Neighbours(rows, similarity, "embedding")


def duplicate_pairs(embeddings, neighbours: Neighbours, threshold: float | None = None, *,
                    splits: tuple[str, str] | None = None) -> list[DuplicatePair]:
    """Exact duplicates (equal pixels) and near duplicates (similarity >= `threshold`) among a run's images.

    Args:
        embeddings: the run's `Embeddings`.
        neighbours: their `Neighbours` by one signal (`RunFolder`'s stored ones: `run_neighbours`).
        threshold: the similarity from which two images are near duplicates, in (0, 1]; default
            `DEFAULT_NEAR_THRESHOLD` for the hash, `DEFAULT_EMBEDDING_THRESHOLD` for embeddings.
        splits: keep only pairs across these two splits (e.g. `("train", "test")`); default all pairs.

    Returns:
        The pairs, exact ones first, then by similarity, most similar first.

    Raises:
        ValueError: a threshold outside (0, 1], or an unknown split.
    """
    threshold = default_threshold(neighbours.signal) if threshold is None else threshold
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold={threshold!r}: must be a similarity in (0, 1]")
    found = {(a, b): 1.0 for a, b in _equal_value_pairs(embeddings.content_hashes)}
    exact = set(found)
    near_a, near_k = np.nonzero(neighbours.similarity.astype(np.float32) >= threshold)
    for a, b, sim in zip(near_a, neighbours.rows[near_a, near_k], neighbours.similarity[near_a, near_k]):
        key = (int(min(a, b)), int(max(a, b)))
        if key not in found:
            found[key] = float(min(sim, 1.0))
    pairs = _make_pairs(found, exact, embeddings.ids, embeddings.indices, embeddings.split_names)
    return _keep_splits(pairs, splits)


def default_threshold(signal: str) -> float:
    """The measured default threshold of a near-duplicate signal (`hash` or `embedding`)."""
    return DEFAULT_NEAR_THRESHOLD if signal == "hash" else DEFAULT_EMBEDDING_THRESHOLD


def leakage(embeddings, pairs: list[DuplicatePair]) -> Leakage:
    """Test accuracy with and without the test images that have a duplicate (any pair given) in train."""
    split_names = embeddings.split_names
    test = split_names == "test"
    leaked = np.zeros(len(embeddings), bool)
    for pair in pairs:
        if {pair.split_a, pair.split_b} == {"train", "test"}:
            leaked[pair.b if pair.split_b == "test" else pair.a] = True
    correct = embeddings.correct
    clean = test & ~leaked
    accuracy = float(correct[test].mean()) if test.any() else float("nan")
    clean_accuracy = float(correct[clean].mean()) if clean.any() else float("nan")
    return Leakage(int(leaked.sum()), accuracy, clean_accuracy, int(test.sum()),
                   [str(i) for i in embeddings.ids[leaked]])


def perceptual_hashes(images: np.ndarray, rows: np.ndarray | None = None, *, batch: int = 1024) -> np.ndarray:
    """`(N, 64)` bool pHash bits of uint8 RGB images (grayscale 32x32, 2-D DCT, 8x8 low frequencies > median).

    The algorithm of `imagehash.phash` (the same bits on the same 32x32 grayscale input), vectorised over
    a batch at a time (a memmap is read `batch` images at a time).

    Args:
        images: `(M, S, S, 3)` uint8 images.
        rows: hash `images[rows]` in that order; default all.
    """
    from PIL import Image
    from scipy.fft import dct

    rows = np.arange(images.shape[0]) if rows is None else np.asarray(rows, np.int64)
    out = np.zeros((len(rows), 64), bool)
    for start in range(0, len(rows), batch):
        chunk = images[np.sort(rows[start:start + batch])]
        chunk = chunk[np.argsort(np.argsort(rows[start:start + batch]))]  # back to the order asked for
        gray = np.stack([np.asarray(Image.fromarray(np.asarray(img)).convert("L").resize(
            (_HASH_SIDE, _HASH_SIDE), Image.Resampling.LANCZOS), np.float64) for img in chunk])
        low = dct(dct(gray, axis=1), axis=2)[:, :8, :8].reshape(len(chunk), 64)
        out[start:start + len(chunk)] = low > np.median(low, axis=1, keepdims=True)
    return out


def hash_neighbour_pairs(bits: np.ndarray, max_distance: int = DEFAULT_HASH_DISTANCE) -> list[tuple[int, int, int]]:
    """`(a, b, distance)` for every pair of hashes within `max_distance` differing bits, `a < b` (chunked)."""
    signs = np.where(bits, 1.0, -1.0).astype(np.float32)  # dot = 64 - 2 * distance
    found: list[tuple[int, int, int]] = []
    for start in range(0, signs.shape[0], CHUNK):
        block = signs[start:start + CHUNK] @ signs.T
        distance = np.rint((64 - block) / 2).astype(np.int32)
        a, b = np.nonzero(distance <= max_distance)
        a = a + start
        keep = a < b
        found.extend(zip(a[keep].tolist(), b[keep].tolist(), distance[a[keep] - start, b[keep]].tolist()))
    return found


def hash_duplicate_pairs(images, split=None, max_distance: int = DEFAULT_HASH_DISTANCE, *,
                         splits: tuple[str, str] | None = None) -> list[DuplicatePair]:
    """Duplicates of an `ImageSet` without a model: equal pixels, and perceptual hashes within `max_distance`.

    Args:
        images: the `ImageSet`.
        split: its `Split` (for each pair's splits); None marks every image `train`.
        max_distance: differing bits (of 64) from which two images are near duplicates; default 10.
        splits: keep only pairs across these two splits; default all.
    """
    if not 0 <= max_distance <= 64:
        raise ValueError(f"max_distance={max_distance!r}: must be between 0 and 64 bits")
    n = len(images)
    split_names = np.full(n, "train", dtype=object)
    if split is not None:
        split_names[split.val], split_names[split.test] = "val", "test"
    hashes = content_hashes(images.images)
    found = {pair: 1.0 for pair in _equal_value_pairs(hashes)}
    exact = set(found)
    for a, b, distance in hash_neighbour_pairs(perceptual_hashes(images.images), max_distance):
        found.setdefault((a, b), 1.0 - distance / 64)
    pairs = _make_pairs(found, exact, np.asarray(images.ids, str), np.arange(n), split_names)
    return _keep_splits(pairs, splits)


def near_duplicate_groups(images: np.ndarray, max_distance: int = DEFAULT_HASH_DISTANCE) -> np.ndarray:
    """`(N,)` int64 group per image: images joined (transitively) by a perceptual-hash pair share a group.

    The group id is the smallest row of the group, so a singleton's group is its own row.
    """
    parent = np.arange(images.shape[0])

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return int(i)

    for a, b, _ in hash_neighbour_pairs(perceptual_hashes(images), max_distance):
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return np.array([root(i) for i in range(images.shape[0])], np.int64)


def _unit_rows(features: np.ndarray) -> np.ndarray:
    unit = np.asarray(features, np.float32)
    norms = np.linalg.norm(unit, axis=1, keepdims=True)
    return unit / np.maximum(norms, 1e-12)


def _equal_value_pairs(values: np.ndarray) -> list[tuple[int, int]]:
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    pairs = []
    start = 0
    for end in range(1, len(order) + 1):
        if end == len(order) or sorted_values[end] != sorted_values[start]:
            group = sorted(order[start:end].tolist())
            pairs.extend((a, b) for i, a in enumerate(group) for b in group[i + 1:])
            start = end
    return pairs


def _make_pairs(found: dict, exact: set, ids, indices, split_names) -> list[DuplicatePair]:
    pairs = [DuplicatePair(a, b, str(ids[a]), str(ids[b]), int(indices[a]), int(indices[b]), str(split_names[a]),
                           str(split_names[b]), float(sim), "exact" if (a, b) in exact else "near")
             for (a, b), sim in found.items()]
    return sorted(pairs, key=lambda p: (p.kind != "exact", -p.similarity, p.a, p.b))


def _keep_splits(pairs: list[DuplicatePair], splits: tuple[str, str] | None) -> list[DuplicatePair]:
    if splits is None:
        return pairs
    wanted = sorted(splits)
    if not set(wanted) <= {"train", "val", "test"} or len(wanted) != 2:
        raise ValueError(f"splits={splits!r}: give two of train, val, test")
    return [p for p in pairs if sorted((p.split_a, p.split_b)) == wanted]
