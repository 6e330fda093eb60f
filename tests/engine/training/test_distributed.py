"""`train.workers=2`: one model across two worker processes on the CPU.

Without Ray (two processes that `TF_CONFIG` joins, `two_workers.py`): the custom loop's workers end
with identical weights, match `model.fit` in one process, and a cancel seen by one worker stops both.
With Ray (a local cluster started here), through the real job path (`python -m engine job ID`, Ray
Train inside): a cancel through the store stops every worker, a resume completes the run from its
last checkpoint, and `show --json` reports 2 workers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.config import ConfigError, RunConfig
from engine.runfolder import RunFolder
from engine.store import Workspace
from tests.engine.training.two_workers import free_ports, new_run, worker_env

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]
# Both paths step on the same global batches; only the summation order of a gradient differs (two
# half-batch sums all-reduced vs one sum), about 1e-7 relative after 80 steps here. A wrong loss
# scale, batch split or a skipped all-reduce moves these figures by percents.
TOLERANCE = 1e-4


def _config(workers: int, **train) -> RunConfig:
    return RunConfig.from_dict({
        "data": {"source": "digits", "image_size": 16}, "augment": {"rotation": 0, "shift": 0, "zoom": 0},
        "train": {"epochs": 2, "batch_size": 32, "schedule": "constant", "mixed_precision": "off",
                  "workers": workers, **train}})


def _start(*args: str, **env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.engine.training.two_workers", *args], cwd=ROOT,
                            env=worker_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _result(process: subprocess.Popen, timeout: float = 300) -> dict:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def _two_workers(workspace: Workspace, run_id: str, **env) -> list[dict]:
    ports = ",".join(str(p) for p in free_ports(2))
    workers = [_start("worker", str(workspace.root), run_id, str(i), ports, **env) for i in range(2)]
    try:
        return [_result(w) for w in workers]
    finally:
        for w in workers:
            w.kill()


def test_two_workers_need_the_ray_backend(monkeypatch, tmp_path):
    from engine import jobs

    monkeypatch.delenv("APERTURE_BACKEND", raising=False)
    with pytest.raises(ConfigError, match=r"train.workers=2: .*needs the Ray backend \(APERTURE_BACKEND=ray"):
        jobs.submit(_config(2), Workspace(tmp_path))
    assert Workspace(tmp_path).list_runs() == []  # refused before anything was recorded
    with pytest.raises(ConfigError, match="train.workers=0: must be between 1 and 256"):
        _config(0)
    with pytest.raises(ConfigError, match="two-phase fine-tuning"):
        RunConfig.from_dict({"model": {"name": "transfer"}, "train": {"workers": 2, "head_epochs": 1}})


def test_two_workers_end_equal_and_match_one_process_fit(tmp_path):
    workspace = Workspace(tmp_path)
    pair, single = new_run(workspace, _config(2)), new_run(workspace, _config(1))
    fit = _start("single", str(workspace.root), single)  # model.fit in one process, alongside
    chief, other = _two_workers(workspace, pair)
    alone = _result(fit)

    assert chief["chief"] and not other["chief"]
    assert chief["digest"] == other["digest"]  # identical weights on both workers, to the last bit
    assert chief["epochs_done"] == other["epochs_done"] == alone["epochs_done"] == 2
    assert chief["digest"] == pytest.approx(alone["digest"], rel=TOLERANCE, abs=TOLERANCE)
    two, one = workspace.epochs(pair), workspace.epochs(single)
    assert [m.epoch for m in two] == [1, 2]  # written once, by the chief
    for a, b in zip(two, one):
        for name in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert getattr(a, name) == pytest.approx(getattr(b, name), rel=TOLERANCE), name
    folder = RunFolder(workspace, pair)
    assert json.loads(folder.last_checkpoint_info.read_text())["epoch"] == 2 and folder.model_file.exists()
    assert list((folder.tensorboard_dir / "validation").glob("events.out.tfevents.*"))
    assert "2 workers" in workspace.get_run(pair).device


def test_a_cancel_one_worker_sees_stops_both_at_the_same_step(tmp_path):
    workspace = Workspace(tmp_path)
    run_id = new_run(workspace, _config(2, epochs=200, batch_size=8))
    flag = tmp_path / "cancel"
    ports = ",".join(str(p) for p in free_ports(2))
    chief = _start("worker", str(workspace.root), run_id, "0", ports)
    other = _start("worker", str(workspace.root), run_id, "1", ports, TWO_WORKERS_CANCEL_FILE=str(flag))
    try:
        deadline = time.monotonic() + 240
        while not workspace.epochs(run_id) and chief.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        flag.touch()  # only the second worker reads it: the all-reduced vote must stop the chief too
        a, b = _result(chief, 120), _result(other, 120)
    finally:
        chief.kill()
        other.kill()
    assert a["cancelled"] and b["cancelled"]
    assert a["digest"] == b["digest"] and a["epochs_done"] == b["epochs_done"] < 200
    assert 1 <= len(workspace.epochs(run_id)) < 200


# -- through the real job path on a local Ray cluster ---------------------------------


@pytest.fixture(scope="module")
def ray_address(tmp_path_factory):
    """A local Ray cluster of 4 CPUs for this module; its GCS address."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    temp = Path("/tmp") / f"ray_t{os.getpid()}"  # short: Ray's socket paths must fit in 107 characters
    context = ray.init(address="local", num_cpus=4, object_store_memory=100 * 1024**2, include_dashboard=False,
                       _temp_dir=str(temp), logging_level="WARNING")
    yield context.address_info["gcs_address"]
    ray.shutdown()


