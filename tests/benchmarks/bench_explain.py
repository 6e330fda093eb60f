"""Cost and faithfulness of Grad-CAM, SHAP and LIME per image; pointing game on `shapes`.

Trains a small ResNet (or `--model lenet5`) in-process on `digits` and on `shapes` (32 px, a few epochs), then
explains held-out images with each method (after one warm-up call) and prints, per
method, the mean seconds per image, deletion/insertion AUCs against random orders, and
on `shapes` the pointing game over the correctly classified images (peak inside the
object mask, and within 2 px of it). CPU targets for a 32-64 px CNN: Grad-CAM <= 0.1 s, SHAP <= 3 s, LIME <= 5 s.

    .venv/bin/python tests/benchmarks/bench_explain.py [--images 12] [--sources digits,shapes]

Not collected by pytest.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402

TOLERANCE = 2  # pixels: Zhang et al.'s 15 px on 224 px images, scaled to 32 px


def train(source: str, size: int, epochs: int, model_name: str):
    import keras

    from engine.config import ModelConfig
    from engine.data import load_images
    from engine.models import make_model

    data = load_images(source, size, max_per_class=300, seed=0)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(data.labels))
    test, train_idx = order[:100], order[100:]
    config = ModelConfig(activation="relu", pooling="max") if model_name == "lenet5" else ModelConfig(name=model_name)
    model = make_model(config, (size, size, 3), len(data.class_names), seed=0)
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    started = time.perf_counter()
    model.fit(data.images[train_idx].astype("float32"), data.labels[train_idx], epochs=epochs, batch_size=64,
              verbose=0)
    probabilities = model.predict(data.images[test].astype("float32"), verbose=0)
    accuracy = float(np.mean(np.argmax(probabilities, 1) == data.labels[test]))
    print(f"{source} / {model_name}: trained {epochs} epochs in {time.perf_counter() - started:.1f} s, test accuracy {accuracy:.3f}")
    return model, data, test, probabilities


def bench(source: str, count: int, size: int, epochs: int, model_name: str) -> dict:
    from engine.explain.faithfulness import pointing_hit
    from engine.explain.methods import explain

    model, data, test, probabilities = train(source, size, epochs, model_name)
    out = {}
    for method in ("gradcam", "shap", "lime"):
        explain(model, data.images[test[0]], method, faithfulness=False)  # warm-up (SHAP's first call compiles)
        rows, hits, near = [], [], []
        for position, index in enumerate(test[:count]):
            result = explain(model, data.images[index].astype("float32"), method, class_names=data.class_names)
            rows.append(result)
            correct = int(np.argmax(probabilities[position])) == int(data.labels[index])
            if data.masks is not None and correct:
                hits.append(pointing_hit(result.attribution, data.masks[index]))
                near.append(pointing_hit(result.attribution, data.masks[index], tolerance=TOLERANCE))
        out[method] = {
            "seconds_per_image": float(np.mean([r.seconds for r in rows])),
            "deletion_auc": float(np.mean([r.deletion_auc for r in rows])),
            "random_deletion_auc": float(np.mean([r.random_deletion_auc for r in rows])),
            "insertion_auc": float(np.mean([r.insertion_auc for r in rows])),
            "random_insertion_auc": float(np.mean([r.random_insertion_auc for r in rows])),
            "beats_random_share": float(np.mean([(r.faithfulness_score or 0) > 0 for r in rows])),
            **({"pointing_game": float(np.mean(hits)), f"pointing_game_{TOLERANCE}px": float(np.mean(near)),
                "pointing_images": len(hits)} if hits else {}),
        }
        row = out[method]
        print(f"  {method:<8} {row['seconds_per_image']:.3f} s/image  deletion {row['deletion_auc']:.3f} "
              f"(random {row['random_deletion_auc']:.3f})  insertion {row['insertion_auc']:.3f} "
              f"(random {row['random_insertion_auc']:.3f})  beats random on {100 * row['beats_random_share']:.0f}%"
              + (f"  pointing game {100 * row['pointing_game']:.0f}% ({100 * row[f'pointing_game_{TOLERANCE}px']:.0f}% "
                 f"within {TOLERANCE} px) of {row['pointing_images']}"
                 if "pointing_game" in row else ""), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=12, help="images explained per method and dataset")
    parser.add_argument("--sources", default="digits,shapes")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--model", default="resnet", choices=["lenet5", "resnet", "resnet_cbam"],
                        help="resnet (global average pooling) is what Grad-CAM is designed for; LeNet-5 flattens")
    args = parser.parse_args()
    results = {source: bench(source, args.images, args.size, args.epochs, args.model)
               for source in args.sources.split(",")}
    print(json.dumps(results))


if __name__ == "__main__":
    main()
