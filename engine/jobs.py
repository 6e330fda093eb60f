"""Background jobs: submit, dispatch, watch, cancel and reap training processes.

Each job is a fresh OS process (`python -m engine job <job-id>`) in its own session, so
it outlives the dashboard or CLI that started it. The store is the only channel: the
job writes its progress and heartbeat there, and reads its cancel flag from there.
Nothing here imports TensorFlow.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

from engine import store as st
from engine.config import RunConfig
from engine.cpu import cpu_flags, log_onednn_setting, onednn_setting
from engine.crash_report import crash_excerpt, describe_death, oom_killed
from engine.store import Job, Run, Workspace

MAX_JOBS_ENV = "APERTURE_MAX_JOBS"
STANDBY_ENV = "APERTURE_STANDBY"  # "0" turns the pre-warmed standby worker off
STANDBY_FILE = "standby.pid"  # in the workspace root: the pid of the one idle standby
STANDBY_IDLE_SECONDS = 600.0  # an unused standby exits after this long
STANDBY_POLL_SECONDS = 0.25
HEARTBEAT_SECONDS = 2.0
# A running job whose heartbeat is older than this is presumed dead.
STALE_SECONDS = 30.0
# How long a cooperative cancel may take before SIGTERM, and then SIGKILL, follow.
CANCEL_GRACE_SECONDS = 15.0
LOG_TAIL_LINES = 30
JOB_NICENESS = 5

log = logging.getLogger(__name__)
_PROJECT_ROOT = Path(__file__).resolve().parent.parent
_children: list[subprocess.Popen] = []  # kept only to reap them; the store is the truth
_exit_codes: dict[int, int] = {}  # pid -> exit status of the job processes this process started and reaped


class JobCancelled(Exception):
    """Raised inside a job when the user asked it to stop."""


def max_jobs() -> int:
    return max(1, int(os.environ.get(MAX_JOBS_ENV, "1") or 1))


def submit(config: RunConfig, workspace: Workspace | None = None, *, parent_id: str | None = None) -> Run:
    """Records a new run with a queued train job and starts it if a slot is free.

    Args:
        config: the validated run configuration.
        workspace: default `Workspace()` (from `$APERTURE_HOME`).
        parent_id: the run this one was cloned from, if any.

    Returns:
        The run as recorded (status `queued` or `running`).
    """
    workspace = workspace or Workspace()
    run = workspace.create_run(config, parent_id=parent_id)
    refresh(workspace)
    return workspace.get_run(run.id)


def submit_job(workspace: Workspace, run_id: str, kind: str, request_file: str, request: dict, *,
               busy_error: type[Exception], doing: str) -> Job:
    """Queues another kind of job (e.g. `export`) for an existing run with its request, and starts it if a slot is free.

    Args:
        workspace: where the run lives.
        run_id: the run the job works on.
        kind: one of `JOB_KINDS` other than `train` (a train job comes with `submit`).
        request_file: the run-folder file the job reads its options from (`store.*_REQUEST_FILE`).
        request: those options, as JSON-able data.
        busy_error: raised, as `busy_error("run ID is already DOING (job ID)")`, when a job of this kind
            is already queued or running for the run.
        doing: what that job is doing, for the message ("being exported").

    Returns:
        The job as recorded (status `queued` or `running`).
    """
    if kind not in JOB_KINDS:
        raise ValueError(f"kind={kind!r}: expected one of {', '.join(JOB_KINDS)}")
    current = workspace.latest_job(run_id, kind)
    if current is not None and current.active:
        raise busy_error(f"run {run_id} is already {doing} (job {current.id})")
    path = workspace.run_file(run_id, request_file)
    path.parent.mkdir(exist_ok=True)
    st.write_json_atomic(path, request)
    job = workspace.create_job(run_id, kind)
    refresh(workspace)
    return workspace.get_job(job.id)


def can_resume(run: Run, workspace: Workspace) -> bool:
    """True if a failed or cancelled run has a last checkpoint to continue from."""
    return (run.status in (st.FAILED, st.CANCELLED) and run.epochs_done < run.epochs_total
            and workspace.run_file(run.id, st.LAST_CHECKPOINT_FILE).exists()
            and workspace.run_file(run.id, st.LAST_CHECKPOINT_INFO_FILE).exists())


def resume(run_id: str, workspace: Workspace) -> Job:
    """Queues a new train job for the same run that continues from its last checkpoint.

    The job loads `last.keras` (weights and optimizer state, so a schedule continues where
    it was) and trains epochs k+1..N; the run's metrics continue from epoch k+1. The rest of
    the state carries over too: each epoch's shuffle and augmentation depend on (seed, epoch)
    only, dropout's seed state is saved in `last.json`, and early stopping and the best
    checkpoint resume from the stored metrics; so with `train.deterministic` the resumed run
    ends exactly where the uninterrupted run would (tests/engine/test_training_resume.py).

    Raises:
        ValueError: the run is active or finished, or has no last checkpoint (the message says which).
    """
    run = workspace.get_run(run_id)
    if run.status not in (st.FAILED, st.CANCELLED):
        raise ValueError(f"run {run_id} is {run.status}: only a failed or cancelled run can be resumed")
    if not can_resume(run, workspace):
        raise ValueError(f"run {run_id} has no last checkpoint to resume from (it stopped before finishing "
                         "an epoch, or all its epochs are done); start it again with Clone")
    job = workspace.create_job(run_id, "train")
    refresh(workspace)
    return workspace.get_job(job.id)


def cancel_job(job_id: str, workspace: Workspace) -> Job:
    """Asks one job to stop (a queued one is cancelled at once); returns it as it stands."""
    job = workspace.get_job(job_id)
    if job.active:
        workspace.request_cancel(job.id)
        if job.status == st.QUEUED:
            workspace.finish_job(job.id, st.CANCELLED, error="cancelled before it started")
    return workspace.get_job(job_id)


def refresh(workspace: Workspace, *, keep_warm: bool = False) -> None:
    """Reaps dead jobs, escalates stuck cancels and starts queued jobs. Cheap; call often.

    Args:
        workspace: the workspace to look after.
        keep_warm: also keep one standby worker with TensorFlow imported, so the next
            submitted run starts training within a second or two (the dashboard asks for
            this while it is open; `APERTURE_STANDBY=0` turns it off).
    """
    for process in _children:
        if process.poll() is not None:
            _exit_codes[process.pid] = process.returncode
            while len(_exit_codes) > 256:  # those of jobs that ended well are never asked for
                del _exit_codes[next(iter(_exit_codes))]
    _children[:] = [p for p in _children if p.returncode is None]
    now = time.time()
    for job in workspace.jobs(statuses=(st.RUNNING,)):
        alive = _process_alive(job)
        if job.cancel_requested_at and alive:
            waited = now - job.cancel_requested_at
            if waited > 2 * CANCEL_GRACE_SECONDS:
                _signal_job(job, signal.SIGKILL)
                workspace.finish_job(job.id, st.CANCELLED, error="cancelled (killed after not stopping in time)")
            elif waited > CANCEL_GRACE_SECONDS:
                _signal_job(job, signal.SIGTERM)
            continue
        stale = job.heartbeat_at is not None and now - job.heartbeat_at > STALE_SECONDS
        if not alive or stale:
            if stale and alive:
                _signal_job(job, signal.SIGKILL)
            status = st.CANCELLED if job.cancel_requested_at else st.FAILED
            tail = read_log_tail(workspace, job.run_id, lines=400)  # faulthandler's stacks come after the crash
            if alive:
                reason = f"no heartbeat for {now - job.heartbeat_at:.0f} s"
            else:
                code = _exit_status(job.pid)
                reason = describe_death(code, tail, oom_killed=code == -signal.SIGKILL and oom_killed(job.pid))
                if "crashed" in reason and onednn_setting().source == "user" and "avx512f" in cpu_flags():
                    reason += f" (with {onednn_setting().describe().split(' (')[0]} on this AVX-512 CPU, a known "
                    reason += "oneDNN bug; see the README's CPUs section)"
            workspace.finish_job(job.id, status, error=reason, traceback=crash_excerpt(tail, LOG_TAIL_LINES))
    _dispatch(workspace, keep_warm)


def _exit_status(pid: int | None) -> int | None:
    """The exit status of a job process this process started (None for another's, or no pid)."""
    for process in _children:
        if process.pid == pid:
            try:  # it died since refresh polled: a zombie leader is reaped only once all its threads are gone
                _exit_codes[pid] = process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
    return _exit_codes.pop(pid, None)


def _dispatch(workspace: Workspace, keep_warm: bool) -> None:
    if standby_pid(workspace) is not None:
        return  # the warm standby claims the next queued job itself, within a fraction of a second
    while (job := workspace.claim_next_job(max_jobs())) is not None:
        try:
            log_path = workspace.run_file(job.run_id, st.LOG_FILE)
            with open(log_path, "ab") as log_file:
                process = _spawn(workspace, ["job", job.id], log_file)
            workspace.set_job_process(job.id, process.pid)
        except OSError as error:
            workspace.finish_job(job.id, st.FAILED, error=f"could not start the job process: {error}")
    if keep_warm and os.environ.get(STANDBY_ENV, "1") != "0" and not workspace.jobs(statuses=st.ACTIVE):
        _spawn(workspace, ["standby"], subprocess.DEVNULL)


def _spawn(workspace: Workspace, args: list[str], output) -> subprocess.Popen:
    """Starts `python -m engine ARGS` detached in its own session."""
    env = dict(os.environ, **{st.HOME_ENV: str(workspace.root), "TF_CPP_MIN_LOG_LEVEL": "2",
                              "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1"})
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_PROJECT_ROOT), env.get("PYTHONPATH")]))
    process = subprocess.Popen([sys.executable, "-m", "engine", *args], cwd=_PROJECT_ROOT, env=env,
                               stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                               start_new_session=True)
    _children.append(process)
    return process


