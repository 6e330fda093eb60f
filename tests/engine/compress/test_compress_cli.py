"""`python -m engine compress ... --wait --json` through the real queue and job processes; and cancelling one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine import jobs
from engine.compress import CompressRequest, request_compress
from engine.store import CANCELLED, COMPLETED
from tests.helpers.runs import train_tiny_run

ROOT = Path(__file__).resolve().parents[3]


def cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "engine", *map(str, args)], cwd=ROOT, env=os.environ.copy(),
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_compress_wait_json_prints_the_child_runs_result_for_both_methods(workspace):
    parent = train_tiny_run(workspace, epochs=2)
    done = cli("compress", parent, "--method", "prune", "--sparsity", "0.5", "--epochs", "1", "--wait", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    child = workspace.get_run(result["run_id"])
    assert result["status"] == child.status == COMPLETED and child.parent_id == parent
    assert result["test_accuracy"] == child.test_accuracy > 0.3 and result["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert child.job.kind == "compress" and child.epochs_done == 1
    evaluated = cli("evaluate", child.id, "--data", "split:test", "--json")  # the child's model, re-predicted
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["accuracy"] == pytest.approx(child.test_accuracy)

    distilled = cli("compress", parent[-6:], "--method", "distill", "--student", "lenet5:activation=relu",
                    "--epochs", "1", "--wait", "--json")
    assert distilled.returncode == 2 and "not fewer than the teacher's" in distilled.stderr  # lenet5 teaches lenet5
    assert len(workspace.list_runs()) == 2


@pytest.mark.slow
def test_a_compress_job_stops_when_cancelled_and_the_child_says_so(workspace):
    parent = train_tiny_run(workspace, model={"name": "resnet", "width": 16}, epochs=1)
    child = request_compress(workspace, parent, CompressRequest(method="distill", student="lenet5", epochs=200))
    deadline = time.time() + 120
    while time.time() < deadline and "epoch" not in (workspace.get_run(child.id).job.message or ""):
        jobs.refresh(workspace)
        time.sleep(0.5)
    jobs.cancel(child.id, workspace)
    ended = jobs.wait(child.id, workspace, poll_seconds=0.5)
    assert ended.status == CANCELLED and ended.epochs_done < 200
    assert not (workspace.run_dir(child.id) / "compress_report.json").exists()
