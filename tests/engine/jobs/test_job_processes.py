"""Job lifecycle with real job processes: each imports TensorFlow and trains for real."""

import os
import signal
import time

import pytest

from engine import jobs
from engine import store
from engine.config import RunConfig
from engine.runfolder import RunFolder

pytestmark = pytest.mark.slow

TINY = {"data": {"image_size": 16, "max_per_class": 40}, "train": {"epochs": 2, "batch_size": 32}}
LONG = {"data": {"image_size": 16, "max_per_class": 60}, "train": {"epochs": 500, "batch_size": 8}}


def wait_until(predicate, timeout=90.0, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def test_submit_runs_to_completion_and_writes_every_artifact(workspace):
    run = jobs.submit(RunConfig.from_dict(TINY), workspace)
    assert run.status in (store.QUEUED, store.RUNNING)
    run = jobs.wait(run.id, workspace, poll_seconds=0.5)
    assert run.status == store.COMPLETED, run.job.traceback
    assert run.epochs_done == 2 and len(workspace.epochs(run.id)) == 2
    assert 0.0 <= run.test_accuracy <= 1.0 and run.device.startswith("CPU") and run.params > 0
    assert run.fingerprint and "tensorflow" in run.versions
    folder = RunFolder(workspace, run.id)
    for path in (folder.model_file, folder.predictions_file, folder.data_report_file, folder.log_file):
        assert path.exists(), path.name
    assert any(RunFolder(workspace, run.id).tensorboard_dir.rglob("events.out.tfevents*"))
    epoch = workspace.epochs(run.id)[-1]
    assert epoch.images_per_second > 0 and epoch.learning_rate > 0 and epoch.val_accuracy is not None


def test_cancel_keeps_the_best_checkpoint(workspace):
    run = jobs.submit(RunConfig.from_dict(LONG), workspace)
    wait_until(lambda: workspace.get_run(run.id).epochs_done >= 1, what="the first epoch")
    assert RunFolder(workspace, run.id).model_file.exists()
    started = time.time()
    jobs.cancel(run.id, workspace)
    run = jobs.wait(run.id, workspace, poll_seconds=0.3)
    assert run.status == store.CANCELLED
    assert time.time() - started < 10, "a cooperative cancel should stop within seconds"
    assert RunFolder(workspace, run.id).model_file.stat().st_size > 0


@pytest.mark.parametrize("sig, reason", [(signal.SIGKILL, "the job process was killed (SIGKILL)"),
                                         (signal.SIGSEGV, "the job process crashed (SIGSEGV)")])
def test_a_job_killed_by_a_signal_is_failed_with_that_signal_named(workspace, sig, reason):
    run = jobs.submit(RunConfig.from_dict(LONG), workspace)
    wait_until(lambda: workspace.get_run(run.id).epochs_done >= 1, what="the first epoch")
    pid = workspace.get_run(run.id).job.pid
    os.kill(pid, sig)
    run = jobs.wait(run.id, workspace, poll_seconds=0.3)
    assert run.status == store.FAILED
    assert run.job.error == reason, "not a memory problem unless the kernel or the log says so"
    assert RunFolder(workspace, run.id).model_file.exists()
    if sig == signal.SIGSEGV:  # faulthandler wrote the Python stack where the crash hit
        assert "Fatal Python error: Segmentation fault" in jobs.read_log_tail(workspace, run.id, lines=200)


def test_queue_runs_one_at_a_time_in_order(workspace):
    first = jobs.submit(RunConfig.from_dict(TINY), workspace)
    second = jobs.submit(RunConfig.from_dict(TINY), workspace)
    assert workspace.get_run(second.id).status == store.QUEUED
    first = jobs.wait(first.id, workspace, poll_seconds=0.5)
    second = jobs.wait(second.id, workspace, poll_seconds=0.5)
    assert first.status == second.status == store.COMPLETED
    assert second.job.started_at >= first.job.finished_at - 0.5


def test_cancel_while_importing_tensorflow(workspace):
    run = jobs.submit(RunConfig.from_dict(LONG), workspace)
    jobs.cancel(run.id, workspace)
    run = jobs.wait(run.id, workspace, poll_seconds=0.3)
    assert run.status == store.CANCELLED and run.epochs_done == 0


def test_cancel_a_queued_job_never_starts_it(workspace):
    first = jobs.submit(RunConfig.from_dict(LONG), workspace)
    second = jobs.submit(RunConfig.from_dict(TINY), workspace)
    assert jobs.cancel(second.id, workspace).status == store.CANCELLED
    jobs.cancel(first.id, workspace)
    jobs.wait(first.id, workspace, poll_seconds=0.3)
    assert workspace.get_run(second.id).job.started_at is None


def test_a_failing_job_stores_its_reason_and_traceback(workspace, tmp_path):
    config = RunConfig.from_dict({"data": {"source": str(tmp_path / "missing")}, "train": {"epochs": 1}})
    run = jobs.wait(jobs.submit(config, workspace).id, workspace, poll_seconds=0.3)
    assert run.status == store.FAILED
    assert "missing" in run.job.error and "Traceback" in run.job.traceback


def test_delete_a_running_run_cancels_it_first(workspace):
    run = jobs.submit(RunConfig.from_dict(LONG), workspace)
    wait_until(lambda: workspace.get_run(run.id).status == store.RUNNING, what="running")
    jobs.delete(run.id, workspace)
    assert workspace.list_runs() == [] and not RunFolder(workspace, run.id).path.exists()
    assert not [j for j in workspace.jobs(statuses=(store.RUNNING,))]


def test_warm_standby_runs_the_next_job_in_its_own_process(workspace, monkeypatch):
    monkeypatch.setenv(jobs.STANDBY_ENV, "1")
    jobs.refresh(workspace, keep_warm=True)
    standby_file = workspace.root / jobs.STANDBY_FILE
    wait_until(lambda: standby_file.exists() and "ready" in standby_file.read_text(), what="a warm standby")
    standby = jobs.standby_pid(workspace)
    jobs.refresh(workspace, keep_warm=True)
    assert jobs.standby_pid(workspace) == standby, "one standby per workspace"
    run = jobs.submit(RunConfig.from_dict(TINY), workspace)
    run = jobs.wait(run.id, workspace, poll_seconds=0.3)
    assert run.status == store.COMPLETED and run.job.pid == standby
    assert "Epoch 1/2" in jobs.read_log_tail(workspace, run.id, lines=200)
    (workspace.root / jobs.STANDBY_FILE).unlink(missing_ok=True)  # any new standby exits on its own


def test_deterministic_runs_repeat_to_the_last_digit(workspace):
    config = RunConfig.from_dict({**TINY, "train": {**TINY["train"], "deterministic": True}})
    runs = [jobs.wait(jobs.submit(config, workspace).id, workspace, poll_seconds=0.3) for _ in range(2)]
    assert [r.status for r in runs] == [store.COMPLETED, store.COMPLETED]
    histories = [[(e.loss, e.val_loss, e.val_accuracy) for e in workspace.epochs(r.id)] for r in runs]
    assert histories[0] == histories[1]
    assert runs[0].test_accuracy == runs[1].test_accuracy
