"""`engine doctor` on a Ray cluster: is it reachable, and does a worker node see this workspace?

The probe takes the path every job takes (a Ray job with the jobs' environment and their one
CPU, so it runs on a worker node): it reads a token this process wrote under APERTURE_HOME and
writes an answer beside it. If the node cannot read the token, APERTURE_HOME is not the same
shared folder there, and jobs would write their run folders where no one else looks.
"""

from __future__ import annotations

import os
import secrets
import shlex
import sys
import time
from pathlib import Path

from engine.jobs.backends.ray import ADDRESS_ENV, RAY, RayUnavailable, job_environment
from engine.store import Workspace

PROBE_DIR = ".doctor"  # in the workspace root; the probe's two files are removed afterwards
PROBE_TIMEOUT_SECONDS = 120.0
# Run on the node: read the token, answer with it and the node's host name (stdout goes to Ray's job log).
_PROBE = ("import pathlib, socket, sys; p = pathlib.Path(sys.argv[1]); "
          "t = p.read_text() if p.exists() else 'MISSING'; "
          "p.with_suffix('.seen').write_text(t + ' ' + socket.gethostname()) if p.parent.is_dir() else None; "
          "print('token', t, 'host', socket.gethostname())")


def check_cluster(workspace: Workspace, *, timeout: float = PROBE_TIMEOUT_SECONDS) -> dict:
    """Checks, from a Ray job on a worker node, that the node sees the same workspace.

    Args:
        workspace: the workspace whose root (APERTURE_HOME) the nodes must share.
        timeout: how long to wait for Ray to place and run the probe, in seconds.

    Returns:
        A JSON-able dict: `address` (RAY_ADDRESS), `reachable`, `nodes` (alive nodes with their
        CPUs and GPUs), `shared_workspace` (True, False, or None when the probe could not run),
        `node` (the host the probe ran on) and `detail` (one line saying what was found).
    """
    report = {"address": os.environ.get(ADDRESS_ENV), "reachable": False, "nodes": [],
              "shared_workspace": None, "node": None, "detail": ""}
    try:
        client = RAY._client()
    except RayUnavailable as error:
        return {**report, "detail": str(error)}
    report["reachable"] = True
    try:
        report["nodes"] = RAY.nodes()
    except Exception as error:  # noqa: BLE001 - requests' errors, or a reply of another shape
        return {**report, "detail": f"Ray's node list could not be read: {error}"}
    token = secrets.token_hex(8)
    folder = workspace.root / PROBE_DIR
    folder.mkdir(exist_ok=True)
    token_file = folder / f"probe-{token}.txt"
    token_file.write_text(token)
    try:
        return _probe(client, workspace, report, token_file, timeout)
    except Exception as error:  # noqa: BLE001 - e.g. a head too busy to answer: said, not raised
        return {**report, "detail": f"the probe could not run on Ray: {error}"}
    finally:
        token_file.unlink(missing_ok=True)
        token_file.with_suffix(".seen").unlink(missing_ok=True)


def _probe(client, workspace: Workspace, report: dict, token_file: Path, timeout: float) -> dict:
    """Runs the probe job and reads its answer (see `check_cluster`)."""
    token = token_file.read_text()
    answer_file = token_file.with_suffix(".seen")
    probe_id = f"aperture-doctor-{token}"
    client.submit_job(entrypoint=f"exec {shlex.quote(sys.executable)} -c {shlex.quote(_PROBE)} "
                                 f"{shlex.quote(str(token_file))}",
                      submission_id=probe_id, entrypoint_num_cpus=1,
                      runtime_env={"env_vars": job_environment(workspace, client.get_address())})
    status = _wait_for_end(client, probe_id, timeout)
    if status is None:
        client.stop_job(probe_id)
        return {**report, "detail": f"the probe (Ray job {probe_id}) did not run within {timeout:.0f} s: "
                                    "does any node have a free CPU?"}
    log = client.get_job_logs(probe_id)
    answer = answer_file.read_text().split() if answer_file.exists() else []
    seen = next((line.split() for line in log.splitlines() if line.startswith("token ")), [])
    report["node"] = answer[1] if len(answer) > 1 else (seen[3] if len(seen) > 3 else None)
    if answer and answer[0] == token:
        detail = f"a worker node ({report['node']}) reads and writes this workspace ({workspace.root})"
        return {**report, "shared_workspace": True, "detail": detail}
    why = "it cannot see the folder" if seen[1:2] == ["MISSING"] else f"the probe ended {status}"
    return {**report, "shared_workspace": False,
            "detail": f"a worker node ({report['node'] or 'unknown'}) does not share {workspace.root}: {why}; "
                      "mount the same folder at the same path on every node (APERTURE_HOME)"}


def _wait_for_end(client, submission: str, timeout: float) -> str | None:
    """The probe's final Ray status, or None if it had not ended within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get_job_status(submission)
        if status.is_terminal():
            return str(status.value)
        time.sleep(0.25)
    return None
