"""Benchmarks inspection in one run: `python tests/benchmarks/bench_inspect.py [--quick] [--big]`.

(a) Embeddings + map for 10,000 planted images (4 classes of textured 48 px PNGs, 5 % with a near copy:
    resized, JPEG quality 70, 10 % brighter) on a 2-epoch LeNet-5 at 24 px: seconds for the features,
    for UMAP (the first call in a process compiles numba kernels: shown cold and warm), PCA and t-SNE,
    and each map's trustworthiness (scikit-learn, 10 neighbours, on a 2,000-point sample); peak RSS.
(b) Near duplicates on the same data: recall of the planted pairs and the share of reported pairs that
    were not planted, for the perceptual hash and for the cosine of the embeddings, at several thresholds.
(c) With --big: 50,000 points (random float16 features, random images): neighbours by both signals and
    a UMAP map, seconds and the RSS they add (flat memory: chunks of CHUNK x N floats).

Runs in-process on a temporary workspace with Aperture's real training and inspection code; prints
figures, asserts nothing about time, exits 0. Not collected by pytest.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import engine  # noqa: E402,F401 - first: the oneDNN setting before TensorFlow

import numpy as np  # noqa: E402

from engine.config import RunConfig  # noqa: E402
from engine.inspect import (Embeddings, duplicate_pairs, hash_neighbours, make_map,  # noqa: E402
                            nearest_neighbours, perceptual_hashes, project)
from engine.inspect.duplicates import content_hashes  # noqa: E402
from engine.inspect.job import compute_features  # noqa: E402
from engine.runfolder import RunFolder  # noqa: E402
from engine.store import Workspace  # noqa: E402
from tests.engine.inspect.planted import pair_scores, write_planted_folder  # noqa: E402


def rss_mb() -> float:
    """Peak resident memory of this process so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(work):
    started = time.perf_counter()
    result = work()
    return result, time.perf_counter() - started


def trained_run(workspace: Workspace, source: Path, epochs: int):
    from engine.training import train

    config = RunConfig.from_dict({"data": {"source": str(source), "image_size": 24}, "train": {"epochs": epochs}})
    run = workspace.create_run(config)
    folder = RunFolder(workspace, run.id)
    _, seconds = timed(lambda: train(config, folder))
    return folder, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 images instead of 10,000")
    parser.add_argument("--big", action="store_true", help="also 50,000 points (c)")
    args = parser.parse_args()
    from sklearn.manifold import trustworthiness

    per_class = 476 if args.quick else 2381  # 4 classes + 5 % copies: 2,000 or 10,000 images
    with tempfile.TemporaryDirectory(prefix="bench-inspect-") as scratch:
        root = Path(scratch) / "planted"
        planted, seconds = timed(lambda: write_planted_folder(root, classes=4, per_class=per_class, seed=7))
        print(f"planted folder: {planted.count:,} images ({len(planted.copies)} near copies) written in {seconds:.1f} s")
        workspace = Workspace(Path(scratch) / "ws")
        folder, seconds = trained_run(workspace, root, epochs=2)
        print(f"trained LeNet-5 (2 epochs, 24 px) in {seconds:.1f} s; peak RSS {rss_mb():.0f} MB")

        from engine.models import load_run_model

        images = folder.dataset()
        rows = np.arange(len(images))
        labels = np.asarray(images.labels)
        model = load_run_model(workspace, folder.run_id)
        (features, probabilities), seconds = timed(lambda: compute_features(model, images.images, labels, rows))
        print(f"\n(a) {len(rows):,} images, features {features.shape[1]}-D float16: embedded in {seconds:.1f} s; "
              f"peak RSS {rss_mb():.0f} MB")
        sample = np.random.default_rng(0).choice(len(rows), size=min(2000, len(rows)), replace=False)
        reference = features[sample].astype(np.float32)
        print(f"    {'map':<12} {'seconds':>8} {'trustworthiness':>16} {'peak RSS MB':>12}")
        for label, method in (("umap (cold)", "umap"), ("umap (warm)", "umap"), ("pca", "pca"), ("t-sne", "tsne")):
            xy, seconds = timed(lambda: project(features, method))
            score = trustworthiness(reference, xy[sample], n_neighbors=10)
            print(f"    {label:<12} {seconds:>8.1f} {score:>16.3f} {rss_mb():>12.0f}")
        chosen = make_map(features)
        print(f"    auto (the default) chose {chosen.method}: {chosen.seconds:.1f} s, trustworthiness "
              f"{chosen.trustworthiness:.3f} on its own 1,000-point sample")

        print("\n(b) near duplicates on the planted pairs (recall / share of reported pairs not planted)")
        ids = np.asarray(images.ids, str)
        embeddings = Embeddings(features, np.zeros((len(rows), 2), np.float32), "pca", ids, rows,
                                np.zeros(len(rows), np.int8), labels, probabilities.argmax(axis=1),
                                probabilities.max(axis=1), content_hashes(images.images), list(images.class_names))
        hashes, seconds = timed(lambda: hash_neighbours(perceptual_hashes(images.images)))
        print(f"    perceptual hash + neighbours: {seconds:.1f} s")
        for bits in (4, 8, 10, 12, 14):
            pairs = duplicate_pairs(embeddings, hashes, 1 - bits / 64)
            recall, false_share = pair_scores(planted, [(p.id_a, p.id_b) for p in pairs])
            print(f"    hash <= {bits:>2} bits (similarity {1 - bits / 64:.3f}): {len(pairs):>6} pairs, "
                  f"recall {recall:.1%}, not planted {false_share:.1%}")
        cosine, seconds = timed(lambda: nearest_neighbours(features))
        print(f"    embedding neighbours (chunked matrix product): {seconds:.1f} s")
        for threshold in (0.9, 0.97, 0.99, 0.999):
            pairs = duplicate_pairs(embeddings, cosine, threshold)
            recall, false_share = pair_scores(planted, [(p.id_a, p.id_b) for p in pairs])
            print(f"    embedding cosine >= {threshold}: {len(pairs):>6} pairs, recall {recall:.1%}, "
                  f"not planted {false_share:.1%}")

    if args.big:
        n = 50_000
        rng = np.random.default_rng(1)
        before = rss_mb()
        features = rng.normal(size=(n, 84)).astype(np.float16)
        images = rng.integers(0, 256, (n, 24, 24, 3), dtype=np.uint8)
        base = rss_mb()
        print(f"\n(c) {n:,} points: inputs {features.nbytes / 1e6:.0f} + {images.nbytes / 1e6:.0f} MB "
              f"(RSS {before:.0f} -> {base:.0f} MB)")
        _, seconds = timed(lambda: nearest_neighbours(features))
        print(f"    embedding neighbours: {seconds:.1f} s, peak RSS {rss_mb():.0f} MB")
        _, seconds = timed(lambda: hash_neighbours(perceptual_hashes(images)))
        print(f"    perceptual hash + neighbours: {seconds:.1f} s, peak RSS {rss_mb():.0f} MB")
        _, seconds = timed(lambda: project(features, "umap"))
        print(f"    umap map: {seconds:.1f} s, peak RSS {rss_mb():.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
