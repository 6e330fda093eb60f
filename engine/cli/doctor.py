"""`doctor`: what TensorFlow sees on this machine, as `engine.doctor.diagnose` reports it."""

from __future__ import annotations

import json

from engine.store import Workspace


def register(subparsers) -> None:
    """Adds `doctor` to the top-level parser's `subparsers`."""
    p = subparsers.add_parser("doctor", help="what TensorFlow sees here: CPU features, oneDNN setting, GPUs, "
                                                "versions; on Ray, whether a worker node shares the workspace")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_doctor)


def cmd_doctor(args, workspace: Workspace) -> int:
    from engine.doctor import check_cluster, diagnose  # imports TensorFlow

    report = diagnose()
    if (cluster := check_cluster(workspace)) is not None:
        report["cluster"] = cluster
    if args.json:
        print(json.dumps(report, indent=2))
        return 0 if cluster is None or cluster["shared_workspace"] else 1
    cpu = report["cpu"]
    print(f"CPU       {cpu['model']} ({cpu['cores']} cores, {cpu['machine']})")
    print(f"features  {' '.join(cpu['features']) or '(no AVX: TensorFlow runs its slowest kernels)'}")
    print(f"oneDNN    {report['onednn']['description']}")
    print(f"GPUs      {', '.join(report['gpus']) or 'none seen by TensorFlow (training runs on the CPU)'}")
    tf_build = report["tensorflow"]
    if tf_build["cuda_build"]:
        print(f"CUDA      built for CUDA {tf_build['cuda']}, cuDNN {tf_build['cudnn']}")
    print("versions  " + ", ".join(f"{k} {v}" for k, v in report["versions"].items() if v))
    if cluster is not None:
        nodes = ", ".join(f"{n['address']} ({n['cpus']:g} CPU, {n['gpus']:g} GPU)" for n in cluster["nodes"])
        print(f"Ray       {cluster['address'] or '(RAY_ADDRESS not set)'}: {nodes or 'no nodes seen'}")
        print(f"workspace {cluster['detail']}")
        if not cluster["shared_workspace"]:
            return 1
    return 0
