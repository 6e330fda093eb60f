"""The Ray backend: each job is a Ray job running `python -m engine job ID` on whichever node Ray picks.

`APERTURE_BACKEND=ray` with `RAY_ADDRESS` (the head's dashboard, `http://HEAD:8265`, or its GCS
address `HEAD:6379`). Jobs go through Ray Jobs (`ray.job_submission.JobSubmissionClient`), so
`ray job list` and Ray's dashboard show them, as `aperture-<job id>`. The contract with the
queue is the local backend's: the job process writes its status, progress and heartbeat to
the store itself (APERTURE_HOME must be a folder every node mounts, and the store PostgreSQL
through APERTURE_DATABASE_URL); this module only submits, watches, stops and explains.

- Resources: one CPU per job (so jobs run on worker nodes, never on a head started with
  `--num-cpus=0`), and one GPU per train job when the cluster has GPUs; a sweep only waits on
  its trials and asks for nothing. Ray queues what does not fit: the queue hands Ray every
  queued job (no `APERTURE_MAX_JOBS` limit unless one is set), and a job Ray has not placed
  yet is `running` in the store with the message "waiting for Ray to place it".
- Cancel: cooperative first (the store's flag, as everywhere); the queue's escalation
  becomes Ray's `stop_job`, which sends SIGTERM and SIGKILL after `RAY_JOB_STOP_WAIT_TIME_S`,
  set for each job to `CANCEL_GRACE_SECONDS` (15 s; Ray's own default is 3 s).
- Death: Ray's status and message, e.g. "the Ray node running the job died".
- Logs: Ray's job log (the driver's stdout and stderr), else the run folder's log.
- No standby process: Ray starts a fresh process for every job.
"""

from __future__ import annotations

import functools
import logging
import os
import shlex
import socket
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

from engine import store
from engine.jobs.backends.local import read_log_tail
from engine.jobs.crash_report import describe_death
from engine.store import Job, Workspace

ADDRESS_ENV = "RAY_ADDRESS"
# Set for each job to the Ray Jobs URL it was submitted through, so a job that queues others (a sweep, or
# the next queued job on its way out) submits them the same way; Ray points RAY_ADDRESS at the GCS instead.
JOBS_ADDRESS_ENV = "APERTURE_RAY_JOBS_ADDRESS"
STOP_WAIT_ENV = "RAY_JOB_STOP_WAIT_TIME_S"
STOP_WAIT_SECONDS = 15  # Ray's SIGTERM-to-SIGKILL grace: at least the queue's CANCEL_GRACE_SECONDS (a test checks)
SUBMISSION_PREFIX = "aperture-"
REQUEST_TIMEOUT_SECONDS = 10.0  # any one call to Ray's dashboard; a dead head must not hang a page
SUBMIT_TIMEOUT_SECONDS = 60.0  # a submit or stop (POST): a busy head can take seconds, and a lost answer costs a job
CONNECT_TIMEOUT_SECONDS = 3.0
SUBMIT_ATTEMPTS = 4  # Ray's head answers "no available agent" (after ~10 s) until a node's job agent registers
CLIENT_SECONDS = 30.0
RETRY_SECONDS = 5.0  # after Ray could not be reached, how long it counts as unreachable without asking
STATUS_TTL_SECONDS = 0.5  # one refresh asks alive() and placing() of each job: one request serves both
UNSEEN_GRACE_SECONDS = 30.0  # a claimed job may be missing from Ray's list while its submission is on the way
GPU_CHECK_SECONDS = 60.0
# This process's settings that a job needs too (not TF_ alone: Terraform's variables share it; never
# CUDA_VISIBLE_DEVICES: Ray sets it for the GPUs it gives the job).
PASSED_ENV_PREFIXES = ("APERTURE_", "RAY_AUTH_", "TF_CPP_", "TF_ENABLE_", "TF_USE_", "TF_GPU_", "TF_FORCE_", "TF_XLA_",
                       "TF_DETERMINISTIC", "DNNL_", "KERAS_")
_PROJECT_ROOT = Path(__file__).resolve().parents[3]
_WAITING_MESSAGE = "waiting for Ray to place it"
_NO_LIMIT = 1_000_000
_AGENT_NOT_READY = "No available agent to submit job"
# How Ray's messages say that the node under a job went away (a supervisor actor's death names its node).
_NODE_DIED = ("node has died", "node was terminated", "node died", "nodediederror", "node is dead")

log = logging.getLogger(__name__)


class RayUnavailable(ConnectionError):
    """The Ray cluster named by RAY_ADDRESS cannot be reached (an OSError: the CLI and pages report it)."""


def submission_id(job: Job | str) -> str:
    """The Ray Jobs submission id of an Aperture job: `aperture-<job id>`."""
    return SUBMISSION_PREFIX + (job if isinstance(job, str) else job.id)


