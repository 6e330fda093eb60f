"""Jobs on a real local Ray cluster (a head and two one-CPU worker nodes, shared by the module).

The lifecycle tests use the `sleep` kind (no TensorFlow); one real train run lives through a
killed node, a resume, a cancel and a second resume, and the CLI and the Runs page then show it.
"""

from __future__ import annotations

import json
import time

import pytest

from engine import jobs, store
from engine.cli import main
from engine.config import RunConfig
from engine.jobs import kinds
from engine.jobs.backends import ray as ray_backend
from engine.runfolder import RunFolder
from engine.store import Workspace
from tests.helpers.ray_cluster import add_worker_node, dashboard_address, start_cluster, stop_cluster
from tests.helpers.sleep_kind import REGISTRATION, SleepRequest

pytestmark = pytest.mark.slow

# About 0.3 s an epoch here: long enough to kill a node and cancel mid-run, short enough to finish after.
TRAIN = {"name": "on ray", "data": {"image_size": 16, "max_per_class": 40},
         "augment": {"rotation": 0, "shift": 0, "zoom": 0},
         "train": {"epochs": 24, "batch_size": 8, "early_stopping": 0}}


class Busy(ValueError):
    pass


@pytest.fixture(scope="module")
def cluster():
    cluster = start_cluster(nodes=2)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("APERTURE_BACKEND", "ray")
        env.setenv(ray_backend.ADDRESS_ENV, dashboard_address(cluster))
        env.setenv(kinds.EXTRA_KINDS_ENV, REGISTRATION)
        env.setenv("APERTURE_STANDBY", "0")
        yield cluster
    stop_cluster(cluster)


@pytest.fixture
def run_id(cluster, workspace):
    """A run whose train job is done, for `sleep` jobs."""
    run = workspace.create_run(RunConfig())
    workspace.finish_job(run.job.id, store.COMPLETED)
    return run.id


