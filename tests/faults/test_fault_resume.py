"""Resume: a run killed with SIGKILL mid-training continues from its last checkpoint as the same run.

The kill itself being detected is covered by tests/engine/jobs/test_job_processes.py::test_a_job_killed_by_a_signal_is_failed_with_that_signal_named;
a server restart mid-run by tests/e2e/test_browser.py (the restart test).
"""

import os
import signal
import time

import pytest

from engine import jobs
from engine import store
from engine.config import RunConfig
from engine.runfolder import RunFolder

pytestmark = pytest.mark.slow

RESUMABLE = {"data": {"image_size": 16, "max_per_class": 30},
             "train": {"epochs": 12, "batch_size": 8, "schedule": "cosine", "early_stopping": 0}}


def wait_until(predicate, timeout=90.0, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if value := predicate():
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def test_kill_nine_then_resume_continues_the_same_run_to_completion(workspace):
    run = jobs.submit(RunConfig.from_dict(RESUMABLE), workspace)
    wait_until(lambda: workspace.get_run(run.id).epochs_done >= 2, what="two epochs")
    os.kill(workspace.get_run(run.id).job.pid, signal.SIGKILL)
    killed = jobs.wait(run.id, workspace, poll_seconds=0.3)
    assert killed.status == store.FAILED and killed.job.error == "the job process was killed (SIGKILL)"
    assert killed.epochs_done < 12, "the run finished before it could be killed; make it longer"
    assert RunFolder(workspace, run.id).last_checkpoint.stat().st_size > 0
    before = {m.epoch: m for m in workspace.epochs(run.id)}
    assert jobs.can_resume(killed, workspace)

    job = jobs.resume(run.id, workspace)
    assert job.run_id == run.id and job.kind == "train" and job.id != killed.job.id
    done = jobs.wait(run.id, workspace, poll_seconds=0.3)
    assert done.status == store.COMPLETED, done.job.traceback
    assert done.epochs_done == done.epochs_total == 12
    history = workspace.epochs(run.id)
    assert [m.epoch for m in history] == list(range(1, 13))  # contiguous: 1..k, then k+1..12
    assert all(history[e - 1].loss == before[e].loss for e in before)  # the epochs before the kill are kept
    rates = [m.learning_rate for m in history]
    assert all(b < a for a, b in zip(rates, rates[1:])), f"the cosine schedule restarted: {rates}"
    assert len([j for j in workspace.jobs() if j.run_id == run.id and j.kind == "train"]) == 2
    assert "resuming from the last checkpoint" in jobs.read_log_tail(workspace, run.id, lines=400)
    assert done.test_accuracy is not None and RunFolder(workspace, run.id).predictions_file.exists()


def test_resume_is_refused_without_a_checkpoint_or_for_a_completed_run(workspace, tmp_path):
    config = RunConfig.from_dict({"data": {"source": str(tmp_path / "missing")}, "train": {"epochs": 1}})
    failed = jobs.wait(jobs.submit(config, workspace).id, workspace, poll_seconds=0.3)
    assert failed.status == store.FAILED and not jobs.can_resume(failed, workspace)
    with pytest.raises(ValueError, match="no last checkpoint"):
        jobs.resume(failed.id, workspace)