class RayBackend:
    """Ray jobs on the cluster at `RAY_ADDRESS` (see the module docstring)."""

    default_max_jobs = _NO_LIMIT  # Ray schedules: every queued job is handed over

    def __init__(self):
        self._lock = threading.Lock()
        self._dashboard_urls: dict[str | None, str] = {}  # RAY_ADDRESS -> the dashboard URL it resolved to
        self._statuses: dict[str, tuple[float, object]] = {}  # submission id -> (when, JobDetails or None)
        self._gpus: tuple[float, bool] | None = None
        self._clients: dict[str | None, tuple[float, object]] = {}  # RAY_ADDRESS -> (when made, client)
        self._down: dict[str | None, tuple[float, str]] = {}  # RAY_ADDRESS -> (retry after, why it failed)

    # -- the Backend interface ------------------------------------------------------

    def check(self) -> None:
        self._client(fresh=True)

    def start(self, workspace: Workspace, job: Job) -> None:
        client = self._client()
        num_cpus, num_gpus = self._resources(workspace, job)
        entrypoint = f"exec {shlex.quote(sys.executable)} -m engine job {shlex.quote(job.id)}"
        for attempt in range(1, SUBMIT_ATTEMPTS + 1):
            try:
                client.submit_job(entrypoint=entrypoint, submission_id=submission_id(job),
                                  runtime_env={"env_vars": job_environment(workspace, client.get_address())},
                                  metadata={"aperture_run": job.run_id, "aperture_kind": job.kind},
                                  entrypoint_num_cpus=num_cpus, entrypoint_num_gpus=num_gpus)
                break
            except Exception as error:  # noqa: BLE001 - requests' errors, or RuntimeError for a refusal
                if self._known_to_ray(client, job):
                    break  # the answer was lost, not the submission
                if _AGENT_NOT_READY in str(error) and attempt < SUBMIT_ATTEMPTS:
                    log.info("Ray has no job agent ready yet (a node just started?): submitting again")
                    continue
                kind = RayUnavailable if isinstance(error, OSError) else OSError
                raise kind(f"could not submit job {job.id} to Ray: {_first_line(error)}") from error
        workspace.heartbeat(job.id, message=f"{_WAITING_MESSAGE} (Ray job {submission_id(job)})")

    def alive(self, job: Job) -> bool:
        details = self._details(job)
        if details is _UNREACHABLE:
            return True  # out of sight: the heartbeat decides
        if details is None:  # not (yet) in Ray's list: its submission may be a moment away
            return job.started_at is not None and time.time() - job.started_at < UNSEEN_GRACE_SECONDS
        return not details.status.is_terminal()

    def placing(self, job: Job) -> bool:
        if job.pid is not None:
            return False  # its process runs and beats: the heartbeat decides
        # No process yet: Ray is placing it (PENDING), or starting it (RUNNING), or cannot say right now (a busy
        # head): none of which is a dead job. One that Ray ends or forgets is reaped through alive().
        details = self._details(job)
        return details is _UNREACHABLE or details is None or details.status in ("PENDING", "RUNNING")

    def stop(self, job: Job, *, force: bool) -> None:
        # Ray's stop is SIGTERM now and SIGKILL after RAY_JOB_STOP_WAIT_TIME_S: the same call serves both.
        try:
            self._client().stop_job(submission_id(job))
        except Exception as error:  # noqa: BLE001 - an unreachable or forgetful cluster: the queue decides
            log.warning("could not stop Ray job %s: %s", submission_id(job), _first_line(error))
        self._forget(job)

    def logs(self, workspace: Workspace, job: Job, lines: int) -> str:
        try:
            text = self._client().get_job_logs(submission_id(job))
        except Exception:  # noqa: BLE001 - the node holding the log may be gone: fall back to the run folder
            text = ""
        if text.strip():
            return "\n".join(text.splitlines()[-lines:])
        return read_log_tail(workspace, job.run_id, lines)

    def death(self, workspace: Workspace, job: Job) -> str:
        self._forget(job)
        details = self._details(job)
        if details is _UNREACHABLE:
            return f"the Ray cluster at {self._address_label()} could not be reached to ask about the job"
        if details is None:
            return (f"Ray has no record of the job (Ray job {submission_id(job)}): its submission failed, "
                    "or the cluster was restarted")
        return describe_ray_end(details, self.logs(workspace, job, 400))

    def keep_warm(self, workspace: Workspace) -> None:
        """Nothing: Ray starts a fresh process for every job."""

    def warm(self, workspace: Workspace) -> bool:
        return False

    # -- plumbing ---------------------------------------------------------------------

    def _client(self, *, fresh: bool = False):
        """A JobSubmissionClient for RAY_ADDRESS whose requests time out; raises RayUnavailable.

        A client is reused for `CLIENT_SECONDS` (making one checks Ray's version: two requests); `fresh`
        makes a new one, which proves that Ray answers now.

        After a failure, Ray counts as unreachable for `RETRY_SECONDS` without being asked again, so
        pages that refresh the queue with several running jobs never wait on a dead head more than once.
        """
        address = _jobs_address()
        with self._lock:
            url = self._dashboard_urls.get(address)
            down = self._down.get(address)
            made = self._clients.get(address)
        if made is not None and not fresh and time.monotonic() - made[0] < CLIENT_SECONDS:
            return made[1]
        if down is not None and time.monotonic() < down[0]:
            raise RayUnavailable(down[1])
        try:
            client = _make_client(url or _reachable(address))
        except RayUnavailable as error:
            self._mark_down(address, str(error))
            raise
        except ImportError as error:
            raise RayUnavailable(f"APERTURE_BACKEND=ray needs ray[default] installed: {error}") from error
        except Exception as error:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, RpcError...
            message = (f"the Ray cluster at {ADDRESS_ENV}={address} cannot be reached: {_first_line(error)}; "
                       f"start one with `ray start --head`, or fix {ADDRESS_ENV}")
            if "authentication" in str(error).lower():  # `ray start --head` turns token auth on (Ray 2.60)
                message += ("; the cluster uses Ray's token authentication: export RAY_AUTH_MODE=token here, with "
                            "the head's token in ~/.ray/auth_token or RAY_AUTH_TOKEN")
            self._mark_down(address, message)
            raise RayUnavailable(message) from error
        with self._lock:
            self._dashboard_urls[address] = client.get_address()
            self._clients[address] = (time.monotonic(), client)
            self._down.pop(address, None)
        return client

    def _mark_down(self, address: str | None, message: str) -> None:
        with self._lock:
            self._dashboard_urls.pop(address, None)  # resolved again next time: the head may have moved
            self._clients.pop(address, None)
            self._down[address] = (time.monotonic() + RETRY_SECONDS, message)

    def _details(self, job: Job):
        """Ray's JobDetails for the job, None if Ray does not know it, `_UNREACHABLE` if Ray cannot be asked."""
        key = submission_id(job)
        now = time.monotonic()
        with self._lock:
            cached = self._statuses.get(key)
        if cached is not None and now - cached[0] < STATUS_TTL_SECONDS:
            return cached[1]
        try:
            details = self._client().get_job_info(key)
        except RayUnavailable:
            details = _UNREACHABLE
        except RuntimeError as error:
            details = None if "does not exist" in str(error) else _UNREACHABLE
        except Exception as error:  # noqa: BLE001 - e.g. a timeout mid-request: ask afresh next time
            self._mark_down(_jobs_address(), f"Ray did not answer: {_first_line(error)}")
            details = _UNREACHABLE
        with self._lock:
            self._statuses[key] = (now, details)
            for old in [k for k, (when, _) in self._statuses.items() if now - when > 60]:
                del self._statuses[old]
        return details

    @staticmethod
    def _known_to_ray(client, job: Job) -> bool:
        try:
            client.get_job_info(submission_id(job))
            return True
        except Exception:  # noqa: BLE001 - not there, or Ray cannot say: the submission counts as failed
            return False

    def _forget(self, job: Job) -> None:
        with self._lock:
            self._statuses.pop(submission_id(job), None)

    def _resources(self, workspace: Workspace, job: Job) -> tuple[float, float]:
        """(CPUs, GPUs) the job's process asks Ray for."""
        if job.kind == "sweep":
            return 0, 0
        if job.kind != store.TRAIN_JOB:
            return 1, 0
        workers = getattr(workspace.get_run(job.run_id).config.train, "workers", 1) or 1
        if workers > 1:
            return 0, 0  # the job only drives its Ray Train workers, which ask for the resources themselves
        return 1, (1 if self._cluster_has_gpus() else 0)

    def nodes(self) -> list[dict]:
        """The cluster's alive nodes: `{"node_id", "address", "cpus", "gpus"}` each (Ray's state API)."""
        import requests

        reply = requests.get(self._client().get_address() + "/api/v0/nodes",
                             params={"limit": 1000, "detail": "true"}, timeout=REQUEST_TIMEOUT_SECONDS)
        reply.raise_for_status()
        return [{"node_id": n.get("node_id"), "address": n.get("node_ip"),
                 "cpus": n.get("resources_total", {}).get("CPU", 0), "gpus": n.get("resources_total", {}).get("GPU", 0)}
                for n in reply.json()["data"]["result"]["result"] if n.get("state") == "ALIVE"]

    def _cluster_has_gpus(self) -> bool:
        now = time.monotonic()
        if self._gpus is not None and now - self._gpus[0] < GPU_CHECK_SECONDS:
            return self._gpus[1]
        try:
            has = any(node["gpus"] > 0 for node in self.nodes())
        except Exception as error:  # noqa: BLE001 - requests' errors, or a reply of another shape
            log.warning("could not read the Ray cluster's GPUs (asking for none): %s", _first_line(error))
            has = False
        self._gpus = (now, has)
        return has

    @staticmethod
    def _address_label() -> str:
        return os.environ.get(ADDRESS_ENV) or f"(no {ADDRESS_ENV}: a cluster on this host)"


