"""The 2-D map of a run's embeddings: `auto` (PCA when it keeps the neighbourhoods, else UMAP), or one named.

Measured on 2 cores shared with other work (trustworthiness at 10 neighbours on a 2,000-point sample;
`tests/benchmarks/bench_inspect.py` prints it side by side):

    10,000 planted images, a 2-epoch LeNet-5's 84-D features:
        PCA 0.3 s, 0.972 · UMAP 21 s warm, 233 s in a fresh process (numba compiles), 0.977 · t-SNE: bench
    10,000 noisy digits, 64-D pixels (no model):
        PCA 0.02 s, 0.82 · UMAP 7.4 s warm, 48 s fresh, 0.978 · t-SNE 34.7 s, 0.990

A small classifier's features are nearly low-rank: PCA keeps their neighbourhoods about as well as
UMAP, hundreds of times sooner, and every `inspect` job is a fresh process that would pay UMAP's
compile. Richer features (pixels, a pretrained base) fold under PCA (0.82: a fifth of each point's map
neighbours are strangers), where UMAP keeps t-SNE's quality at a fraction of its time and scales to
50,000 points (nearest-neighbour descent, `low_memory=True`). So `auto`, the default, maps with PCA,
measures its trustworthiness on a sample (about a second) and switches to UMAP below
`AUTO_TRUSTWORTHINESS`. Features go in as float32 (a 50,000 x 128 copy is 25 MB). `import umap`
imports TensorFlow (umap's parametric module): only the `inspect` job makes maps.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

MAP_METHODS = ("auto", "umap", "pca", "tsne")
DEFAULT_MAP_METHOD = "auto"
AUTO_TRUSTWORTHINESS = 0.95  # `auto` keeps PCA's map from this trustworthiness up
_SAMPLE = 1000  # points trustworthiness is measured on


@dataclass(frozen=True)
class FeatureMap:
    """A 2-D map: `xy` `(N, 2)` float32, the `method` that made it, its `trustworthiness` on a sample, `seconds`."""

    xy: np.ndarray
    method: str
    trustworthiness: float
    seconds: float


def make_map(features: np.ndarray, method: str = DEFAULT_MAP_METHOD, *, seed: int = 0) -> FeatureMap:
    """Maps features in 2-D with `method` (`auto`: PCA, or UMAP where PCA's trustworthiness is low) and scores it.

    Raises:
        ValueError: an unknown method.
    """
    if method not in MAP_METHODS:
        raise ValueError(f"map method {method!r}: expected one of {', '.join(MAP_METHODS)}")
    started = time.perf_counter()
    data = np.asarray(features, np.float32)
    chosen = "pca" if method == "auto" else method
    xy = project(data, chosen, seed=seed)
    score = map_trustworthiness(data, xy, seed=seed)
    if method == "auto" and score < AUTO_TRUSTWORTHINESS:
        log.info("PCA's map keeps trustworthiness %.3f < %.2f: mapping with UMAP", score, AUTO_TRUSTWORTHINESS)
        chosen, xy = "umap", project(data, "umap", seed=seed)
        score = map_trustworthiness(data, xy, seed=seed)
    return FeatureMap(xy, chosen, score, time.perf_counter() - started)


def map_trustworthiness(features: np.ndarray, xy: np.ndarray, *, seed: int = 0) -> float:
    """scikit-learn's trustworthiness (10 neighbours) of a map on a sample of at most 1,000 points (1.0 below 12)."""
    from sklearn.manifold import trustworthiness

    n = features.shape[0]
    if n < 12:
        return 1.0
    sample = np.random.default_rng(seed).choice(n, size=min(_SAMPLE, n), replace=False)
    return float(trustworthiness(np.asarray(features[sample], np.float32), xy[sample], n_neighbors=10))


def project(features: np.ndarray, method: str = "umap", *, seed: int = 0) -> np.ndarray:
    """Maps `(N, D)` features to `(N, 2)` float32 coordinates with one method (`make_map` chooses).

    Args:
        features: `(N, D)` features, any float dtype.
        method: `umap` (default), `pca` or `tsne`.
        seed: seed for PCA's solver and t-SNE; UMAP runs unseeded (seeding makes it single-threaded).

    Returns:
        `(N, 2)` float32 coordinates; all zeros for fewer than 3 points.

    Raises:
        ValueError: an unknown method.
    """
    if method not in MAP_METHODS[1:]:
        raise ValueError(f"map method {method!r}: expected one of {', '.join(MAP_METHODS[1:])}")
    data = np.asarray(features, np.float32)
    n = data.shape[0]
    if n < 3:
        return np.zeros((n, 2), np.float32)
    started = time.perf_counter()
    if method == "pca" or data.shape[1] <= 2:
        from sklearn.decomposition import PCA

        xy = PCA(n_components=min(2, data.shape[1]), random_state=seed).fit_transform(data)
        xy = np.pad(xy, ((0, 0), (0, 2 - xy.shape[1])))
    elif method == "tsne":
        from sklearn.manifold import TSNE

        xy = TSNE(n_components=2, init="pca", perplexity=min(30.0, (n - 1) / 3), random_state=seed).fit_transform(data)
    else:
        import umap

        xy = umap.UMAP(n_components=2, n_neighbors=min(15, n - 1), low_memory=True).fit_transform(data)
    log.info("mapped %d points with %s in %.1f s", n, method, time.perf_counter() - started)
    return np.asarray(xy, np.float32)
