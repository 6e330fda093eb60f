"""Hostile requests to a real `engine serve`: each gets its specific 4xx in TF Serving's `{"error": ...}` shape, never a
traceback, and the next good request succeeds; truncated, 100 MB and chunked bodies over raw sockets; the token rule."""

from __future__ import annotations

import json
import math
import os
import select
import socket
import struct
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest

from engine.runfolder import RunFolder
from engine.store import HOME_ENV
from tests.engine.serve import conftest as parts
from tests.engine.serve.conftest import ROOT, Server, jpeg_bytes, multipart, png_bytes, start_server

trained, server = parts.trained, parts.server  # the model-server tests' fixtures: one run, one server

SIZE = 16
GOOD = np.full((SIZE, SIZE, 3), 128.0).tolist()


def image(value=128.0, size=SIZE, channels=3):
    return [[[value] * channels for _ in range(size)] for _ in range(size)]


def png_claiming(width: int, height: int) -> bytes:
    """A small, well-formed PNG whose header claims `width` x `height` pixels (a decompression bomb's shape)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 256)) + \
        chunk(b"IEND", b"")


def check_refused(reply, status: int, phrase: str = "") -> str:
    """`reply` is `status` with one line of `{"error": ...}` (naming `phrase`) and no traceback."""
    assert b"Traceback" not in reply.body and b'File "' not in reply.body, reply.body[:500]
    assert reply.status == status, (reply.status, reply.body[:300])
    answer = reply.json()
    assert list(answer) == ["error"] and isinstance(answer["error"], str), answer
    message = answer["error"]
    assert message and "\n" not in message and len(message) < 400, message
    assert phrase.lower() in message.lower(), message
    return message


def check_good(server, trained) -> None:
    """The server still answers a good :predict and a good :classify_image."""
    reply = server.post_json(trained.path(":predict"), {"instances": [GOOD]}, log=0)
    assert reply.status == 200 and len(reply.json()["predictions"][0]) == 10, reply.body[:300]
    png = png_bytes(np.full((SIZE, SIZE, 3), 200, np.uint8))
    assert server.post_file(trained.path(":classify_image"), png, "image/png", log=0).status == 200


def predict_raw(server, trained, body: bytes, **query):
    return server.call("POST", trained.path(":predict"), body, headers={"Content-Type": "application/json"}, **query)


BAD_PREDICT = {  # body → (status, a phrase of the message)
    "shape: flat list": ({"instances": [[1, 2]]}, 400, "shape"),
    "shape: wrong size": ({"instances": [image(size=8)]}, 400, "shape"),
    "shape: four channels": ({"instances": [image(channels=4)]}, 400, "shape"),
    "shape: ragged": ({"instances": [GOOD, [[1, 2, 3]]]}, 400, "one shape"),
    "shape: a scalar": ({"instances": [5]}, 400, "shape"),
    "dtype: strings": ({"instances": [image("a")]}, 400, "number"),
    "dtype: numeric strings": ({"instances": [image("12")]}, 400, "number"),
    "dtype: booleans": ({"instances": [image(True)]}, 400, "number"),
    "dtype: a boolean among numbers": ({"instances": [GOOD[:-1] + [[[1.0, False, 2.0]] * SIZE]]}, 400, "number"),
    "dtype: nulls": ({"instances": [image(None)]}, 400, ""),
    "garbage: objects as pixels": ({"instances": [image({"a": [1]})]}, 400, ""),
    "garbage: too deep": ({"instances": [[[[[1, 2, 3]]]]]}, 400, "shape"),
    "garbage: instances is a string": ({"instances": "cat"}, 400, "list"),
    "garbage: instances is an object": ({"instances": {"x": 1}}, 400, ""),
    "garbage: named input misnamed": ({"instances": [{"pixels": GOOD}]}, 400, "images"),
    "range: -1": ({"instances": [image(-1.0)]}, 400, "0..255"),
    "range: 256": ({"instances": [image(256)]}, 400, "0..255"),
    "empty instances": ({"instances": []}, 400, "non-empty"),
    "empty inputs": ({"inputs": []}, 400, "non-empty"),
    "both instances and inputs": ({"instances": [GOOD], "inputs": [GOOD]}, 400, "exactly one"),
    "neither instances nor inputs": ({"examples": [GOOD]}, 400, "exactly one"),
    "wrong signature": ({"signature_name": "other", "instances": [GOOD]}, 400, "signature"),
    "too many images": ({"instances": [GOOD] * 257}, 400, "at most"),
}

BAD_RAW = {  # raw body bytes → (status, phrase)
    "NaN literal": (b'{"instances": [' + json.dumps(image(1.0)).replace("1.0", "NaN", 1).encode() + b"]}", 400,
                    "NaN"),
    "Infinity literal": (b'{"instances": [' + json.dumps(image(1.0)).replace("1.0", "-Infinity", 1).encode() + b"]}",
                         400, "infinite"),
    "not JSON": (b'{"instances": [[[1, 2', 400, "not valid JSON"),
    "not UTF-8": (b'\xff\xfe{"instances": []}', 400, "JSON"),
    "empty body": (b"", 400, "JSON"),
    "JSON list": (b"[1, 2, 3]", 400, "JSON object"),
    "JSON string": (b'"instances"', 400, "JSON object"),
    "JSON number": (b"3", 400, "JSON object"),
    "JSON null": (b"null", 400, "JSON object"),
}


@pytest.mark.parametrize("case", BAD_PREDICT)
def test_bad_predict_bodies_get_400_and_the_server_keeps_serving(server, trained, case):
    body, status, phrase = BAD_PREDICT[case]
    check_refused(server.post_json(trained.path(":predict"), body), status, phrase)
    check_good(server, trained)


@pytest.mark.parametrize("case", BAD_RAW)
def test_bad_json_gets_400_and_the_server_keeps_serving(server, trained, case):
    body, status, phrase = BAD_RAW[case]
    check_refused(predict_raw(server, trained, body), status, phrase)
    check_good(server, trained)


def bad_images() -> dict:
    png = png_bytes(np.random.default_rng(0).integers(0, 256, (40, 40, 3)).astype(np.uint8))
    jpeg = jpeg_bytes(np.random.default_rng(1).integers(0, 256, (40, 40, 3)).astype(np.uint8))
    return {
        "not an image": (b"hello, this is text", "image/png", 400, "not an image"),
        "empty file": (b"", "image/png", 400, "empty"),
        "truncated PNG": (png[:len(png) // 2], "image/png", 400, "truncated"),
        "truncated JPEG": (jpeg[:len(jpeg) // 2], "image/jpeg", 400, "image"),
        "PNG claiming 20000x20000": (png_claiming(20000, 20000), "image/png", 400, "too large"),
        "PNG claiming 9000x8000": (png_claiming(9000, 8000), "image/png", 400, "too large"),
        "PNG claiming 0 width": (png_claiming(0, 10), "image/png", 400, "image"),
        "multipart without a file": (b'--b\r\nContent-Disposition: form-data; name="x"\r\n\r\n1\r\n--b--\r\n',
                                     "multipart/form-data; boundary=b", 400, "no file"),
        "multipart garbage": (b"--b\r\nnonsense", "multipart/form-data; boundary=b", 400, ""),
        "multipart holding text": (*multipart("file", "a.png", b"not a png", "image/png"), 400, "not an image"),
    }


@pytest.mark.parametrize("case", list(bad_images()))
def test_bad_image_files_get_400_quickly_and_the_server_keeps_serving(server, trained, case):
    data, content_type, status, phrase = bad_images()[case]
    for verb in (":classify_image", ":explain"):
        started = time.perf_counter()
        check_refused(server.post_file(trained.path(verb), data, content_type), status, phrase)
        assert time.perf_counter() - started < 10  # refused from the header, not decoded
        check_good(server, trained)


OTHER = "/v1/models/20200101-000000-abcd"
ROUTES = {  # name → (method, path (RUN: this run's), body, query, status, phrase)
    "unknown run": ("GET", OTHER, None, {}, 404, "no run"),
    "unknown run :predict": ("POST", OTHER + ":predict", {"instances": [GOOD]}, {}, 404, "no run"),
    "unknown run metadata": ("GET", "/v1/models/nope/metadata", None, {}, 404, "no run"),
    "unknown format": ("POST", "RUN:predict", {"instances": [GOOD]}, {"format": "bogus"}, 400, "format"),
    "format not exported": ("POST", "RUN:predict", {"instances": [GOOD]}, {"format": "onnx"}, 404, "no onnx export"),
    "version 2": ("GET", "RUN/versions/2", None, {}, 404, "version"),
    "unknown verb": ("POST", "RUN:frobnicate", {"instances": [GOOD]}, {}, 404, ""),
    "unknown sub-route": ("GET", "RUN/signatures", None, {}, 404, ""),
    "unknown top route": ("GET", "/v2/models", None, {}, 404, None),
    ":classify (tf.Example)": ("POST", "RUN:classify", {"examples": []}, {}, 400, ":predict"),
    "bad k": ("POST", "RUN:classify_image", "png", {"k": "many"}, 400, "k="),
    "k zero": ("POST", "RUN:classify_image", "png", {"k": "0"}, 400, "k="),
    "bad source": ("POST", "RUN:predict", {"instances": [GOOD]}, {"source": "evil"}, 400, "source"),
    "bad explain method": ("POST", "RUN:explain", "png", {"method": "magic"}, 400, "method"),
    "explain target out of range": ("POST", "RUN:explain", "png", {"target": "10"}, 400, "unknown class"),
    "unknown log id": ("POST", "RUN/feedback", {"log_id": "0123456789abcdef", "label": 1}, {}, 404, "no logged"),
    "feedback without log id": ("POST", "RUN/feedback", {"label": 1}, {}, 400, "log_id"),
    "feedback label 10": ("POST", "RUN/feedback", {"log_id": "x", "label": 10}, {}, 400, "unknown class"),
    "feedback label name": ("POST", "RUN/feedback", {"log_id": "x", "label": "cat"}, {}, 400, "unknown class"),
    "feedback label true": ("POST", "RUN/feedback", {"log_id": "x", "label": True}, {}, 400, "class name"),
    "feedback label null": ("POST", "RUN/feedback", {"log_id": "x", "label": None}, {}, 400, "class name"),
    "feedback without label": ("POST", "RUN/feedback", {"log_id": "x"}, {}, 400, "label"),
    "feedback not JSON": ("POST", "RUN/feedback", b"label=3", {}, 400, "JSON"),
}


@pytest.mark.parametrize("case", ROUTES)
def test_unknown_runs_formats_routes_and_bad_feedback_get_their_4xx(server, trained, case):
    method, path, body, query, status, phrase = ROUTES[case]
    path = path.replace("RUN", trained.path())
    if body == "png":
        data, headers = png_bytes(np.full((SIZE, SIZE, 3), 90, np.uint8)), {"Content-Type": "image/png"}
    else:
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        headers = {} if body is None else {"Content-Type": "application/json"}
    reply = server.call(method, path, data, headers=headers, **query)
    if phrase is None:  # outside the API: starlette's own 404, still no traceback
        assert reply.status == status and b"Traceback" not in reply.body
    else:
        check_refused(reply, status, phrase)
    check_good(server, trained)


def test_feedback_for_a_real_log_id_with_a_bad_label_changes_nothing(server, trained):
    from engine.store import PredictionLog

    png = png_bytes(np.full((SIZE, SIZE, 3), 30, np.uint8))
    log_id = server.post_file(trained.path(":classify_image"), png, "image/png").json()["log_id"]
    for label in (-1, 10, "ten", [1], 1.5):
        check_refused(server.post_json(trained.path("/feedback"), {"log_id": log_id, "label": label}), 400, "label=")
    assert PredictionLog(trained.workspace).get(log_id).feedback_label is None
    check_good(server, trained)


# -- bodies over raw sockets ----------------------------------------------------------------


def raw(server, head: str, parts=(), *, close: str = "", timeout: float = 20) -> tuple[int | None, bytes, float]:
    """Sends `head` and `parts` on a raw socket, stopping early once the server answers; then `close`
    ("write": half-close, "all": close at once). Returns (status or None, what came back, seconds to the answer)."""
    started = time.perf_counter()
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=timeout)
    try:
        sock.sendall(head.encode())
        for part in parts:
            if select.select([sock], [], [], 0)[0]:
                break  # the server answered (and stopped reading)
            try:
                sock.sendall(part)
            except OSError:  # it closed on us: read what it said
                break
        if close == "all":
            return None, b"", time.perf_counter() - started
        if close == "write":
            sock.shutdown(socket.SHUT_WR)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
                if b"\r\n\r\n" in received and len(received.partition(b"\r\n\r\n")[2]) >= content_length(received):
                    break
        except (ConnectionResetError, TimeoutError):
            pass
        status = int(received.split(b" ", 2)[1]) if received.startswith(b"HTTP/1.1 ") else None
        return status, received, time.perf_counter() - started
    finally:
        sock.close()


def content_length(response: bytes) -> int:
    for line in response.partition(b"\r\n\r\n")[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 1 << 30


def post_head(path: str, length: int | None, content_type: str = "application/json") -> str:
    size = "Transfer-Encoding: chunked" if length is None else f"Content-Length: {length}"
    return f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n{size}\r\n\r\n"


@pytest.mark.parametrize("close", ["write", "all"])
@pytest.mark.parametrize("verb", [":predict", ":classify_image"])
def test_a_truncated_body_does_not_hurt_the_server(server, trained, verb, close):
    body = json.dumps({"instances": [GOOD]}).encode()
    status, received, _ = raw(server, post_head(trained.path(verb), len(body) + 1000), [body], close=close)
    assert b"Traceback" not in received
    assert status in (None, 400), received[:300]  # uvicorn closes on the client's EOF; never a 500
    if status == 400:
        assert b"truncated" in received
    check_good(server, trained)


@pytest.mark.parametrize("verb", [":predict", ":classify_image", "/feedback"])
def test_a_100_mb_body_is_refused_at_once_without_being_read(server, trained, verb):
    hundred_mb = 100 * 1024 * 1024
    status, received, seconds = raw(server, post_head(trained.path(verb), hundred_mb), [b"{" + b" " * 65535] * 1600)
    assert status == 413 and b"104,857,600" in received, received[:300]
    assert seconds < 5, seconds  # answered from the header: the server did not wait for 100 MB
    check_good(server, trained)


def test_a_100_mb_multipart_upload_is_refused_at_once(server, trained):
    head = post_head(trained.path(":classify_image"), 100 * 1024 * 1024, "multipart/form-data; boundary=b")
    status, received, seconds = raw(server, head, [b"--b\r\n" + b"x" * 65536] * 1600)
    assert status == 413 and seconds < 5, received[:300]
    check_good(server, trained)


@pytest.mark.slow
@pytest.mark.parametrize("verb", [":predict", ":classify_image"])
def test_a_chunked_body_over_the_limit_is_refused(server, trained, verb):
    chunk = b"%x\r\n%s\r\n" % (1 << 20, b" " * (1 << 20))
    status, received, _ = raw(server, post_head(trained.path(verb), None), [chunk] * 40 + [b"0\r\n\r\n"])
    assert status == 413 and b"over the limit" in received, received[:300]
    check_good(server, trained)


def test_the_server_printed_no_traceback_for_any_of_it(server, trained):
    check_good(server, trained)
    assert server.process.poll() is None
    assert "Traceback" not in server.output(), server.output()[-3000:]


# -- the token rule -------------------------------------------------------------------------


TOKEN = "s3cret-token-for-tests"


def test_with_a_token_set_every_model_route_needs_it(trained):
    guarded = start_server(trained.home, env={"APERTURE_API_TOKEN": TOKEN})
    try:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                        {"Authorization": f"Basic {TOKEN}"}, {"Authorization": f"Bearer {TOKEN}x"}):
            for method, path, body in (("GET", trained.path(), None), ("GET", "/v1/models", None),
                                       ("POST", trained.path(":predict"), json.dumps({"instances": [GOOD]}).encode())):
                reply = guarded.call(method, path, body, headers=headers)
                check_refused(reply, 401, "bearer token")
                assert reply.headers["www-authenticate"] == "Bearer"
        good = {"Authorization": f"Bearer {TOKEN}"}
        assert guarded.call("GET", trained.path(), headers=good).status == 200
        reply = guarded.post_json(trained.path(":predict"), {"instances": [GOOD]}, headers=good, log=0)
        assert reply.status == 200 and len(reply.json()["predictions"]) == 1
        assert guarded.call("GET", "/healthz").body == b"ok"  # the health check needs no token
        check_refused(guarded.call("GET", "/v1/models/nope", headers=good), 404, "no run")
    finally:
        guarded.stop()


def test_binding_beyond_loopback_without_a_token_exits_2_with_one_line(trained):
    env = {k: v for k, v in os.environ.items() if k != "APERTURE_API_TOKEN"}
    result = subprocess.run([sys.executable, "-m", "engine", "serve", "--host", "0.0.0.0", "--port", "0"], cwd=ROOT,
                            env={**env, HOME_ENV: str(trained.home)}, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "APERTURE_API_TOKEN" in lines[0] and "Traceback" not in result.stderr, result.stderr
    assert result.stdout == ""


def test_beyond_loopback_with_a_token_only_published_runs_are_served(trained):
    folder = RunFolder(trained.workspace, trained.run_id)
    good = {"Authorization": f"Bearer {TOKEN}"}
    exposed = Server(trained.home, "--host", "0.0.0.0", env={"APERTURE_API_TOKEN": TOKEN})  # reached via loopback
    try:
        exposed.wait_ready()
        assert not folder.published
        check_refused(exposed.call("GET", trained.path(), headers=good), 404, "not published")
        check_refused(exposed.post_json(trained.path(":predict"), {"instances": [GOOD]}, headers=good), 404,
                      "not published")
        assert exposed.call("GET", "/v1/models", headers=good).json() == {"models": []}
        folder.set_published(True)
        assert exposed.call("GET", trained.path(), headers=good).status == 200
        reply = exposed.post_json(trained.path(":predict"), {"instances": [GOOD]}, headers=good, log=0)
        assert reply.status == 200 and math.isclose(sum(reply.json()["predictions"][0]), 1, abs_tol=1e-4)
        assert [m["name"] for m in exposed.call("GET", "/v1/models", headers=good).json()["models"]] == \
            [trained.run_id]
        check_refused(exposed.call("GET", trained.path()), 401, "token")  # published, but still the token
    finally:
        folder.set_published(False)
        output = exposed.stop()
    assert "serving published runs" in output and "token required" in output


def test_a_stalled_upload_is_answered_and_lets_go_of_its_connection(trained):
    """A client that sends part of a body and then neither sends more nor closes gets a 400 once the body timeout
    passes (it must not hold a connection for ever); the server keeps serving."""
    stalling = start_server(trained.home, "--body-timeout", "1")
    try:
        body = json.dumps({"instances": [GOOD]}).encode()
        status, received, seconds = raw(stalling, post_head(trained.path(":predict"), len(body) + 1000), [body])
        assert status == 400 and b"stalled upload" in received, received[:300]
        assert 0.8 < seconds < 10, seconds
        check_good(stalling, trained)
    finally:
        stalling.stop()
