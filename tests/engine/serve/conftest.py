"""The model server's test parts: one tiny trained run with its INT8 export, a real `engine serve` process, plain HTTP.

Everything is real: the run is trained (lenet5 on 16x16 digits), the INT8 file is written by the
export code, the server is `python -m engine serve` in its own process on a free loopback port,
and the clients are `urllib.request` (and raw sockets in the hostile tests). The hostile module
imports these helpers and fixtures from here.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest

import engine  # noqa: F401 - before TensorFlow (the AVX-512 rule)
from engine.store import HOME_ENV, Workspace

ROOT = Path(__file__).resolve().parents[3]
START_SECONDS = 90  # a loaded 2-core machine: TensorFlow's import alone can take 20 s


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclasses.dataclass
class Reply:
    """One HTTP answer: status, raw body and headers (lower-case names)."""

    status: int
    body: bytes
    headers: dict

    def json(self):
        return json.loads(self.body)


class Server:
    """`python -m engine serve ARGS` over the workspace at `home`, on a free loopback port (unless `--port` given)."""

    def __init__(self, home: Path, *args: str, env: dict | None = None, host: str = "127.0.0.1"):
        self.port = free_port()
        self.url = f"http://{host}:{self.port}"
        self.host = host
        self._log = tempfile.TemporaryFile()
        environment = {**os.environ, HOME_ENV: str(home), "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
        environment = {k: v for k, v in environment.items() if v is not None}
        self.process = subprocess.Popen([sys.executable, "-m", "engine", "serve", "--port", str(self.port), *args],
                                        cwd=ROOT, env=environment, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = START_SECONDS) -> Server:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"engine serve exited with {self.process.returncode}:\n{self.output()}")
            try:
                if self.call("GET", "/healthz", timeout=2).body == b"ok":
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"engine serve did not answer /healthz within {timeout} s:\n{self.output()}")

    def call(self, method: str, path: str, body: bytes | None = None, /, *, headers: dict | None = None,
             timeout: float = 60, **query) -> Reply:
        """One request with urllib; an HTTP error status is returned, not raised."""
        query = {k: v for k, v in query.items() if v is not None}
        url = self.url + path + (f"?{urllib.parse.urlencode(query)}" if query else "")
        request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return Reply(response.status, response.read(), {k.lower(): v for k, v in response.headers.items()})
        except urllib.error.HTTPError as error:
            return Reply(error.code, error.read(), {k.lower(): v for k, v in error.headers.items()})

    def post_json(self, path: str, value, /, **kwargs) -> Reply:
        headers = {"Content-Type": "application/json", **kwargs.pop("headers", {})}
        return self.call("POST", path, json.dumps(value).encode(), headers=headers, **kwargs)

    def post_file(self, path: str, data: bytes, content_type: str = "application/octet-stream", /, **kwargs) -> Reply:
        headers = {"Content-Type": content_type, **kwargs.pop("headers", {})}
        return self.call("POST", path, data, headers=headers, **kwargs)

    def output(self) -> str:
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def stop(self) -> str:
        """Stops the server (SIGTERM, then SIGKILL) and returns what it printed."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        text = self.output()
        self._log.close()
        return text


def start_server(home: Path, *args: str, env: dict | None = None) -> Server:
    return Server(home, *args, env=env).wait_ready()


@dataclasses.dataclass(frozen=True)
class Trained:
    """The session's workspace and its one run (trained, with its test predictions and an INT8 export)."""

    workspace: Workspace
    run_id: str

    @property
    def home(self) -> Path:
        return self.workspace.root

    def path(self, suffix: str = "") -> str:
        return f"/v1/models/{self.run_id}{suffix}"

    def test_images(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The run's test images (as `predictions.npz` lists them), their labels, and the saved test probabilities."""
        from engine.runfolder import RunFolder

        folder = RunFolder(self.workspace, self.run_id)
        predictions = folder.predictions()
        images = folder.dataset(predictions).images[predictions.indices]
        return np.asarray(images, dtype=np.uint8), predictions.labels, predictions.probabilities


_TRAINED: dict[str, Trained] = {}  # one run per test session, even when another folder imports these fixtures


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> Trained:
    """One tiny digits run (lenet5, 16x16, 3 epochs) with its INT8 export, made once per session."""
    if "run" not in _TRAINED:
        from engine import export
        from tests.helpers.runs import train_tiny_run

        workspace = Workspace(tmp_path_factory.mktemp("serve") / "workspace")
        run_id = train_tiny_run(workspace)
        report = export.export_run(workspace, run_id, export.ExportRequest(formats=("int8",), latency_runs=5))
        assert report.artifact("int8").error is None, report.artifact("int8")
        _TRAINED["run"] = Trained(workspace, run_id)
    return _TRAINED["run"]


@pytest.fixture(scope="module")
def server(trained):
    """`engine serve` with its default settings over the session's workspace, one per test module."""
    started = start_server(trained.home)
    yield started
    started.stop()


def png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg_bytes(image: np.ndarray, quality: int = 90) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def multipart(field: str, filename: str, data: bytes, content_type: str) -> tuple[bytes, str]:
    """A multipart/form-data body with one file field; returns (body, the Content-Type header)."""
    boundary = "----aperture-test-boundary-7f3a"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
            f"Content-Type: {content_type}\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"
