"""The dashboard's model server: one `python -m engine serve` child on a free loopback port, and calls to it.

The Demo and Explain pages predict and explain through it, so TensorFlow never loads in the
Streamlit process: a native crash or an out-of-memory in TensorFlow takes down the model server,
not the dashboard. If the server has died (crash, kill -9, out of memory), the next call notices,
starts a new one, retries once, and the page says so in one line (`restart_note`).
"""

from __future__ import annotations

import atexit
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import streamlit as st

from engine.serve.client import ServeClient, ServerUnreachable
from engine.store import HOME_ENV, default_root

PROJECT_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_SECONDS = 60
_NOTE_KEY = "model_server.note"
_MEMO_KEY, _MEMO_SIZE = "model_server.memo", 64


class ModelServerError(RuntimeError):
    """The model server could not answer (one line for the page)."""


@dataclasses.dataclass
class _Server:
    root: str
    process: subprocess.Popen | None = None
    client: ServeClient | None = None
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        env = dict(os.environ, **{HOME_ENV: self.root, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1",
                                  "TQDM_DISABLE": "1"})
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
        log = open(Path(self.root) / "model_server.log", "ab")  # noqa: SIM115 - the child keeps it
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "engine", "serve", "--host", "127.0.0.1", "--port", str(port), "--runs", "all",
                 "--exit-with-parent"], cwd=PROJECT_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()
        self.client = ServeClient(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.client.healthy():
                return
            if self.process.poll() is not None:
                raise ModelServerError(f"the model server did not start ({self.death()}); see "
                                       f"{Path(self.root) / 'model_server.log'}")
            time.sleep(0.1)
        raise ModelServerError(f"the model server did not answer within {START_TIMEOUT_SECONDS} s")

    def death(self) -> str:
        code = self.process.returncode if self.process is not None else None
        if code is None:
            return "it stopped answering"
        if code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else f"signal {-code}"
            return f"killed by {name}" + (": out of memory, or killed by hand" if name == "SIGKILL" else "")
        return f"exit code {code}"

    def stop(self) -> None:
        if self.alive():
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()


@st.cache_resource(show_spinner=False)
def _servers() -> dict[str, _Server]:
    servers: dict[str, _Server] = {}
    atexit.register(lambda: [s.stop() for s in servers.values()])
    return servers


def _server() -> _Server:
    """The server of this workspace (one at a time: a server of another workspace root is stopped)."""
    root = str(default_root())
    servers = _servers()
    server = servers.get(root)
    if server is None:
        for other in list(servers):
            servers.pop(other).stop()
        server = servers[root] = _Server(root)
    return server


def call(fn: Callable[[ServeClient], Any]) -> Any:
    """Runs `fn(client)` against the running server (started if needed). A dead server is restarted and the call
    retried once; `restart_note()` then has the line to show. Raises ModelServerError, or the client's
    ServeRequestError for a request the server refused."""
    server = _server()
    with server.lock:
        if not server.alive():
            server.start()
    try:
        return fn(server.client)
    except ServerUnreachable as error:
        with server.lock:
            if server.alive():
                try:
                    server.process.wait(timeout=2)  # a killed server may still be going down
                except subprocess.TimeoutExpired:
                    raise ModelServerError(str(error)) from None
            why = server.death()
            server.start()
        st.session_state[_NOTE_KEY] = f"The model server had stopped ({why}); it was restarted."
        try:
            return fn(server.client)
        except ServerUnreachable as again:
            raise ModelServerError(str(again)) from None


def remembered(key: tuple, fn: Callable[[ServeClient], Any]) -> Any:
    """`call(fn)` once per `key` in this browser session (a rerun must not predict, and log, the same image again)."""
    memo = st.session_state.setdefault(_MEMO_KEY, {})
    if key not in memo:
        memo[key] = call(fn)
        while len(memo) > _MEMO_SIZE:
            memo.pop(next(iter(memo)))
    return memo[key]


def restart_note() -> str | None:
    """The one line about a restart since the page last showed it (then forgotten)."""
    return st.session_state.pop(_NOTE_KEY, None)


def show_restart_note() -> None:
    note = restart_note()
    if note:
        st.warning(note, icon=":material/restart_alt:")


def warm() -> None:
    """Starts the server now (not waiting for it), so the first prediction does not pay for the start."""
    server = _server()
    if not server.alive():
        threading.Thread(target=_start_quietly, args=(server,), daemon=True).start()


def _start_quietly(server: _Server) -> None:
    with server.lock:
        if not server.alive():
            try:
                server.start()
            except ModelServerError:
                pass  # the next call reports it


def pid() -> int | None:
    """The running model server's process id (for the fault tests and the Monitor page)."""
    server = _server()
    return server.process.pid if server.alive() else None
