"""The Ray backend without a cluster: an unreachable RAY_ADDRESS, the jobs' environment, the death reasons."""

from __future__ import annotations

import time

import pytest
from ray.job_submission import JobDetails, JobStatus, JobType

from engine import jobs
from engine.cli import main
from engine.config import RunConfig
from engine.jobs import queue
from engine.jobs.backends import get_backend
from engine.jobs.backends import ray as ray_backend


@pytest.fixture
def on_ray(monkeypatch):
    monkeypatch.setenv("APERTURE_BACKEND", "ray")
    monkeypatch.setenv(ray_backend.ADDRESS_ENV, "http://127.0.0.1:1")  # nothing listens on port 1


@pytest.mark.parametrize("address", ["http://127.0.0.1:1", "127.0.0.1:1"])
def test_an_unreachable_cluster_refuses_the_submit_at_once_and_records_nothing(workspace, on_ray, monkeypatch,
                                                                               address):
    monkeypatch.setenv(ray_backend.ADDRESS_ENV, address)
    started = time.monotonic()
    with pytest.raises(ray_backend.RayUnavailable, match=f"the Ray cluster at RAY_ADDRESS={address} cannot be "
                                                          "reached .*ray start --head"):
        jobs.submit(RunConfig(), workspace)
    assert time.monotonic() - started < 5, "no hang: Ray's own GCS client would retry for 40 s"
    assert workspace.list_runs() == []


def test_the_cli_says_why_it_cannot_submit(workspace, on_ray, capsys):
    assert main(["train", "--data", "digits", "--model", "lenet5"]) == 2
    assert "error: the Ray cluster at RAY_ADDRESS=http://127.0.0.1:1 cannot be reached" in capsys.readouterr().err
    assert workspace.list_runs() == []


def test_pages_keep_working_while_the_cluster_is_away(workspace, on_ray):
    run = workspace.create_run(RunConfig())
    job = workspace.claim_next_job(limit=1)
    queue.refresh(workspace)  # alive() cannot ask Ray: the job is left to its heartbeat
    assert workspace.get_job(job.id).status == "running"
    assert queue.read_log_tail(workspace, run.id) == ""  # no Ray log, no run folder log yet
    assert get_backend().placing(job), "no process yet and Ray cannot say: not reaped for an old heartbeat"
    workspace.set_job_process(job.id, 12345)
    assert not get_backend().placing(workspace.get_job(job.id)), "a started process is judged by its heartbeat"
    reason = get_backend().death(workspace, job)
    assert reason == "the Ray cluster at http://127.0.0.1:1 could not be reached to ask about the job"


def test_ray_schedules_unless_a_limit_is_set(on_ray, monkeypatch):
    monkeypatch.delenv(queue.MAX_JOBS_ENV, raising=False)
    assert queue.max_jobs() == ray_backend.RayBackend.default_max_jobs > 1000
    monkeypatch.setenv(queue.MAX_JOBS_ENV, "3")
    assert queue.max_jobs() == 3
    monkeypatch.setenv("APERTURE_BACKEND", "local")
    monkeypatch.delenv(queue.MAX_JOBS_ENV)
    assert queue.max_jobs() == 1


def test_an_unknown_backend_is_named(monkeypatch):
    monkeypatch.setenv("APERTURE_BACKEND", "slurm")
    with pytest.raises(ValueError, match="APERTURE_BACKEND='slurm': expected 'local' or 'ray'"):
        get_backend()


def test_a_job_gets_the_workspace_and_settings_but_not_this_hosts_ray_address(workspace, on_ray, monkeypatch):
    monkeypatch.setenv("APERTURE_DATABASE_URL", "postgresql://db/aperture")
    monkeypatch.setenv("DNNL_MAX_CPU_ISA", "AVX2")
    monkeypatch.setenv("TF_CLI_CONFIG_FILE", "/root/.terraformrc")  # Terraform's, not TensorFlow's
    monkeypatch.setenv("PYTHONPATH", str(ray_backend._PROJECT_ROOT))
    env = ray_backend.job_environment(workspace, "http://head:8265")
    assert env["APERTURE_HOME"] == str(workspace.root) and env["APERTURE_BACKEND"] == "ray"
    assert env["APERTURE_DATABASE_URL"] == "postgresql://db/aperture" and env["DNNL_MAX_CPU_ISA"] == "AVX2"
    assert int(env[ray_backend.STOP_WAIT_ENV]) >= queue.CANCEL_GRACE_SECONDS, "Ray's stop grace is at least ours"
    assert env["PYTHONPATH"] == str(ray_backend._PROJECT_ROOT) and "TF_CLI_CONFIG_FILE" not in env
    assert "RAY_ADDRESS" not in env, "Ray points each job's driver at its own cluster"
    assert env[ray_backend.JOBS_ADDRESS_ENV] == "http://head:8265", "a job queues others the way it came"


def details(status: str, message: str = "", exit_code: int | None = None, error_type: str | None = None):
    return JobDetails(type=JobType.SUBMISSION, submission_id="aperture-J", status=JobStatus(status),
                      entrypoint="python -m engine job J", message=message, error_type=error_type,
                      driver_exit_code=exit_code)


def test_death_reasons_name_what_ray_saw():
    node_died = ("Job supervisor actor died: The actor died unexpectedly before finishing this task.\n"
                 "\tclass_name: JobSupervisor\nThe actor died because its node has died. Node Id: 195a3c\n"
                 "\tthe actor's node was terminated unexpectedly: health check failed")
    reason = ray_backend.describe_ray_end(details("FAILED", node_died, error_type="JOB_SUPERVISOR_ACTOR_DIED"), "")
    assert reason == ("the Ray node running the job died (Ray job aperture-J: the actor's node was terminated "
                      "unexpectedly: health check failed)")
    assert ray_backend.describe_ray_end(details("STOPPED", "Job was intentionally stopped."), "") == \
        "the job was stopped through Ray (Ray job aperture-J)"
    crashed = ray_backend.describe_ray_end(details("FAILED", "Job entrypoint command failed with exit code -6",
                                                   exit_code=-6), "free(): invalid pointer\n")
    assert crashed == "the job process crashed (SIGABRT): free(): invalid pointer (Ray job aperture-J)"
    assert ray_backend.describe_ray_end(details("FAILED", "runtime_env setup failed: no pip"), "") == \
        "the Ray job failed (Ray job aperture-J: runtime_env setup failed: no pip)"


def test_doctor_reports_an_unreachable_cluster(workspace, on_ray):
    from engine.doctor import check_cluster

    report = check_cluster(workspace)
    assert report["reachable"] is False and report["shared_workspace"] is None
    assert "cannot be reached" in report["detail"]
    assert not (workspace.root / ".doctor").exists() or not any((workspace.root / ".doctor").iterdir())
