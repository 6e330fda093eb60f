"""A small HTTP client for the model server (the dashboard's pages, the benchmark and the tests use it).

Standard library and NumPy only: no TensorFlow, so the Streamlit process stays free of it.
A refused request raises `ServeRequestError` (its HTTP status and the server's one-line
message); a server that cannot be reached, or that dropped the connection, raises
`ServerUnreachable`, which tells the caller to check on the process.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import numpy as np

TIMEOUT_SECONDS = 120.0  # SHAP on a big model takes a while


class ServeRequestError(RuntimeError):
    """The server answered with an error: `status` and its `{"error": ...}` message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class ServerUnreachable(ConnectionError):
    """No answer: the server is not listening, or the connection broke mid-request."""


@dataclass
class ServeClient:
    """Calls one model server.

    Args:
        base_url: e.g. `http://127.0.0.1:8502`.
        token: the bearer token, when the server needs one (default `$APERTURE_API_TOKEN`).
        timeout: seconds per request.
    """

    base_url: str
    token: str | None = field(default_factory=lambda: os.environ.get("APERTURE_API_TOKEN") or None)
    timeout: float = TIMEOUT_SECONDS

    def request(self, method: str, path: str, body: bytes | None = None, /, *, content_type: str = "application/json",
                **query: Any) -> tuple[dict, dict]:
        """One request; returns (the JSON answer, the response headers)."""
        query = {k: v for k, v in query.items() if v is not None}
        url = self.base_url.rstrip("/") + path + (f"?{urllib.parse.urlencode(query)}" if query else "")
        headers = {"Content-Type": content_type} if body is not None else {}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(url, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read() or b"{}"), dict(response.headers)
        except urllib.error.HTTPError as error:
            try:
                message = json.loads(error.read()).get("error") or error.reason
            except (ValueError, AttributeError, OSError):
                message = str(error.reason)
            raise ServeRequestError(error.code, str(message)) from None
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError, socket.timeout, OSError) as error:
            reason = getattr(error, "reason", error)
            raise ServerUnreachable(f"the model server at {self.base_url} did not answer ({reason})") from None

    def healthy(self) -> bool:
        """Whether the server answers its health check."""
        url = self.base_url.rstrip("/") + "/healthz"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.read() == b"ok"
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError, socket.timeout, OSError):
            return False

    def status(self, run: str) -> dict:
        return self.request("GET", f"/v1/models/{run}")[0]

    def metadata(self, run: str) -> dict:
        return self.request("GET", f"/v1/models/{run}/metadata")[0]

    def predict(self, run: str, images: np.ndarray, *, fmt: str | None = None, source: str | None = None) -> np.ndarray:
        """`(N, H, W, 3)` 0..255 pixels → `(N, classes)` probabilities, in TF Serving's row format."""
        body = json.dumps({"instances": np.asarray(images, dtype=np.float32).tolist()}).encode()
        answer, _ = self.request("POST", f"/v1/models/{run}:predict", body, format=fmt, source=source)
        return np.asarray(answer["predictions"], dtype=np.float32)

    def classify_image(self, run: str, data: bytes, *, fmt: str | None = None, k: int | None = None,
                       source: str | None = None, log: bool = True) -> dict:
        """An image file's top-k (`top_k`), all `probabilities`, the `log_id` and the `latency_ms`."""
        return self.request("POST", f"/v1/models/{run}:classify_image", data, content_type="application/octet-stream",
                            format=fmt, k=k, source=source, log=None if log else 0)[0]

    def explain(self, run: str, data: bytes, *, method: str = "gradcam", target: int | None = None,
                source: str | None = None, log: bool = True) -> dict:
        """An image file explained: the `Explanation` summary plus `attribution` (H x W) and `probabilities`."""
        return self.request("POST", f"/v1/models/{run}:explain", data, content_type="application/octet-stream",
                            method=method, target=target, source=source, log=None if log else 0)[0]

    def feedback(self, run: str, log_id: str, label: str | int) -> dict:
        body = json.dumps({"log_id": log_id, "label": label}).encode()
        return self.request("POST", f"/v1/models/{run}/feedback", body)[0]


def png(image: np.ndarray) -> bytes:
    """An `(H, W, 3)` 0..255 image as PNG bytes: lossless, so the server decodes exactly these pixels (and the
    log keeps exactly the input)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.clip(np.rint(image), 0, 255).astype(np.uint8)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def explanation(answer: dict):
    """An `:explain` answer as an `engine.explain.methods.Explanation` (NumPy only)."""
    from engine.explain.methods import Explanation

    fields = {k: answer.get(k) for k in Explanation.__dataclass_fields__ if k != "attribution"}
    return Explanation(attribution=np.asarray(answer["attribution"], dtype=np.float32),
                       **{k: v for k, v in fields.items() if v is not None or k.endswith(("auc", "curve"))})
