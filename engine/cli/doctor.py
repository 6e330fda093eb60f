"""`doctor`: what TensorFlow sees on this machine, as `engine.doctor.diagnose` reports it."""

from __future__ import annotations

import json

from engine.store import Workspace


def register(subparsers) -> None:
    """Adds `doctor` to the top-level parser's `subparsers`."""
    p = subparsers.add_parser("doctor", help="what TensorFlow sees here: CPU features, oneDNN setting, GPUs, versions")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_doctor)


def cmd_doctor(args, workspace: Workspace) -> int:
    from engine.doctor import diagnose  # imports TensorFlow

    report = diagnose()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    cpu = report["cpu"]
    print(f"CPU       {cpu['model']} ({cpu['cores']} cores, {cpu['machine']})")
    print(f"features  {' '.join(cpu['features']) or '(no AVX: TensorFlow runs its slowest kernels)'}")
    print(f"oneDNN    {report['onednn']['description']}")
    print(f"GPUs      {', '.join(report['gpus']) or 'none seen by TensorFlow (training runs on the CPU)'}")
    tf_build = report["tensorflow"]
    if tf_build["cuda_build"]:
        print(f"CUDA      built for CUDA {tf_build['cuda']}, cuDNN {tf_build['cudnn']}")
    print("versions  " + ", ".join(f"{k} {v}" for k, v in report["versions"].items() if v))
    return 0
