"""Jobs whose run_id is a task, not a run: the `decode` and `weights` kinds through the real queue (real job
processes, no TensorFlow), attaching to a running task, and the claim that lets them pass a train job waiting
for the only slot."""

from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image

from engine import jobs, store, zoo
from engine.cli import main
from engine.config import RunConfig
from engine.data.decode_job import DecodeRequest, cached_images, submit_decode
from engine.runfolder import RunFolder
from engine.store.workspace import DECODE_JOB, SLOTLESS_JOBS, WEIGHTS_JOB
from engine.weights_job import submit_weights
from tests.helpers.weights_server import weights_server

ENDED = (store.COMPLETED, store.FAILED, store.CANCELLED)


def wait_for(workspace, job_id, predicate=lambda job: job.status in ENDED, timeout=60.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        jobs.refresh(workspace)
        job = workspace.get_job(job_id)
        if predicate(job):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} is still {workspace.get_job(job_id).status} ({workspace.get_job(job_id)})")


def write_jpegs(root, per_class=100, classes=("a", "b", "c"), size=24):
    rng = np.random.default_rng(0)
    for index, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 80, (size, size, 3), dtype=np.uint8)
            pixels[..., index] += 150
            Image.fromarray(pixels).save(root / name / f"{i}.jpg", quality=85)
    return root


