"""Faults: store contention (SQLite and PostgreSQL), a full disk while checkpointing, run folders deleted by hand.

kill -9 of a job: tests/engine/jobs/test_job_processes.py::test_a_job_killed_by_a_signal_is_failed_with_that_signal_named, and its Resume:
tests/faults/test_fault_resume.py. Server restart mid-run: the restart test in tests/e2e/test_browser.py.
"""

from __future__ import annotations

import errno
import json
import os
import threading
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from engine import jobs
from engine import store
from engine.config import RunConfig
from engine.runfolder import RunFolder

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "dashboard" / "app.py")
# The figures: 4 jobs and 20 polling readers for a minute, shared by the two stores (30 s each, counted
# from the moment every job has written its first epoch).
CONTENTION_SECONDS = 30.0
JOBS, READERS = 4, 20
# A page polls every 2 s; these poll 100 times as often, but not flat out: 20 threads spinning on the GIL
# would take a core from the four jobs (which run at a lower priority) and so lower the write rate under test.
POLL_PAUSE_SECONDS = 0.02
# A job whose epoch is one step on a few tiny images, so that it writes an epoch row (and checkpoints) as often
# as it can; it never finishes on its own and is cancelled when the minute is up.
TINY_JOB = {"data": {"image_size": 16, "max_per_class": 6},
            "augment": {"rotation": 0, "shift": 0, "zoom": 0, "flip": False},
            "train": {"epochs": 10_000, "batch_size": 64, "early_stopping": 0}}


@pytest.mark.slow
def test_four_jobs_and_twenty_pollers_never_see_database_is_locked(store_workspace, monkeypatch):
    """Real training jobs write epochs, progress and heartbeats while 20 threads poll as an open Runs page does.

    The pollers also call `jobs.refresh` (reap and dispatch: a write transaction each), as the live views do.
    Afterwards every job's epochs are all in the store (1..k, k being the epoch its last checkpoint holds),
    every poll succeeded and saw consistent data, and no process met "database is locked" (on SQLite) or any
    other store error (on PostgreSQL, where the jobs and this process each reach the server through a pool).
    """
    workspace = store_workspace
    monkeypatch.setenv(jobs.MAX_JOBS_ENV, str(JOBS))
    errors, reads = [], [0] * READERS
    stop = threading.Event()

    def poll(index: int) -> None:  # what an open Runs page does, many times as often
        while not stop.is_set():
            try:
                jobs.refresh(workspace)
                for run in workspace.list_runs():
                    epochs = [m.epoch for m in workspace.epochs(run.id)]
                    if epochs != list(range(1, len(epochs) + 1)) or len(epochs) < run.epochs_done:
                        errors.append(f"inconsistent read of {run.id}: epochs_done {run.epochs_done}, {epochs}")
                workspace.jobs(statuses=store.ACTIVE)
                reads[index] += 1
            except Exception as error:  # noqa: BLE001 - collected and asserted below
                errors.append(repr(error))
            stop.wait(POLL_PAUSE_SECONDS)

    threads = [threading.Thread(target=poll, args=(i,)) for i in range(READERS)]
    for thread in threads:
        thread.start()
    started = time.monotonic()
    try:
        runs = [jobs.submit(RunConfig.from_dict({**TINY_JOB, "name": f"job {i}"}), workspace) for i in range(JOBS)]
        assert all(workspace.get_run(r.id).status == store.RUNNING for r in runs), "all four jobs run at once"
        # The clock starts when every job writes (importing TensorFlow in four processes takes a while here).
        deadline = time.monotonic() + 180
        while any(workspace.get_run(r.id).epochs_done < 1 for r in runs) and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(CONTENTION_SECONDS)
        for run in runs:
            jobs.cancel(run.id, workspace)
        deadline = time.monotonic() + 30
        while any(workspace.get_run(r.id).status in store.ACTIVE for r in runs) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    seconds = time.monotonic() - started

    assert errors == [], errors[:5]
    assert min(reads) > 0, reads
    written = []
    for run in (workspace.get_run(r.id) for r in runs):
        log_text = RunFolder(workspace, run.id).log_file.read_text(errors="replace")  # all of it
        assert run.status == store.CANCELLED and run.job.error == "cancelled by the user", (run.job.error, log_text[-2000:])
        assert "locked" not in log_text and "heartbeat failed" not in log_text, log_text[-2000:]
        checkpointed = json.loads(RunFolder(workspace, run.id).last_checkpoint_info.read_text())["epoch"]
        assert [m.epoch for m in workspace.epochs(run.id)] == list(range(1, checkpointed + 1)), "an epoch was lost"
        assert run.epochs_done == checkpointed >= 2  # many more on an idle machine
        written.append(checkpointed)
    print(f"\n{workspace.database.dialect}: {JOBS} jobs wrote {written} epochs ({sum(written)}) while {READERS} "
          f"pollers did {sum(reads)} polls (each: refresh, runs, every run's epochs, active jobs; min {min(reads)}) in {seconds:.0f} s; no errors")


