"""One worker of a two-process run without Ray (`python -m tests.engine.training.two_workers ROOT RUN INDEX PORTS`).

TF_CONFIG names the workers, as Ray Train would set it; the worker trains with `engine.training_loop` and
prints one JSON line: its weights digest and epochs done. Also `single ROOT RUN`: the same run with `model.fit`.
"""

from __future__ import annotations

import json
import os
import sys


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
