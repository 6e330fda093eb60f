"""A local HTTP server for weights downloads: it serves `payload`, answers a Range request with the rest
(206), can break its first answer off at `cut_at` bytes, and can pause `delay` seconds between 64 KiB pieces
(a download slow enough to cancel). `requests` records each request's Range header (None without one)."""

from __future__ import annotations

import contextlib
import http.server
import threading
import time
from typing import Iterator

PIECE = 64 * 1024


class WeightsServer(http.server.ThreadingHTTPServer):
    payload = b""
    cut_at: int | None = None  # the first answer breaks off here
    delay = 0.0  # seconds between pieces
    requests: list

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - the http.server API
        server, start = self.server, 0
        header = self.headers.get("Range")
        server.requests.append(header)
        if header:
            start = int(header.split("=")[1].rstrip("-"))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(server.payload) - 1}/{len(server.payload)}")
        else:
            self.send_response(200)
        body = server.payload[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if server.cut_at is not None:
            body, server.cut_at = body[:server.cut_at], None
        try:
            for offset in range(0, len(body), PIECE):
                self.wfile.write(body[offset:offset + PIECE])
                time.sleep(server.delay)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def weights_server() -> Iterator[WeightsServer]:
    """A running `WeightsServer` on a free loopback port, shut down afterwards."""
    httpd = WeightsServer(("127.0.0.1", 0), _Handler)
    httpd.requests = []
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