@pytest.mark.slow
def test_disk_full_while_checkpointing_keeps_the_previous_checkpoints(workspace, monkeypatch):
    import keras

    monkeypatch.setattr(jobs.worker, "_lower_priority", lambda: None)
    config = RunConfig.from_dict({"data": {"image_size": 8, "max_per_class": 10},
                                  "train": {"epochs": 4, "batch_size": 16, "early_stopping": 0}})
    run = workspace.create_run(config)
    saved = {}
    real_save = keras.Model.save
    folder = RunFolder(workspace, run.id)

    def save(model, path, *args, **kwargs):
        if workspace.epochs(run.id):  # from epoch 2 on, the disk is full
            for checkpoint in (folder.model_file, folder.last_checkpoint, folder.last_checkpoint_info):
                saved.setdefault(checkpoint, checkpoint.read_bytes())
            Path(path).write_bytes(b"half a file")
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_save(model, path, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "save", save)
    jobs.run_job(workspace.claim_next_job(limit=10).id, workspace)
    run = workspace.get_run(run.id)
    assert run.status == store.FAILED and "No space left on device" in run.job.error
    assert run.epochs_done == 1
    for path, content in saved.items():
        assert path.read_bytes() == content, f"{path.name} was damaged"
    assert not list(RunFolder(workspace, run.id).path.glob("*.tmp.keras")), "a half-written temp file was left behind"
    monkeypatch.setattr(keras.Model, "save", real_save)
    keras.models.load_model(RunFolder(workspace, run.id).last_checkpoint)  # still loads
    assert jobs.can_resume(run, workspace)


def _finished(workspace, name: str) -> str:
    run = workspace.create_run(RunConfig.from_dict({"name": name, "train": {"epochs": 2}}))
    job = workspace.claim_next_job(limit=10)
    workspace.add_epoch(run.id, store.EpochMetrics(1, loss=1.0, val_loss=1.0, val_accuracy=0.5))
    workspace.finish_job(job.id, store.COMPLETED)
    return run.id


@pytest.mark.parametrize("damage", ["folder", "config"])
def test_a_run_whose_files_were_deleted_is_shown_as_damaged(workspace, damage):
    import shutil

    keep, broken = _finished(workspace, "whole"), _finished(workspace, "broken")
    if damage == "folder":
        shutil.rmtree(RunFolder(workspace, broken).path)
    else:
        RunFolder(workspace, broken).config_file.unlink()
    assert RunFolder(workspace, keep).damage() is None and "missing" in RunFolder(workspace, broken).damage()
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["run"] = broken
    at.run()
    at.switch_page("views/runs.py").run()
    assert not at.exception, [e.value for e in at.exception]
    table = next(f.value for f in at.dataframe if "Run" in f.value.columns)
    assert dict(zip(table["Run"], table["Status"])) == {"whole": "Completed", "broken": "Damaged"}
    assert any("This run is damaged" in w.value for w in at.warning)
    at.button(key="runs.delete").click().run()
    at.button(key="runs.delete.confirm").click().run()
    assert not at.exception and [r.id for r in workspace.list_runs()] == [keep]


def test_runs_page_offers_resume_only_for_a_stopped_run_with_a_last_checkpoint(workspace, monkeypatch):
    monkeypatch.setenv(jobs.MAX_JOBS_ENV, "1")
    whole = _finished(workspace, "done")
    failed = workspace.create_run(RunConfig.from_dict({"name": "killed", "train": {"epochs": 3}}))
    job = workspace.claim_next_job(limit=10)
    workspace.add_epoch(failed.id, store.EpochMetrics(1, loss=1.0))
    workspace.finish_job(job.id, store.FAILED, error="the job process died without reporting (killed, or out of memory)")
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["run"] = failed.id
    at.run()
    at.switch_page("views/runs.py").run()
    assert not any(b.key == "runs.resume" for b in at.button), "no last.keras yet: nothing to resume"
    RunFolder(workspace, failed.id).last_checkpoint.write_bytes(b"stands in for a checkpoint")
    store.write_json_atomic(RunFolder(workspace, failed.id).last_checkpoint_info, {"epoch": 1})
    # Occupy the one job slot, so the resumed job stays queued instead of starting TensorFlow here.
    workspace.create_run(RunConfig(name="blocker"))
    blocker_job = workspace.claim_next_job(limit=10)
    workspace.set_job_process(blocker_job.id, os.getpid())
    at.run()
    at.button(key="runs.resume").click().run()
    assert not at.exception
    run = workspace.get_run(failed.id)
    assert run.status == store.QUEUED and run.job.id != job.id
    assert workspace.get_run(whole).status == store.COMPLETED
    jobs.cancel(failed.id, workspace)
    workspace.finish_job(blocker_job.id, store.CANCELLED)
