"""The monitor report on a planted prediction log (no server needed), the `monitor` CLI, and the Monitor page."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time

import numpy as np
from PIL import Image

from engine.runfolder import RunFolder
from engine.serve.monitor import monitor_report, psi, psi_band
from engine.store import LoggedPrediction, PredictionLog
from tests.dashboard.apptest import ROOT, open_app, texts
from tests.dashboard.test_evaluate_page import completed_run


def plant(workspace, run_id: str, classes: list[int], *, confidence, start: float, fmt: str = "keras",
          feedback: bool = False) -> None:
    rng = np.random.default_rng(len(classes))
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(buffer, format="PNG")
    PredictionLog(workspace).add(
        LoggedPrediction(id=f"{start:.0f}-{i}", run_id=run_id, created_at=start + i * 0.01, format=fmt, source="api",
                         latency_ms=5.0 + i % 7, batch_size=1, top1=c, top1_probability=float(np.broadcast_to(confidence, len(classes))[i]), entropy=0.5,
                         pixel_mean=100.0, pixel_std=30.0, feedback_label=(c if i % 2 else (c + 1) % 10)
                         if feedback else None, image=buffer.getvalue())
        for i, c in enumerate(classes))


def test_psi_bands():
    even = np.full(10, 100.0)  # counts per bin
    assert psi(even, even) == 0 and psi_band(0.0) == "no significant shift"
    assert psi_band(0.15) == "moderate shift" and psi_band(0.3) == "significant shift"
    assert psi(np.eye(10)[0] * 100, even) > 0.25  # everything in one class
    assert psi(even + np.arange(10), even) < 0.1  # a little unevenness is not drift


def test_report_sees_the_shift_from_the_test_mix_to_two_classes(workspace):
    run_id = completed_run(workspace)
    test = RunFolder(workspace, run_id).predictions()  # traffic like the test set: its predictions and confidence
    picks = np.random.default_rng(0).integers(0, len(test), 300)
    reference = [int(c) for c in test.predicted[picks]]
    plant(workspace, run_id, reference, confidence=test.confidence[picks], start=time.time() - 100, feedback=True)
    plant(workspace, run_id, [0, 1] * 150, confidence=0.45, start=time.time() - 50, fmt="int8")
    report = monitor_report(workspace, run_id)
    assert report["requests"] == 600 and set(report["latency"]) == {"keras", "int8"}
    windows = report["drift"]["windows"]
    assert windows[0]["level"] != "significant shift" and windows[-1]["level"] == "significant shift"
    assert report["live_accuracy"] == {"with_feedback": 300, "correct": 150, "accuracy": 0.5}
    assert len(report["least_confident"]) == 12 and all(r["probability"] == 0.45 for r in report["least_confident"])
    assert report["class_mix"]["test"] is not None and abs(sum(report["class_mix"]["served"]) - 1) < 1e-3


def test_monitor_cli_json(workspace):
    run_id = completed_run(workspace)
    plant(workspace, run_id, [3] * 120, confidence=0.7, start=time.time() - 10)
    out = subprocess.run([sys.executable, "-m", "engine", "monitor", run_id[-6:], "--json"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["requests"] == 120 and report["latency"]["keras"]["count"] == 120
    text = subprocess.run([sys.executable, "-m", "engine", "monitor", run_id], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert "120 predictions logged" in text.stdout and "significant shift" in text.stdout
    bad = subprocess.run([sys.executable, "-m", "engine", "monitor", run_id, "--window", "0"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: --window 0")


def served_run(workspace) -> str:
    """A completed run with a model file (the page never loads it: the prediction log is all it reads)."""
    run_id = completed_run(workspace)
    RunFolder(workspace, run_id).model_file.write_bytes(b"not loaded by the Monitor page")
    return run_id


def test_monitor_page_without_traffic_says_how_to_send_it(workspace):
    run_id = served_run(workspace)
    at = open_app("monitor", run=run_id)
    assert "No predictions logged for this run yet" in texts(at.info)
    assert any(f"/v1/models/{run_id}:classify_image" in c.value for c in at.code)


def test_monitor_page_shows_traffic_and_opens_a_logged_input_in_explain(workspace):
    run_id = served_run(workspace)
    start = round(time.time() - 30)
    plant(workspace, run_id, [0, 1] * 60, confidence=0.4, start=start, feedback=True)
    at = open_app("monitor", run=run_id)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Predictions logged"] == "120" and metrics["Live accuracy"] == "50.0%"
    assert len(at.get("plotly_chart")) == 5
    assert "significant shift" in texts(at.get("metric")) or any("significant" in str(m.proto) for m in at.metric)
    explain = [b for b in at.button if (b.key or "").startswith("monitor.explain.")]
    assert len(explain) == 12  # the least confident recent inputs
    log_id = explain[0].key.removeprefix("monitor.explain.")
    explain[0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert f"Logged input `{log_id}`" in texts(at.caption)  # on Explain now
