"""Starting the model server: the security rule for the address, the registry, and uvicorn."""

from __future__ import annotations

import ipaddress
import logging
import os
import threading
import time

from engine.serve.batching import DEFAULT_MAX_BATCH, DEFAULT_WINDOW_MS
from engine.serve.models import ModelRegistry
from engine.store import Workspace

log = logging.getLogger(__name__)

TOKEN_ENV = "APERTURE_API_TOKEN"
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8502  # 8501, TF Serving's REST port, is the dashboard's


class ServeSetupError(ValueError):
    """The server cannot start as asked (the message says why and what to do)."""


def is_loopback(host: str) -> bool:
    """Whether `host` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def settings(host: str, runs: str | None, token: str | None) -> tuple[str, str | None]:
    """Which runs to serve and the token to require, by the rule: loopback by default; bound elsewhere it needs
    `APERTURE_API_TOKEN` and serves published runs only unless told `--runs all`."""
    token = token or None
    if is_loopback(host):
        return runs or "all", token
    if not token:
        raise ServeSetupError(f"serving on {host} (not loopback) needs a token: set {TOKEN_ENV} "
                              "(clients then send 'Authorization: Bearer <token>')")
    return runs or "published", token


def serve(workspace: Workspace, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, runs: str | None = None,
          max_batch: int = DEFAULT_MAX_BATCH, window_ms: float = DEFAULT_WINDOW_MS,
          exit_with_parent: bool = False, body_timeout_s: float | None = None) -> None:
    """Serves `workspace`'s runs until interrupted (SIGINT/SIGTERM stop it gracefully)."""
    import uvicorn

    from engine.serve.app import BODY_TIMEOUT_SECONDS, make_app

    runs, token = settings(host, runs, os.environ.get(TOKEN_ENV))
    registry = ModelRegistry(workspace, runs=runs, max_batch=max_batch, window_ms=window_ms)
    app = make_app(registry, token=token, body_timeout_s=body_timeout_s or BODY_TIMEOUT_SECONDS)
    batching = f"batches of up to {max_batch} within {window_ms:g} ms" if max_batch > 1 else "no batching"
    print(f"serving {runs} runs of {workspace.root} on http://{host}:{port}/v1/models "
          f"({batching}{', token required' if token else ''})", flush=True)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=5, limit_concurrency=512)
    server = uvicorn.Server(config)
    if exit_with_parent:
        _stop_when_orphaned(server)
    try:
        server.run()
    except SystemExit:  # uvicorn exits when it cannot bind
        pass
    if not server.started:
        raise ServeSetupError(f"could not listen on {host}:{port} (in use, or not an address of this machine)")


def _stop_when_orphaned(server) -> None:
    """Stops the server once the process that started it is gone (the dashboard's child must not outlive it)."""
    parent = os.getppid()

    def watch() -> None:
        while not server.should_exit:
            if os.getppid() != parent:
                log.warning("the parent process %d is gone: stopping", parent)
                server.should_exit = True
                return
            time.sleep(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