def standby_pid(workspace: Workspace) -> int | None:
    """The pid of the idle standby worker, if one is alive."""
    try:
        pid = int((workspace.root / STANDBY_FILE).read_text().split()[0])
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            alive = b"standby" in f.read()
        return pid if alive and _process_alive_pid(pid) else None
    except (OSError, ValueError):
        return None


def cancel(run_id: str, workspace: Workspace) -> Job | None:
    """Asks a run's active job to stop; a queued job is cancelled at once.

    Returns:
        The job as it stands now, or None if the run had no active job.
    """
    job = workspace.get_run(run_id).job
    if job is None or not job.active:
        return None
    return cancel_job(job.id, workspace)


def delete(run_id: str, workspace: Workspace, *, timeout: float = 2 * CANCEL_GRACE_SECONDS) -> None:
    """Deletes a run, first stopping its job (killing it if it does not stop in `timeout`)."""
    job = cancel(run_id, workspace)
    if job is not None and job.status == st.RUNNING:
        deadline = time.time() + timeout
        while time.time() < deadline and workspace.get_job(job.id).status == st.RUNNING:
            time.sleep(0.2)
        if workspace.get_job(job.id).status == st.RUNNING:
            _signal_job(job, signal.SIGKILL)
            workspace.finish_job(job.id, st.CANCELLED, error="killed to delete the run")
    workspace.delete_run(run_id)
    refresh(workspace)


