"""The queue with real job processes of a kind that needs no TensorFlow: order, cancel, heartbeat, reaping."""

import os
import signal
import time

import pytest

from engine import jobs
from engine import store
from engine.config import RunConfig
from engine.jobs import kinds
from engine.runfolder import RunFolder
from tests.helpers.sleep_kind import REGISTRATION, SleepRequest


class Busy(ValueError):
    pass


@pytest.fixture
def run_id(workspace, monkeypatch):
    """A run whose train job is already done, and the `sleep` kind registered for every job process."""
    monkeypatch.setenv(kinds.EXTRA_KINDS_ENV, REGISTRATION)
    run = workspace.create_run(RunConfig())
    workspace.finish_job(run.job.id, store.COMPLETED)
    return run.id


def wait_for(workspace, job_id, statuses=(store.COMPLETED, store.FAILED, store.CANCELLED), timeout=30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        jobs.refresh(workspace)
        job = workspace.get_job(job_id)
        if job.status in statuses:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} still {workspace.get_job(job_id).status} after {timeout} s")


def test_a_job_runs_its_stored_request_to_completion(workspace, run_id):
    job = jobs.submit_job(workspace, run_id, "sleep", SleepRequest(seconds=0.3), busy_error=Busy)
    assert job.request == {"seconds": 0.3, "outcome": "complete"}  # stored with the job, not in a file
    job = wait_for(workspace, job.id)
    assert job.status == store.COMPLETED, job.traceback
    assert job.progress == 1.0 and job.message == "slept 3 of 3" and job.heartbeat_at >= job.started_at


def test_one_active_job_of_a_kind_per_run(workspace, run_id):
    first = jobs.submit_job(workspace, run_id, "sleep", SleepRequest(seconds=5), busy_error=Busy)
    with pytest.raises(Busy, match=f"run {run_id} is already sleeping \\(job {first.id}\\)"):
        jobs.submit_job(workspace, run_id, "sleep", SleepRequest(), busy_error=Busy)
    jobs.cancel_job(first.id, workspace)
    assert wait_for(workspace, first.id).status == store.CANCELLED


def test_jobs_queue_in_order_one_at_a_time(workspace, run_id, monkeypatch):
    monkeypatch.setenv(jobs.queue.MAX_JOBS_ENV, "1")
    other = workspace.create_run(RunConfig())
    workspace.finish_job(other.job.id, store.COMPLETED)
    first = jobs.submit_job(workspace, run_id, "sleep", SleepRequest(seconds=1), busy_error=Busy)
    second = jobs.submit_job(workspace, other.id, "sleep", SleepRequest(seconds=0.2), busy_error=Busy)
    assert workspace.get_job(second.id).status == store.QUEUED
    first, second = wait_for(workspace, first.id), wait_for(workspace, second.id)
    assert first.status == second.status == store.COMPLETED
    assert second.started_at >= first.finished_at


def test_cancel_stops_a_running_job_cooperatively(workspace, run_id):
    job = jobs.submit_job(workspace, run_id, "sleep", SleepRequest(seconds=30), busy_error=Busy)
    wait_for(workspace, job.id, statuses=(store.RUNNING,))
    while workspace.get_job(job.id).progress == 0:
        time.sleep(0.05)
    asked = time.time()
    jobs.cancel_job(job.id, workspace)
    job = wait_for(workspace, job.id)
    assert job.status == store.CANCELLED and job.error == "cancelled by the user"
    assert time.time() - asked < 5


def test_a_failure_stores_its_reason_and_traceback(workspace, run_id):
    job = jobs.submit_job(workspace, run_id, "sleep", SleepRequest(seconds=0.1, outcome="fail"), busy_error=Busy)
    job = wait_for(workspace, job.id)
    assert job.status == store.FAILED and job.error == "RuntimeError: asked to fail"
    assert "run_sleep" in job.traceback


def test_a_native_crash_is_reaped_with_its_signal_and_message(workspace, run_id):
    job = jobs.submit_job(workspace, run_id, "sleep", SleepRequest(seconds=0.1, outcome="abort"), busy_error=Busy)
    job = wait_for(workspace, job.id)
    assert job.status == store.FAILED
    assert job.error.startswith("the job process crashed (SIGABRT): free(): invalid pointer")
    assert "Fatal Python error: Aborted" in job.traceback


def test_a_process_that_stops_beating_is_killed_and_failed(workspace, run_id, monkeypatch):
    job = jobs.submit_job(workspace, run_id, "sleep", SleepRequest(seconds=30), busy_error=Busy)
    job = wait_for(workspace, job.id, statuses=(store.RUNNING,))
    while workspace.get_job(job.id).pid is None:
        time.sleep(0.05)
    pid = workspace.get_job(job.id).pid
    os.kill(pid, signal.SIGSTOP)  # hung: alive, but neither beating nor reporting
    try:
        monkeypatch.setattr(jobs.queue, "STALE_SECONDS", 1.0)
        time.sleep(1.5)
        job = wait_for(workspace, job.id)
        assert job.status == store.FAILED and job.error.startswith("no heartbeat for")
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_an_unknown_kind_is_refused_by_name(workspace, run_id):
    with pytest.raises(ValueError, match="job kind 'nap' is not known .*sleep"):
        jobs.submit_job(workspace, run_id, "nap", SleepRequest(), busy_error=Busy)


def test_deleting_a_run_stops_its_jobs_of_every_kind(workspace, run_id):
    job = jobs.submit_job(workspace, run_id, "sleep", SleepRequest(seconds=30), busy_error=Busy)
    wait_for(workspace, job.id, statuses=(store.RUNNING,))
    while workspace.get_job(job.id).pid is None:
        time.sleep(0.05)
    pid = workspace.get_job(job.id).pid
    jobs.delete(run_id, workspace, timeout=10)
    deadline = time.time() + 10
    while jobs.backends.local.process_alive(pid) and time.time() < deadline:
        time.sleep(0.1)
    assert not jobs.backends.local.process_alive(pid), "the sleep job outlived its run"
    assert not RunFolder(workspace, run_id).path.exists()


def test_a_workspace_from_before_job_requests_fails_its_queued_jobs_with_a_reason(tmp_path):
    import sqlite3

    root = tmp_path / "old"
    workspace = store.Workspace(root)
    run = workspace.create_run(RunConfig())
    export = workspace.create_job(run.id, "export")
    db = sqlite3.connect(root / "aperture.db")
    db.execute("ALTER TABLE jobs DROP COLUMN request_json")  # as the index was before this column
    db.execute("DROP TABLE schema_version")  # and before the schema had versions
    db.commit()
    db.close()
    reopened = store.Workspace(root)
    assert reopened.get_job(export.id).status == store.FAILED
    assert reopened.get_job(export.id).error == "queued before an upgrade of Aperture: submit it again"
    assert reopened.get_run(run.id).status == store.QUEUED, "a train job reads the run's config: it still runs"