class _Unreachable:
    """The marker `_details` returns when Ray cannot be asked."""


_UNREACHABLE = _Unreachable()


@functools.cache
def _timed_client_class() -> type:
    from ray.job_submission import JobSubmissionClient

    class TimedJobClient(JobSubmissionClient):
        """Ray's client with a timeout on every request (Ray's own has none: an unreachable head hangs it)."""

        def _do_request(self, method, endpoint, **kwargs):
            kwargs.setdefault("timeout", SUBMIT_TIMEOUT_SECONDS if method == "POST" else REQUEST_TIMEOUT_SECONDS)
            return super()._do_request(method, endpoint, **kwargs)

    return TimedJobClient


def _make_client(address: str | None):
    """A Ray JobSubmissionClient for `address` (it checks the connection: raises if Ray is not there)."""
    return _timed_client_class()(address)


def _reachable(address: str | None) -> str | None:
    """`address`, after checking that something listens there (Ray's GCS client would retry for 40 s)."""
    if not address or address == "auto" or "://" in address and not address.startswith(("http://", "https://")):
        return address
    parsed = urlparse(address if "://" in address else f"tcp://{address}")
    port = parsed.port or (443 if parsed.scheme == "https" else 8265 if parsed.scheme == "http" else 6379)
    try:
        socket.create_connection((parsed.hostname, port), timeout=CONNECT_TIMEOUT_SECONDS).close()
    except OSError as error:
        raise RayUnavailable(f"the Ray cluster at {ADDRESS_ENV}={address} cannot be reached "
                             f"({parsed.hostname}:{port}: {error.strerror or error}); start one with "
                             f"`ray start --head`, or fix {ADDRESS_ENV}") from error
    return address