def wait_until(predicate, *, timeout=90.0, what="condition", workspace=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if workspace is not None:
            jobs.refresh(workspace)
        if value := predicate():
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def finished(workspace, job_id, timeout=60.0):
    return wait_until(lambda: (j := workspace.get_job(job_id)).status not in store.ACTIVE and j,
                      timeout=timeout, what=f"job {job_id} to end", workspace=workspace)


def ray_job(job):
    return ray_backend.RAY._client().get_job_info(ray_backend.submission_id(job))


# -- lifecycle with a no-op kind ---------------------------------------------------------------------


def test_a_job_runs_on_a_worker_node_and_ray_lists_it(workspace, run_id, cluster):
    job = jobs.submit_job(workspace, run_id, "sleep", SleepRequest(seconds=0.3), busy_error=Busy)
    assert job.status == store.RUNNING, job.error  # handed to Ray at once
    job = finished(workspace, job.id)
    assert job.status == store.COMPLETED, job.traceback
    assert job.progress == 1.0 and job.pid is not None
    assert job.host.endswith(f" (ray:{ray_backend.submission_id(job)})"), job.host  # where it ran, for show
    assert wait_until(lambda: ray_job(job).status == "SUCCEEDED", what="the process to exit")
    listed = {j.submission_id: j for j in ray_backend.RAY._client().list_jobs()}
    info = listed[ray_backend.submission_id(job)]  # Ray's own job list shows it
    assert info.metadata["aperture_run"] == run_id and info.entrypoint.endswith(f"-m engine job {job.id}")
    assert info.driver_node_id != cluster.head_node.node_id, "jobs run on worker nodes, not on the head"
    assert f"job {job.id} (sleep) for run {run_id} started" in ray_backend.RAY.logs(workspace, job, 50)


def test_a_failing_job_is_failed_with_its_error(workspace, run_id):
    job = jobs.submit_job(workspace, run_id, "sleep", SleepRequest(seconds=0.2, outcome="fail"), busy_error=Busy)
    job = finished(workspace, job.id)
    assert job.status == store.FAILED and job.error == "RuntimeError: asked to fail"


def test_a_crash_is_named_from_rays_exit_status(workspace, run_id):
    job = jobs.submit_job(workspace, run_id, "sleep", SleepRequest(seconds=0.2, outcome="abort"), busy_error=Busy)
    job = finished(workspace, job.id)
    assert job.status == store.FAILED
    assert job.error.startswith("the job process crashed (SIGABRT): free(): invalid pointer"), job.error
    assert ray_backend.submission_id(job) in job.error


def test_cancel_is_cooperative_on_ray(workspace, run_id):
    job = jobs.submit_job(workspace, run_id, "sleep", SleepRequest(seconds=60), busy_error=Busy)
    wait_until(lambda: workspace.get_job(job.id).progress > 0, what="the job to start", workspace=workspace)
    jobs.cancel_job(job.id, workspace)
    job = finished(workspace, job.id, timeout=20)
    assert job.status == store.CANCELLED and job.error == "cancelled by the user"
    assert wait_until(lambda: ray_job(job).status == "SUCCEEDED", what="Ray to see the process end")


def test_the_escalation_is_rays_stop_and_the_job_still_ends_cleanly(workspace, run_id):
    job = jobs.submit_job(workspace, run_id, "sleep", SleepRequest(seconds=60), busy_error=Busy)
    wait_until(lambda: workspace.get_job(job.id).progress > 0, what="the job to start", workspace=workspace)
    workspace.request_cancel(job.id)
    ray_backend.RAY.stop(workspace.get_job(job.id), force=False)  # what the queue does after CANCEL_GRACE_SECONDS
    job = finished(workspace, job.id, timeout=20)
    assert job.status == store.CANCELLED, job.error  # SIGTERM reached the process, which stopped at its next check
    assert wait_until(lambda: ray_job(job).status == "STOPPED", what="Ray to record the stop")


def test_ray_queues_what_the_nodes_cannot_hold(workspace, run_id, monkeypatch):
    others = [workspace.create_run(RunConfig()) for _ in range(2)]
    for other in others:
        workspace.finish_job(other.job.id, store.COMPLETED)
    submitted = [jobs.submit_job(workspace, r, "sleep", SleepRequest(seconds=3), busy_error=Busy)
                 for r in (run_id, *(o.id for o in others))]
    assert all(j.status == store.RUNNING for j in submitted), "no APERTURE_MAX_JOBS: every job goes to Ray"
    wait_until(lambda: sum(workspace.get_job(j.id).progress > 0 for j in submitted) == 2,
               what="two jobs running", workspace=workspace)
    waiting = [j for j in submitted if workspace.get_job(j.id).progress == 0]
    assert len(waiting) == 1 and ray_job(waiting[0]).status == "PENDING", "two one-CPU nodes hold two jobs"
    assert workspace.get_job(waiting[0].id).message.startswith("waiting for Ray to place it")
    for job in submitted:
        assert finished(workspace, job.id).status == store.COMPLETED
    monkeypatch.setenv(jobs.MAX_JOBS_ENV, "1")  # a limit that is set still holds on Ray
    first, second = [jobs.submit_job(workspace, r, "sleep", SleepRequest(seconds=0.5), busy_error=Busy)
                     for r in (run_id, others[0].id)]
    assert workspace.get_job(second.id).status == store.QUEUED
    first, second = finished(workspace, first.id), finished(workspace, second.id)
    assert first.status == second.status == store.COMPLETED, (first.error, second.error)


def test_doctor_sees_the_workspace_from_a_worker_node(workspace, cluster):
    from engine.doctor import check_cluster

    report = check_cluster(workspace)
    assert report["reachable"] and report["shared_workspace"] is True, report["detail"]
    assert report["detail"].startswith("a worker node (") and str(workspace.root) in report["detail"]
    assert sorted(n["cpus"] for n in report["nodes"]) == [0, 1, 1]  # the head runs no jobs
    assert not any((workspace.root / ".doctor").iterdir()), "the probe cleans up after itself"


# -- one real train run: a dead node, resume, cancel, resume; then the CLI and the Runs page -------------


@pytest.fixture(scope="module")
def saga(cluster, tmp_path_factory):
    """Trains on Ray; kills the node under it; resumes; cancels; resumes to the end. Returns what each step saw."""
    workspace = Workspace(tmp_path_factory.mktemp("ray-train") / "workspace")
    seen = {"workspace": workspace}
    with pytest.MonkeyPatch.context() as env:
        env.setenv(store.HOME_ENV, str(workspace.root))
        run = jobs.submit(RunConfig.from_dict(TRAIN), workspace)
        wait_until(lambda: workspace.get_run(run.id).epochs_done >= 1, what="the first epoch", workspace=workspace)
        job = workspace.get_run(run.id).job
        node = next(n for n in cluster.list_all_nodes() if n.node_id == ray_job(job).driver_node_id)
        cluster.remove_node(node, allow_graceful=False)
        seen["killed"] = jobs.wait(run.id, workspace, poll_seconds=0.3)
        add_worker_node(cluster)  # the cluster gets its second node back for what follows
        jobs.resume(run.id, workspace)
        seen["resumed_from"] = seen["killed"].epochs_done
        wait_until(lambda: workspace.get_run(run.id).epochs_done > seen["resumed_from"] + 1,
                   what="an epoch after the resume", workspace=workspace)
        jobs.cancel(run.id, workspace)
        started = time.time()
        seen["cancelled"] = jobs.wait(run.id, workspace, poll_seconds=0.3)
        seen["cancel_seconds"] = time.time() - started
        seen["checkpoint_after_cancel"] = RunFolder(workspace, run.id).last_checkpoint.exists()
        jobs.resume(run.id, workspace)
        seen["completed"] = jobs.wait(run.id, workspace, poll_seconds=0.5)
        yield seen


def test_a_killed_node_fails_the_run_with_the_reason(saga):
    killed = saga["killed"]
    assert killed.status == store.FAILED
    assert killed.job.error.startswith("the Ray node running the job died"), killed.job.error
    assert 1 <= killed.epochs_done < killed.epochs_total


def test_the_run_resumes_cancels_with_its_checkpoint_and_completes(saga):
    assert saga["cancelled"].status == store.CANCELLED and saga["checkpoint_after_cancel"]
    assert saga["cancel_seconds"] < 15, "a cooperative cancel stops within seconds on Ray too"
    done = saga["completed"]
    assert done.status == store.COMPLETED, done.job.traceback
    assert done.epochs_done == done.epochs_total == 24 and 0.0 <= done.test_accuracy <= 1.0
    assert [e.epoch for e in saga["workspace"].epochs(done.id)] == list(range(1, 25))


def test_runs_json_and_show_list_the_ray_run(saga, capsys):
    run = saga["completed"]
    assert main(["runs", "--json"]) == 0
    listed = {r["run_id"]: r for r in json.loads(capsys.readouterr().out)}
    assert listed[run.id]["status"] == "completed" and listed[run.id]["epochs"] == 24
    assert listed[run.id]["host"].endswith(f"(ray:{ray_backend.submission_id(run.job)})")
    assert main(["show", run.id, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["status"] == "completed" and len(shown["epochs_history"]) == 24


def test_the_runs_page_shows_a_ray_run_like_a_local_one(saga):
    from tests.dashboard.apptest import open_app, texts

    run = saga["completed"]
    at = open_app("runs", run=run.id)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Epoch"] == "24/24" and metrics["Device"].startswith("CPU")
    assert metrics["Test accuracy"] == f"{run.test_accuracy:.2%}"
    assert len(at.get("plotly_chart")) == 4
    assert f"ran on {run.job.host}" in texts(at.caption)
    assert f"test accuracy {run.test_accuracy:.4f} after 24 epochs" in texts(at.code)
    log_file = RunFolder(saga["workspace"], run.id).log_file
    assert not log_file.exists() or not log_file.read_text(), "the log tail shown is Ray's job log"