def wait(run_id: str, workspace: Workspace, *, poll_seconds: float = 1.0, on_poll=None) -> Run:
    """Blocks until the run's job ends, calling `on_poll(run)` after each poll."""
    while True:
        refresh(workspace)
        run = workspace.get_run(run_id)
        if on_poll:
            on_poll(run)
        if run.status not in st.ACTIVE:
            return run
        time.sleep(poll_seconds)


def read_log_tail(workspace: Workspace, run_id: str, lines: int = LOG_TAIL_LINES) -> str:
    path = workspace.run_file(run_id, st.LOG_FILE)
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - 64 * 1024))
            return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-lines:])
    except OSError:
        return ""


def _process_alive(job: Job) -> bool:
    if job.pid is None:
        return True  # claimed a moment ago; the process is starting
    if job.host and job.host != socket.gethostname():
        return True  # another host's job: only its heartbeat can tell
    return _process_alive_pid(job.pid)


def _process_alive_pid(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")  # a zombie is dead
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False


def _is_our_job_process(job: Job) -> bool:
    """Guards against signalling a recycled pid: the command line must name the job."""
    try:
        with open(f"/proc/{job.pid}/cmdline", "rb") as f:
            return job.id.encode() in f.read()
    except OSError:
        return False


def _signal_job(job: Job, sig: int) -> None:
    if job.pid is None or (job.host and job.host != socket.gethostname()) or not _is_our_job_process(job):
        return
    try:
        os.killpg(job.pid, sig)  # the job leads its own session, so this reaches its children too
    except ProcessLookupError:
        pass


# -- inside the job process ----------------------------------------------------------


class JobContext:
    """What a running job's code needs: where to write, and whether to stop.

    Args:
        workspace: the workspace the job belongs to.
        job: the job being run.
    """

    def __init__(self, workspace: Workspace, job: Job):
        self.workspace = workspace
        self.job = job
        self.run_id = job.run_id
        self.terminated = threading.Event()  # set by SIGTERM
        self._checked_at = 0.0
        self._cancelled = False

    def run_file(self, name: str) -> Path:
        return self.workspace.run_file(self.run_id, name)

    def should_stop(self, *, max_age: float = 0.5) -> bool:
        """True once a cancel was requested; reads the store at most every `max_age` seconds."""
        if self.terminated.is_set() or self._cancelled:
            return True
        now = time.monotonic()
        if now - self._checked_at >= max_age:
            self._checked_at = now
            self._cancelled = self.workspace.cancel_requested(self.job.id)
        return self._cancelled

    def raise_if_cancelled(self) -> None:
        if self.should_stop(max_age=0):
            raise JobCancelled()

    def report(self, progress: float | None = None, message: str | None = None) -> None:
        self.workspace.heartbeat(self.job.id, progress=progress, message=message)


def run_job(job_id: str, workspace: Workspace | None = None) -> int:
    """Runs one job to its end in this process; returns the process exit code."""
    workspace = workspace or Workspace()
    job = workspace.get_job(job_id)
    workspace.set_job_process(job_id, os.getpid())
    faulthandler.enable()  # a native crash leaves its signal and Python stack in the log, for the reaper
    _lower_priority()
    log.info("job %s for run %s started (process %d)", job_id, job.run_id, os.getpid())
    log_onednn_setting()
    context = JobContext(workspace, job)
    signal.signal(signal.SIGTERM, lambda *_: context.terminated.set())
    stop_beating = threading.Event()
    threading.Thread(target=_beat, args=(workspace, job_id, stop_beating), daemon=True).start()
    code = 0
    try:
        context.raise_if_cancelled()
        work = _job_function(job.kind)

        context.raise_if_cancelled()
        work(context)
        workspace.finish_job(job_id, st.COMPLETED)
    except JobCancelled:
        log.info("job %s cancelled", job_id)
        workspace.finish_job(job_id, st.CANCELLED, error="cancelled by the user")
    except Exception as error:  # noqa: BLE001 - any failure must end up in the store
        log.exception("job %s failed", job_id)
        code = 1
        workspace.finish_job(job_id, st.FAILED, error=_one_line(error), traceback=traceback.format_exc())
    finally:
        stop_beating.set()
        refresh(workspace)  # start the next queued job
    return code


def run_standby(workspace: Workspace | None = None) -> int:
    """Imports TensorFlow ahead of time, then runs the next queued job as soon as it appears.

    One standby per workspace (its pid in `standby.pid`). It runs exactly one job, so every
    job still gets a fresh process; it exits when idle too long or when its pid file goes.
    """
    workspace = workspace or Workspace()
    pid_file = workspace.root / STANDBY_FILE
    if standby_pid(workspace) is not None:
        return 0
    pid_file.write_text(str(os.getpid()))
    _lower_priority()
    _import_training()  # the slow import, done before any job is waiting

    if _owns(pid_file):
        pid_file.write_text(f"{os.getpid()} ready")

    idle_until = time.monotonic() + STANDBY_IDLE_SECONDS
    job = None
    while time.monotonic() < idle_until and _owns(pid_file):
        job = workspace.claim_next_job(max_jobs())
        if job is not None:
            break
        time.sleep(STANDBY_POLL_SECONDS)
    if _owns(pid_file):
        pid_file.unlink(missing_ok=True)
    if job is None:
        return 0
    workspace.set_job_process(job.id, os.getpid())
    log_file = os.open(workspace.run_file(job.run_id, st.LOG_FILE), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(log_file, 1)
    os.dup2(log_file, 2)
    return run_job(job.id, workspace)


def _run_train(context: JobContext) -> None:
    config = RunConfig.from_json(context.run_file(st.CONFIG_FILE).read_text())
    _import_training()(config, context)


def _run_export(context: JobContext) -> None:
    from engine.devices import quiet_cuda_probe

    with quiet_cuda_probe():
        from engine.export import run_export_job
    run_export_job(context)


def _run_evaluate(context: JobContext) -> None:
    from engine.devices import quiet_cuda_probe

    with quiet_cuda_probe():
        from engine.evaluation import run_evaluation_job
    run_evaluation_job(context)


def _run_explain(context: JobContext) -> None:
    from engine.devices import quiet_cuda_probe

    with quiet_cuda_probe():
        from engine.explain.batch import run_mistakes_job
    run_mistakes_job(context)


# What each job kind runs, given its context; the queue, heartbeat and cancel are shared.
JOB_KINDS = {"train": _run_train, "export": _run_export, "evaluate": _run_evaluate, "explain": _run_explain}


def _job_function(kind: str):
    try:
        return JOB_KINDS[kind]
    except KeyError:
        raise ValueError(f"job kind {kind!r} is not known (expected one of {', '.join(JOB_KINDS)})") from None


def _import_training():
    """Imports the training module (and with it TensorFlow, which takes seconds)."""
    from engine.devices import quiet_cuda_probe

    with quiet_cuda_probe():
        from engine.training import train
    return train


def _owns(pid_file: Path) -> bool:
    try:
        return pid_file.read_text().split()[0] == str(os.getpid())
    except OSError:
        return False


def _lower_priority() -> None:
    """Trains at a lower CPU priority, so the dashboard stays quick on a machine it shares."""
    try:
        if os.nice(0) < JOB_NICENESS:
            os.nice(JOB_NICENESS - os.nice(0))
    except OSError:
        pass


def _beat(workspace: Workspace, job_id: str, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_SECONDS):
        try:
            workspace.heartbeat(job_id)
        except Exception:  # noqa: BLE001 - a missed beat is not worth killing the job for
            log.warning("heartbeat failed", exc_info=True)


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
