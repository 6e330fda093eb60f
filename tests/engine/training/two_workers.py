"""One worker of a two-process run without Ray (`python -m tests.engine.training.two_workers ROOT RUN INDEX PORTS`).

TF_CONFIG names the workers, as Ray Train would set it; the worker trains with `engine.training_loop` and
prints one JSON line: its weights digest and epochs done. Also `single ROOT RUN`: the same run with `model.fit`.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def worker_env(**extra) -> dict:
    """The environment a worker (or a Ray job driving workers) runs with: this project on the path, Ray's usage
    stats and token auth off, the local backend's choice not inherited."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled",
           "TF_CPP_MIN_LOG_LEVEL": "2", **extra}
    env.pop("APERTURE_BACKEND", None)
    return env


def free_ports(count: int) -> list[int]:
    """`count` loopback ports free at the moment (TF_CONFIG's worker addresses)."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def new_run(workspace, config) -> str:
    """Records a run for `config` and prepares its data, as the train job does first; its id."""
    from engine.runfolder import RunFolder
    from engine.training import load_run_data

    run = workspace.create_run(config)
    load_run_data(RunFolder(workspace, run.id), lambda progress, message: None)
    return run.id


def main(argv: list[str]) -> int:
    mode, root, run_id = argv[:3]
    from engine.runfolder import RunFolder
    from engine.store import Workspace

    workspace = Workspace(root)
    folder = RunFolder(workspace, run_id)
    config = folder.config()
    if mode == "single":
        from engine.training import train
        from engine.training_loop import weights_digest  # noqa: F401 - the same digest for both paths

        result = train(config, folder)
        import keras

        model = keras.models.load_model(folder.last_checkpoint, safe_mode=True)
        print(json.dumps({"digest": weights_digest(model), "epochs_done": result.epochs}))
        return 0
    index, ports = int(argv[3]), argv[4].split(",")
    os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                                          "task": {"type": "worker", "index": index}})
    from engine.training_loop import train_worker

    cancel_file = os.environ.get("TWO_WORKERS_CANCEL_FILE")
    outcome = train_worker(config, folder, workers=len(ports),
                           should_stop=lambda: bool(cancel_file) and os.path.exists(cancel_file),
                           report=lambda progress, message: None)
    print(json.dumps({"digest": outcome["weights_digest"], "epochs_done": outcome["epochs_done"],
                      "chief": outcome["chief"], "cancelled": outcome["cancelled"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
