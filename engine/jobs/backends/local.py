"""The local backend: each job is a detached `python -m engine job ID` process on this machine.

The process leads its own session, so it outlives the dashboard or CLI that started it, and a
signal to its process group reaches its children too. The process that started a job also
knows its exit status; any other process judges it by its pid, heartbeat and log.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

from engine import store
from engine.cpu import cpu_flags, onednn_setting
from engine.jobs.crash_report import describe_death, oom_killed
from engine.runfolder import RunFolder
from engine.store import Job, Workspace

STANDBY_ENV = "APERTURE_STANDBY"  # "0" turns the pre-warmed standby worker off
STANDBY_FILE = "standby.pid"  # in the workspace root: the pid of the one idle standby
_PROJECT_ROOT = Path(__file__).resolve().parents[3]


class LocalBackend:
    """Detached processes on this host (see the module docstring)."""

    default_max_jobs = 1  # one machine: jobs queue one after another unless APERTURE_MAX_JOBS says more

    def __init__(self):
        self._children: list[subprocess.Popen] = []  # kept only to reap them; the store is the truth
        self._exit_codes: dict[int, int] = {}  # pid -> exit status of the processes this one started
        self._lock = threading.Lock()  # pages and the CLI refresh from several threads

    def start(self, workspace: Workspace, job: Job) -> None:
        with open(RunFolder(workspace, job.run_id).log_file, "ab") as log_file:
            process = self._spawn(workspace, ["job", job.id], log_file)
        workspace.set_job_process(job.id, process.pid)

    def check(self) -> None:
        """Nothing to check: this host can always start a process."""

    def alive(self, job: Job) -> bool:
        self._reap()
        if job.pid is None:
            return True  # claimed a moment ago; the process is starting
        if job.host and job.host != socket.gethostname():
            return True  # another host's job: only its heartbeat can tell
        return process_alive(job.pid)

    def placing(self, job: Job) -> bool:
        return False

    def stop(self, job: Job, *, force: bool) -> None:
        if job.pid is None or (job.host and job.host != socket.gethostname()) or not _is_our_job_process(job):
            return
        try:
            os.killpg(job.pid, signal.SIGKILL if force else signal.SIGTERM)
        except ProcessLookupError:
            pass

    def logs(self, workspace: Workspace, job: Job, lines: int) -> str:
        return read_log_tail(workspace, job.run_id, lines)

    def death(self, workspace: Workspace, job: Job) -> str:
        tail = read_log_tail(workspace, job.run_id, 400)  # faulthandler's stacks come after the crash line
        code = self._exit_status(job.pid)
        reason = describe_death(code, tail, oom_killed=code == -signal.SIGKILL and oom_killed(job.pid))
        setting = onednn_setting()
        if "crashed" in reason and setting.source == "user" and "avx512f" in cpu_flags():
            reason += (f" (with {setting.variable}={setting.value} on this AVX-512 CPU, a known oneDNN bug; "
                       "see the README's CPUs section)")
        return reason

    def keep_warm(self, workspace: Workspace) -> None:
        if os.environ.get(STANDBY_ENV, "1") != "0" and standby_pid(workspace) is None:
            self._spawn(workspace, ["standby"], subprocess.DEVNULL)

    def warm(self, workspace: Workspace) -> bool:
        return standby_pid(workspace) is not None

    def _spawn(self, workspace: Workspace, args: list[str], output) -> subprocess.Popen:
        """Starts `python -m engine ARGS` detached in its own session."""
        env = dict(os.environ, **{store.HOME_ENV: str(workspace.root), "TF_CPP_MIN_LOG_LEVEL": "2",
                                  "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1"})
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_PROJECT_ROOT), env.get("PYTHONPATH")]))
        process = subprocess.Popen([sys.executable, "-m", "engine", *args], cwd=_PROJECT_ROOT, env=env,
                                   stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        with self._lock:
            self._children.append(process)
        return process

    def _reap(self) -> None:
        with self._lock:
            for process in self._children:
                if process.poll() is not None:
                    self._remember(process)
            self._children[:] = [p for p in self._children if p.returncode is None]

    def _remember(self, process: subprocess.Popen) -> None:
        self._exit_codes[process.pid] = process.returncode
        while len(self._exit_codes) > 256:  # those of jobs that ended well are never asked for
            del self._exit_codes[next(iter(self._exit_codes))]

    def _exit_status(self, pid: int | None) -> int | None:
        """The exit status of a process this one started (None for another's, or no pid)."""
        with self._lock:
            process = next((p for p in self._children if p.pid == pid), None)
        if process is not None:
            try:  # a zombie leader is reaped only once all its threads are gone: give them a moment
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self._reap()
        with self._lock:  # kept, not popped: two threads may reap the same job (the dict is bounded)
            return self._exit_codes.get(pid)


LOCAL = LocalBackend()


def read_log_tail(workspace: Workspace, run_id: str, lines: int) -> str:
    """The last `lines` lines of a run's job log (of its last 64 KiB), or "" if it has none."""
    path = RunFolder(workspace, run_id).log_file
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - 64 * 1024))
            return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-lines:])
    except OSError:
        return ""


def standby_pid(workspace: Workspace) -> int | None:
    """The pid of the idle standby worker, if one is alive."""
    try:
        pid = int((workspace.root / STANDBY_FILE).read_text().split()[0])
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            alive = b"standby" in f.read()
        return pid if alive and process_alive(pid) else None
    except (OSError, ValueError):
        return None


def process_alive(pid: int) -> bool:
    """True while `pid` runs on this host (a zombie is dead)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False


def _is_our_job_process(job: Job) -> bool:
    """Guards against signalling a recycled pid: the command line must name the job (or be the standby that took it)."""
    try:
        with open(f"/proc/{job.pid}/cmdline", "rb") as f:
            command = f.read()
    except OSError:
        return False
    return job.id.encode() in command or command.endswith(b"engine\x00standby\x00")
