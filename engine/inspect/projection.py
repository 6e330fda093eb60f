"""The 2-D map of a run's embeddings: UMAP by default, PCA or t-SNE on request.

Measured on 2 cores (10,000 points of 64-D digits features, trustworthiness at 10 neighbours on a
2,000-point sample; `tests/benchmarks/bench_inspect.py` prints the same side by side):

    PCA    0.02 s    trustworthiness 0.82
    UMAP   7.4 s     0.978   (48 s in a fresh process: numba compiles its kernels; cached afterwards)
    t-SNE  see bench_inspect (several times UMAP's time, trustworthiness like UMAP's)

PCA is instant but folds clusters onto each other (0.82: a fifth of each point's map neighbours are
not its neighbours); the map's purpose is to see clusters and their outliers, so UMAP is the
default: t-SNE's quality at a fraction of its time, and it scales to 50,000 points (nearest-neighbour
descent, `low_memory=True`). Features go in as float32 (the stored float16 is widened a chunk at a time
by numpy; a 50,000 x 128 float32 copy is 25 MB). `import umap` imports TensorFlow (umap's parametric
module): only the `inspect` job calls `project`.
"""

from __future__ import annotations

import logging
import time

import numpy as np

log = logging.getLogger(__name__)

MAP_METHODS = ("umap", "pca", "tsne")
DEFAULT_MAP_METHOD = "umap"


def project(features: np.ndarray, method: str = DEFAULT_MAP_METHOD, *, seed: int = 0) -> np.ndarray:
    """Maps `(N, D)` features to `(N, 2)` float32 coordinates.

    Args:
        features: `(N, D)` features, any float dtype.
        method: `umap` (default), `pca` or `tsne`.
        seed: seed for PCA's solver and t-SNE; UMAP runs unseeded (seeding makes it single-threaded).

    Returns:
        `(N, 2)` float32 coordinates; all zeros for fewer than 3 points.

    Raises:
        ValueError: an unknown method.
    """
    if method not in MAP_METHODS:
        raise ValueError(f"map method {method!r}: expected one of {', '.join(MAP_METHODS)}")
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
