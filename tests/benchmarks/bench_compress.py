"""Benchmarks compression and the runtimes side by side, in one run:
`python tests/benchmarks/bench_compress.py [--quick]`.

(a) Distillation: a ResNet teacher (width 32) on digits and a LeNet-5 student (under 1/4 of its
    parameters), distilled vs the same student trained alone (same data, epochs, seed): accuracy
    and the epoch at which each first reaches the alone run's final validation accuracy.
(b) Pruning at 75 %: the teacher pruned while fine-tuning: accuracy drop and gzip size of the
    .keras and .tflite against the unpruned model's.
(c) Runtimes on the same model and CPU: OpenVINO vs LiteRT vs ONNX Runtime, single-image and
    batch-32 latency, INT8 vs float32 per runtime, on the digits teacher (from its parity report)
    and on a MobileNetV2 at 96 px (random weights: latency only).

Runs in-process on a temporary workspace (Aperture's real training, compress and export code);
prints figures and targets, asserts nothing about time, exits 0. Not collected by pytest.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import engine  # noqa: E402,F401 - first: the oneDNN setting before TensorFlow

import numpy as np  # noqa: E402

from engine import export  # noqa: E402
from engine.compress import CompressRequest, child_config  # noqa: E402
from engine.compress.job import compress_run  # noqa: E402
from engine.config import RunConfig  # noqa: E402
from engine.runfolder import RunFolder  # noqa: E402
from engine.store import COMPLETED, Workspace  # noqa: E402

RUNTIME_FORMATS = (("LiteRT", "float32", "int8"), ("ONNX Runtime", "onnx", None), ("OpenVINO", "openvino",
                                                                                   "openvino_int8"))


def train_run(workspace: Workspace, model: dict, epochs: int, image_size: int) -> str:
    from engine.training import train

    config = RunConfig.from_dict({"name": f"bench {model['name']}", "data": {"source": "digits",
                                                                              "image_size": image_size},
                                  "model": model, "train": {"epochs": epochs, "batch_size": 32}})
    run = workspace.create_run(config)
    job = workspace.claim_next_job(limit=10)
    train(config, RunFolder(workspace, run.id))
    workspace.finish_job(job.id, COMPLETED)
    return run.id


def compress(workspace: Workspace, parent: str, request: CompressRequest) -> tuple[str, dict]:
    child = workspace.create_run(child_config(workspace.get_run(parent).config, request), parent_id=parent,
                                 kind="compress", request_json=json.dumps(request.to_dict()))
    job = workspace.claim_next_job(limit=10)
    result = compress_run(RunFolder(workspace, child.id), request)
    workspace.finish_job(job.id, COMPLETED)
    return child.id, result


def first_epoch_reaching(curve: list[float], target: float) -> int | None:
    return next((i + 1 for i, value in enumerate(curve) if value >= target - 1e-9), None)


def part_distill(workspace: Workspace, teacher: str, epochs: int, temperature: float, alpha: float) -> None:
    _, r = compress(workspace, teacher, CompressRequest(method="distill", student="lenet5", epochs=epochs,
                                                        temperature=temperature, alpha=alpha))
    m, curves = r["models"], r["val_accuracy_curves"]
    print(f"\n(a) distillation: lenet5 student ({m['student']['params']:,} params, "
          f"{r['params_ratio']:.3f}x the teacher's {m['teacher']['params']:,}), {epochs} epochs, T={temperature:g}, "
          f"alpha={alpha:g}")
    print(f"{'':<22}{'accuracy':>10}{'params':>10}{'size KiB':>10}{'latency ms':>12}")
    for key, name in (("student", "student, distilled"), ("alone", "student, alone"), ("teacher", "teacher")):
        f = m[key]
        print(f"{name:<22}{100 * f['accuracy']:>9.2f}%{f['params']:>10,}{f['size_bytes'] / 1024:>10.1f}"
              f"{f['latency_ms']:>12.2f}")
    target = curves["alone"][-1]
    reached = first_epoch_reaching(curves["student"], target)
    print(f"distilled - alone: {r['gain_points']:+.2f} test points (target >= +1, or the same accuracy in fewer "
          f"epochs); validation accuracy {100 * target:.2f}% (alone, epoch {len(curves['alone'])}) reached by the "
          f"distilled student at epoch {reached or 'never'}")
    print(f"val accuracy by epoch: distilled {[round(100 * v, 1) for v in curves['student']]}")
    print(f"                       alone     {[round(100 * v, 1) for v in curves['alone']]}")


def part_prune(workspace: Workspace, teacher: str, epochs: int) -> str:
    child, r = compress(workspace, teacher, CompressRequest(method="prune", sparsity=0.75, epochs=epochs))
    sizes = r["gzip_sizes"]
    print(f"\n(b) pruning to 75 % ({epochs} fine-tuning epochs, polynomial schedule): measured sparsity "
          f"{100 * r['sparsity']:.1f} %")
    print(f"accuracy {100 * r['test_accuracy']:.2f}% vs {100 * r['parent_test_accuracy']:.2f}% unpruned: drop "
          f"{r['accuracy_drop_points']:+.2f} points (target <= 1)")
    for name in ("keras", "tflite"):
        s = sizes[name]
        print(f"gzip .{name:<7} {s['child'] / 1024:8.1f} KiB vs {s['parent'] / 1024:8.1f} KiB: {s['ratio']:.3f}x "
              "(target <= 0.45)")
    return child


def runtime_rows(latencies: dict) -> None:
    print(f"{'runtime':<14}{'fp32 1 img':>11}{'fp32 b32':>10}{'int8 1 img':>11}{'int8 b32':>10}"
          f"{'int8/fp32 1':>12}{'int8/fp32 b32':>14}{'fp32 MB':>9}{'int8 MB':>9}")
    for runtime, (fp32, int8) in latencies.items():
        def cell(value, width, fmt=".3f"):
            return f"{value:>{width}{fmt}}" if value is not None else f"{'-':>{width}}"
        ratio1 = int8[0] / fp32[0] if int8 else None
        ratio32 = int8[1] / fp32[1] if int8 else None
        print(f"{runtime:<14}{cell(fp32[0], 11)}{cell(fp32[1], 10)}{cell(int8 and int8[0], 11)}"
              f"{cell(int8 and int8[1], 10)}{cell(ratio1, 12)}{cell(ratio32, 14)}{cell(fp32[2] / 1e6, 9, '.2f')}"
              f"{cell(int8 and int8[2] / 1e6, 9, '.2f')}")


def part_runtimes_digits(workspace: Workspace, run_id: str, title: str) -> None:
    formats = ("float32", "int8", "onnx", "openvino", "openvino_int8")
    report = export.export_run(workspace, run_id, export.ExportRequest(formats=formats, latency_runs=200))
    facts = {a.format: (a.latency_ms_median, a.batch_latency_ms_median, a.size_bytes) for a in report.artifacts}
    print(f"\n(c) runtimes on {title} (ms, medians; accuracy: "
          + ", ".join(f"{a.format} {100 * a.accuracy:.2f}%" for a in report.artifacts) + ")")
    runtime_rows({name: (facts[fp32], facts.get(int8)) for name, fp32, int8 in RUNTIME_FORMATS})


def onnx_int8(source: Path, target: Path, calibration: np.ndarray) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"image": calibration[i:i + 1]} for i in range(len(calibration))])

        def get_next(self):
            return next(self.items, None)

    quantize_static(str(source), str(target), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)


def part_runtimes_mobilenet(folder: Path, runs: int) -> None:
    import keras

    from engine.export.convert import artifact_size, export_artifact
    from engine.export.runners import OnnxRunner, load_runner, time_runner

    keras.utils.set_random_seed(0)
    inputs = keras.Input((96, 96, 3), name="image")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    base = keras.applications.MobileNetV2(input_shape=(96, 96, 3), include_top=False, weights=None, pooling="avg")
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(base(x)))
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (64, 96, 96, 3)).astype(np.float32)
    calibration = images[:32]
    latencies, paths = {}, {}
    for fmt in ("float32", "int8", "onnx", "openvino", "openvino_int8"):
        paths[fmt] = folder / export.FORMATS[fmt].artifact
        started = time.monotonic()
        export_artifact(model, fmt, paths[fmt], calibration_images=calibration)
        print(f"  converted {fmt} in {time.monotonic() - started:.1f} s", file=sys.stderr)
    paths["onnx_int8"] = folder / "model_int8.onnx"
    try:
        onnx_int8(paths["onnx"], paths["onnx_int8"], calibration)
    except Exception as error:  # noqa: BLE001 - a benchmark row, not the product
        print(f"  ONNX Runtime static INT8 failed: {type(error).__name__}: {error}", file=sys.stderr)
        paths.pop("onnx_int8")
    for fmt, path in paths.items():
        runner = OnnxRunner(path) if fmt == "onnx_int8" else load_runner(path, fmt)
        single, batch = time_runner(runner, images, runs=runs, batch_runs=10)
        latencies[fmt] = (float(np.median(single)), float(np.median(batch)), artifact_size(path))
    print(f"\n(c) runtimes on a MobileNetV2 at 96 px ({model.count_params():,} params, random weights; ms, medians)")
    runtime_rows({"LiteRT": (latencies["float32"], latencies["int8"]),
                  "ONNX Runtime": (latencies["onnx"], latencies.get("onnx_int8")),
                  "OpenVINO": (latencies["openvino"], latencies["openvino_int8"])})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer epochs and timed runs (a smoke test)")
    parser.add_argument("--part", choices=("all", "mobilenet"), default="all",
                        help="mobilenet: only the MobileNetV2 runtime table (to repeat it on a noisy machine)")
    args = parser.parse_args()
    epochs, runs = (3, 30) if args.quick else (12, 200)
    started = time.monotonic()
    if args.part == "mobilenet":
        with tempfile.TemporaryDirectory() as tmp:
            part_runtimes_mobilenet(Path(tmp), runs)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        workspace = Workspace(Path(tmp) / "workspace")
        teacher = train_run(workspace, {"name": "resnet", "width": 32}, epochs, image_size=16)
        run = workspace.get_run(teacher)
        print(f"teacher: resnet width 32 on digits 16 px, {epochs} epochs: {run.params:,} params, test accuracy "
              f"{100 * run.test_accuracy:.2f}%")
        for temperature, alpha in ((4.0, 0.1), (2.0, 0.5)):  # the Keras example's weighting, and an even one
            part_distill(workspace, teacher, epochs, temperature, alpha)
        part_prune(workspace, teacher, max(2, epochs // 3))
        part_runtimes_digits(workspace, teacher, f"the digits ResNet teacher ({run.params:,} params, 16 px)")
        mobile = Path(tmp) / "mobilenet"
        mobile.mkdir()
        part_runtimes_mobilenet(mobile, runs)
    print(f"\n{time.monotonic() - started:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
