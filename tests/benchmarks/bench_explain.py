"""Cost and faithfulness of Grad-CAM, Grad-CAM++, SHAP and LIME per image; pointing game on `shapes`.

Trains a small ResNet (or `--model lenet5|resnet_cbam`) in-process on `digits` and on `shapes` (32 px, a few
epochs), then:

- warms up (`methods.warm_up`: SHAP's numba compilation, timed; Grad-CAM's graph) and explains
  `--images` held-out images with each method, printing the mean seconds per image and the
  deletion/insertion AUCs against random orders;
- on `shapes`, plays the pointing game over the correctly classified images among the first
  `--pointing` held-out ones (the map's peak inside the object mask, and within 2 px of it),
  with a 95 % Wilson interval (ten images say little), and Grad-CAM's step by step: as it
  was, with its cells placed where they look, and with sub-cell shifts too;
- times Grad-CAM as it was (a `keras.Model` built and run eagerly on every call, one pass,
  a plain resize) against now (cached, compiled; one pass and with sub-cell shifts),
  interleaved over the same images, and prints the ratios.

CPU targets for a 32-64 px CNN: Grad-CAM <= 0.1 s, SHAP <= 3 s, LIME <= 5 s.

    .venv/bin/python tests/benchmarks/bench_explain.py [--images 12] [--pointing 100] [--sources digits,shapes]

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
METHODS = ("gradcam", "gradcam_pp", "shap", "lime")


def train(source: str, size: int, epochs: int, model_name: str, per_class: int):
    import keras

    from engine.config import ModelConfig
    from engine.data import load_images
    from engine.models import make_model

    data = load_images(source, size, max_per_class=per_class, seed=0)
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
    print(f"{source} / {model_name} ({len(train_idx)} training images): trained {epochs} epochs in "
          f"{time.perf_counter() - started:.1f} s, test accuracy {accuracy:.3f}", flush=True)
    return model, data, test, probabilities


def gradcam_before(model, image: np.ndarray, layer_name: str, class_index: int) -> np.ndarray:
    """Grad-CAM as it was before the cache (for the speed comparison): a sub-model built on every call, run
    eagerly, one pass, the cell map stretched over the image by a plain bilinear resize."""
    import keras
    import tensorflow as tf

    graph = keras.Model(model.inputs, [model.get_layer(layer_name).output, model.get_layer("logits").output])
    with tf.GradientTape() as tape:
        features, scores = graph(tf.convert_to_tensor(image[None]), training=False)
        target = scores[:, class_index]
    gradients = tape.gradient(target, features)
    weights = tf.reduce_mean(gradients, axis=(1, 2))
    cam = tf.nn.relu(tf.reduce_sum(features * weights[:, None, None, :], axis=-1))[0]
    cam = tf.image.resize(cam[..., None], image.shape[:2], method="bilinear")[..., 0].numpy()
    return cam / cam.max() if cam.max() > 0 else np.zeros_like(cam)


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95 % Wilson score interval of a proportion."""
    if n == 0:
        return float("nan"), float("nan")
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def speed(model, images: np.ndarray, targets: np.ndarray, layer: str, rounds: int) -> dict:
    """Seconds per image of Grad-CAM before and after, interleaved image by image (noise hits all alike)."""
    from engine.explain.gradcam import gradcam

    variants = {
        "before (new keras.Model per call, eager, 1 pass)": lambda x, t: gradcam_before(model, x, layer, t),
        "after, 1 pass (cached tf.function)": lambda x, t: gradcam(model, x, layer, t, shifts=1),
        "after, default (cached, sub-cell shifts)": lambda x, t: gradcam(model, x, layer, t),
        "after, Grad-CAM++ default": lambda x, t: gradcam(model, x, layer, t, variant="gradcam_pp"),
    }
    for run in variants.values():  # warm-up: the first call traces/builds
        run(images[0], int(targets[0]))
    seconds = {name: [] for name in variants}
    for _ in range(rounds):
        for image, target in zip(images, targets):
            for name, run in variants.items():
                started = time.perf_counter()
                run(image, int(target))
                seconds[name].append(time.perf_counter() - started)
    out = {name: float(np.median(values)) for name, values in seconds.items()}
    before = out["before (new keras.Model per call, eager, 1 pass)"]
    print(f"  Grad-CAM speed, median of {rounds} x {len(images)} interleaved calls:")
    for name, value in out.items():
        print(f"    {name:<50} {1000 * value:7.1f} ms/image   before/this = {before / value:5.1f}x")
    return out