def _job(workspace: Workspace, address: str, job_id: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "engine", "job", job_id], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True,
                            env=worker_env(APERTURE_HOME=str(workspace.root), RAY_ADDRESS=address))


def _show(workspace: Workspace, run_id: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "engine", "show", run_id, "--json"], cwd=ROOT, check=True,
                         capture_output=True, text=True, env=worker_env(APERTURE_HOME=str(workspace.root)))
    return json.loads(out.stdout)


def test_a_cancel_reaches_every_ray_worker_and_the_run_resumes(ray_address, tmp_path):
    from engine import jobs
    from engine.store import CANCELLED, TRAIN_JOB

    workspace = Workspace(tmp_path)
    run_id = workspace.create_run(_config(2, epochs=4, batch_size=8)).id
    job = workspace.claim_next_job(10)
    process = _job(workspace, ray_address, job.id)
    try:
        deadline = time.monotonic() + 300
        while not workspace.epochs(run_id) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        jobs.cancel_job(job.id, workspace)
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert workspace.get_job(job.id).status == CANCELLED, err[-4000:]
    assert "worker 0 done" in err and "worker 1 done" in err and err.count(", cancelled") >= 2  # both stopped
    done = workspace.get_run(run_id).epochs_done
    assert 1 <= done < 4

    again = workspace.create_job(run_id, TRAIN_JOB)  # what `resume` queues (its backend check needs Ray's)
    workspace.claim_next_job(10)
    process = _job(workspace, ray_address, again.id)
    _, err = process.communicate(timeout=400)
    assert process.returncode == 0, err[-4000:]
    shown = _show(workspace, run_id)
    assert shown["status"] == "completed" and shown["workers"] == 2, shown["error"]
    assert shown["epochs"] == 4 and [e["epoch"] for e in shown["epochs_history"]] == [1, 2, 3, 4]
    assert shown["device"].startswith("2 workers") and shown["test_accuracy"] > 0.5
    assert f"resuming from the last checkpoint after epoch {done}" in err
    assert "worker 1 done: 4 epochs" in err  # the second worker's own log line reached the job log
    assert RunFolder(workspace, run_id).has_predictions