def _jobs_address() -> str | None:
    return os.environ.get(JOBS_ADDRESS_ENV) or os.environ.get(ADDRESS_ENV) or None


def process_host(job_id: str) -> str:
    """Where this job process runs, for the jobs table: the host name, and "(ray:SUBMISSION)" on Ray."""
    host = socket.gethostname()
    return f"{host} (ray:{submission_id(job_id)})" if os.environ.get(JOBS_ADDRESS_ENV) else host


def job_environment(workspace: Workspace, jobs_address: str) -> dict[str, str]:
    """The environment variables a job's process gets on its node (Ray sets RAY_ADDRESS itself).

    Args:
        workspace: the job's workspace (APERTURE_HOME, which every node mounts at the same path).
        jobs_address: the Ray Jobs URL the job was submitted through (`JOBS_ADDRESS_ENV`).
    """
    env = {name: value for name, value in os.environ.items() if name.startswith(PASSED_ENV_PREFIXES)}
    env.update({store.HOME_ENV: str(workspace.root), "APERTURE_BACKEND": "ray", JOBS_ADDRESS_ENV: jobs_address, "TF_CPP_MIN_LOG_LEVEL": "2",
                "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1", STOP_WAIT_ENV: str(STOP_WAIT_SECONDS),
                "PYTHONPATH": os.pathsep.join(dict.fromkeys(filter(None, [str(_PROJECT_ROOT),
                                                                           *os.environ.get("PYTHONPATH", "").split(os.pathsep)])))})
    return env


def describe_ray_end(details, log_tail: str) -> str:
    """Why a Ray job ended without its process reporting, from Ray's status and message.

    Args:
        details: Ray's `JobDetails` for the job.
        log_tail: the end of the job's log (for a crash's signal and native message).

    Returns:
        e.g. "the Ray node running the job died (Ray job aperture-X: ...)".
    """
    message = _first_line(details.message or "")
    where = f"Ray job {details.submission_id}"
    error_type = str(getattr(details, "error_type", "") or "")
    lines = [line.strip() for line in (details.message or "").splitlines()]
    node_lines = [line for line in lines if any(p in line.lower() for p in _NODE_DIED)]
    if node_lines:
        why = node_lines[-1]
        return f"the Ray node running the job died ({where}: {why})"
    if details.status == "STOPPED":
        return f"the job was stopped through Ray ({where})"
    if getattr(details, "driver_exit_code", None) is not None:
        return describe_death(details.driver_exit_code, log_tail) + f" ({where})"
    if error_type or message:
        return f"the Ray job failed ({where}: {message or error_type})"
    return describe_death(None, log_tail) + f" ({where})"


def _first_line(error: object) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


RAY = RayBackend()