def write_slow_pngs(root, per_class=300):
    """Big smooth PNGs (about 13 ms each to decode here, no JPEG draft shortcut): a decode of seconds."""
    y, x = np.mgrid[0:1500, 0:1500]
    image = root / "one.png"
    root.mkdir(parents=True)
    Image.fromarray(np.stack([(x // 6) % 256, (y // 6) % 256, ((x + y) // 12) % 256], -1).astype(np.uint8)).save(image)
    data = image.read_bytes()
    image.unlink()
    for name in ("a", "b"):
        (root / name).mkdir()
        for i in range(per_class):
            (root / name / f"{i}.png").write_bytes(data)
    return root


@pytest.fixture
def one_slot(monkeypatch):
    monkeypatch.setenv(jobs.MAX_JOBS_ENV, "1")


# -- the claim ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [DECODE_JOB, WEIGHTS_JOB])
def test_a_slotless_job_is_claimed_past_a_train_job_waiting_for_the_only_slot(store_workspace, kind):
    workspace = store_workspace
    training = workspace.create_run(RunConfig()).job
    waiting = workspace.create_run(RunConfig()).job
    assert workspace.claim_next_job(1).id == training.id
    assert kind in SLOTLESS_JOBS
    task_job = workspace.create_task_job(f"{kind}-x", kind, request_json="{}").id  # as `submit_task` queues it
    claimed = workspace.claim_next_job(1)
    assert claimed is not None and claimed.id == task_job, "queued after the waiting train job, claimed before it"
    assert workspace.claim_next_job(1) is None, "the train job still waits for the slot"
    assert workspace.get_job(waiting.id).status == store.QUEUED
    workspace.finish_job(training.id, store.COMPLETED)
    assert workspace.claim_next_job(1).id == waiting.id


# -- decode -------------------------------------------------------------------------------------------


def test_a_decode_job_fills_the_cache_and_a_second_submit_attaches(workspace, tmp_path, one_slot):
    folder = write_jpegs(tmp_path / "photos")
    request = DecodeRequest.of(str(folder), 16)
    assert cached_images(workspace, request) is None
    job = submit_decode(workspace, request)
    assert job.run_id == request.task_id and job.run_id.startswith("decode-") and len(job.run_id) == 19
    again = submit_decode(workspace, DecodeRequest.of(str(folder), 16))
    assert again.id == job.id, "the same decode attaches to the job already queued or running"
    job = wait_for(workspace, job.id)
    assert job.status == store.COMPLETED, job.traceback
    assert job.progress == 1.0 and job.message == "300 images decoded at 16×16"
    images = cached_images(workspace, request)
    assert images is not None and len(images) == 300 and images.class_names == ["a", "b", "c"]
    assert isinstance(images.images, np.memmap), "from the memmapped cache"
    assert RunFolder(workspace, job.run_id).log_file.exists()
    # A job whose run_id is not a run: the runs list, the reaper and `runs` ignore it.
    assert workspace.list_runs() == []
    jobs.refresh(workspace)
    assert main(["runs", "--json"]) == 0
    other = submit_decode(workspace, DecodeRequest.of(str(folder), 8))
    assert other.id != job.id and other.run_id != job.run_id, "another size is another task"
    assert wait_for(workspace, other.id).status == store.COMPLETED


def test_a_decode_job_is_claimed_while_a_train_job_holds_the_only_slot(workspace, tmp_path, one_slot):
    folder = write_jpegs(tmp_path / "photos", per_class=10)
    training = workspace.create_run(RunConfig()).job
    assert workspace.claim_next_job(1).id == training.id  # holds the slot (no process: refresh leaves it alone
    workspace.set_job_process(training.id, 1)  # while pid 1 is alive and its heartbeat fresh)
    queued = workspace.create_run(RunConfig()).job
    job = wait_for(workspace, submit_decode(workspace, DecodeRequest.of(str(folder), 16)).id)
    assert job.status == store.COMPLETED, job.traceback
    assert workspace.get_job(queued.id).status == store.QUEUED
    workspace.finish_job(training.id, store.CANCELLED)
    jobs.cancel_job(queued.id, workspace)


def test_a_cancelled_decode_stops_midway_and_leaves_no_partial_cache(workspace, tmp_path):
    folder = write_slow_pngs(tmp_path / "big")
    request = DecodeRequest.of(str(folder), 32)
    job = submit_decode(workspace, request)
    job = wait_for(workspace, job.id, lambda j: j.progress > 0 and "images/s" in j.message or j.status in ENDED)
    assert job.status == store.RUNNING, f"the decode ended before it could be cancelled: {job}"
    jobs.cancel_job(job.id, workspace)
    job = wait_for(workspace, job.id)
    assert job.status == store.CANCELLED and job.progress < 1.0
    decoded = workspace.cache_dir / "decoded"
    assert sorted(p.name for p in decoded.iterdir()) == [], "neither a published nor a temporary file is left"
    assert cached_images(workspace, request) is None


def test_the_cli_decodes_and_waits(workspace, tmp_path, capsys):
    folder = write_jpegs(tmp_path / "photos", per_class=20)
    assert main(["data", "decode", str(folder), "--image-size", "12", "--wait", "--json"]) == 0
    outcome = __import__("json").loads(capsys.readouterr().out)
    assert outcome["status"] == "completed" and outcome["images"] == 60 and outcome["task_id"].startswith("decode-")
    assert main(["data", "decode", "digits", "--image-size", "12"]) == 2
    assert "built-in dataset" in capsys.readouterr().err
    assert main(["data", "decode", str(tmp_path / "none"), "--image-size", "12"]) == 2
    assert "no such file or folder" in capsys.readouterr().err


# -- weights ------------------------------------------------------------------------------------------


@pytest.fixture
def server(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))  # the job processes inherit both
    with weights_server() as httpd:
        monkeypatch.setenv(zoo.WEIGHTS_URL_ENV, f"{httpd.url}/apps/")
        yield httpd


def test_a_weights_job_downloads_with_progress_and_a_cancel_is_resumed(workspace, server, one_slot):
    server.payload = np.random.default_rng(0).bytes(4 * 1024**2 + 11)  # mobilenet_v2 has no published hash
    server.delay = 0.05  # 64 pieces: about 3 s
    job = submit_weights(workspace, "mobilenet_v2")
    assert job.run_id == "weights-mobilenet_v2" and submit_weights(workspace, "mobilenet_v2").id == job.id
    job = wait_for(workspace, job.id, lambda j: " MB at " in j.message or j.status in ENDED)
    assert job.status == store.RUNNING and "of 4.2 MB" in job.message
    jobs.cancel_job(job.id, workspace)
    assert wait_for(workspace, job.id).status == store.CANCELLED
    import engine.weights as weights

    kept = weights.partial_path("mobilenet_v2").stat().st_size
    assert 0 < kept < len(server.payload) and not zoo.status("mobilenet_v2").present
    server.delay = 0.0
    job = wait_for(workspace, submit_weights(workspace, "mobilenet_v2").id)
    assert job.status == store.COMPLETED, job.traceback
    assert server.requests == [None, f"bytes={kept}-"], "the second job resumes the partial file"
    found = zoo.status("mobilenet_v2")
    assert found.present and found.path.read_bytes() == server.payload
    assert job.progress == 1.0 and job.message.startswith("checked and saved as ")
    with pytest.raises(ValueError, match="base"):
        submit_weights(workspace, "no_such_base")