def ablation(model, images, masks, predicted, labels, pointing: int, layer: str) -> None:
    """Grad-CAM's pointing game as it was, with the cells placed where they look, and with sub-cell shifts too."""
    from engine.explain.faithfulness import pointing_hit
    from engine.explain.gradcam import gradcam

    correct = [i for i in range(min(pointing, len(images))) if predicted[i] == labels[i]]
    steps = {"before (plain resize, 1 pass)": lambda x, t: gradcam_before(model, x, layer, t),
             "placed where the cells look, 1 pass": lambda x, t: gradcam(model, x, layer, t, shifts=1),
             "placed + sub-cell shifts (default)": lambda x, t: gradcam(model, x, layer, t)}
    print(f"  Grad-CAM pointing game, step by step, on the same {len(correct)} images:")
    for name, run in steps.items():
        maps = [run(images[i], int(predicted[i])) for i in correct]
        hits = np.mean([pointing_hit(a, masks[i]) for a, i in zip(maps, correct)])
        near = np.mean([pointing_hit(a, masks[i], TOLERANCE) for a, i in zip(maps, correct)])
        print(f"    {name:<40} {100 * hits:5.1f}%  ({100 * near:5.1f}% within {TOLERANCE} px)", flush=True)


def bench(source: str, count: int, pointing: int, size: int, epochs: int, model_name: str, per_class: int,
          rounds: int) -> dict:
    from engine.explain.faithfulness import pointing_hit
    from engine.explain.methods import explain, warm_up
    from engine.models import describe_model

    model, data, test, probabilities = train(source, size, epochs, model_name, per_class)
    layer = describe_model(model)["last_conv"]
    images = data.images[test].astype("float32")
    predicted = np.argmax(probabilities, axis=1)
    started = time.perf_counter()
    spent = warm_up(model, images[0].shape)
    print(f"  warm_up: {', '.join(f'{k} {v:.1f} s' for k, v in spent.items())} "
          f"(total {time.perf_counter() - started:.1f} s; SHAP's numba compiles once per process)", flush=True)
    out = {"model": model_name, "layer": layer, "speed": speed(model, images[:count], predicted[:count], layer, rounds)}
    if data.masks is not None:
        ablation(model, images, data.masks[test], predicted, data.labels[test], pointing, layer)
    for method in METHODS:
        rows = [explain(model, images[i], method, class_names=data.class_names) for i in range(count)]
        row = out[method] = {
            "seconds_per_image": float(np.mean([r.seconds for r in rows])),
            "deletion_auc": float(np.mean([r.deletion_auc for r in rows])),
            "random_deletion_auc": float(np.mean([r.random_deletion_auc for r in rows])),
            "insertion_auc": float(np.mean([r.insertion_auc for r in rows])),
            "random_insertion_auc": float(np.mean([r.random_insertion_auc for r in rows])),
            "beats_random_share": float(np.mean([(r.faithfulness_score or 0) > 0 for r in rows])),
        }
        line = (f"  {method:<10} {row['seconds_per_image']:.3f} s/image  deletion {row['deletion_auc']:.3f} "
                f"(random {row['random_deletion_auc']:.3f})  insertion {row['insertion_auc']:.3f} "
                f"(random {row['random_insertion_auc']:.3f})  beats random on {100 * row['beats_random_share']:.0f}%")
        if data.masks is not None:
            correct = [i for i in range(min(pointing, len(test))) if predicted[i] == data.labels[test[i]]]
            maps = [rows[i].attribution if i < count else
                    explain(model, images[i], method, faithfulness=False).attribution for i in correct]
            masks = [data.masks[test[i]] for i in correct]
            hits = sum(pointing_hit(a, m) for a, m in zip(maps, masks))
            near = sum(pointing_hit(a, m, TOLERANCE) for a, m in zip(maps, masks))
            low, high = wilson(hits, len(correct))
            row.update(pointing_game=hits / len(correct), pointing_game_95ci=[low, high],
                       **{f"pointing_game_{TOLERANCE}px": near / len(correct)}, pointing_images=len(correct))
            line += (f"\n             pointing game {100 * hits / len(correct):.1f}% (95% CI {100 * low:.0f}-"
                     f"{100 * high:.0f}%), {100 * near / len(correct):.1f}% within {TOLERANCE} px, "
                     f"of {len(correct)} correctly classified")
        print(line, flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=12, help="images timed and scored for faithfulness")
    parser.add_argument("--pointing", type=int, default=100,
                        help="held-out shapes images for the pointing game (the correctly classified ones count)")
    parser.add_argument("--sources", default="digits,shapes")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--per-class", type=int, default=300, help="images per class to train on (and test)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the Grad-CAM speed comparison")
    parser.add_argument("--model", default="resnet", choices=["lenet5", "resnet", "resnet_cbam"],
                        help="resnet (global average pooling) is what Grad-CAM is designed for; LeNet-5 flattens")
    args = parser.parse_args()
    results = {source: bench(source, args.images, args.pointing, args.size, args.epochs, args.model, args.per_class,
                             args.rounds)
               for source in args.sources.split(",")}
    print(json.dumps(results))


if __name__ == "__main__":
    main()
