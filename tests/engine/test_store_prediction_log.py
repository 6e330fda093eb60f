"""The prediction log's own SQL on SQLite and on PostgreSQL: writes, reads, bounds, feedback and forgetting.
(What the model server logs through it: tests/engine/serve/test_api.py.)"""

from __future__ import annotations

import pytest

from engine.config import RunConfig
from engine.store import LoggedPrediction, LogNotFound, PredictionLog, prediction_log


@pytest.fixture
def workspace(store_workspace):
    return store_workspace


def _row(run_id: str, n: int, *, image: bytes | None = b"\x89PNG\x00 bytes") -> LoggedPrediction:
    return LoggedPrediction(id=f"{run_id}-{n:03d}", run_id=run_id, created_at=1000.0 + n, format="keras", source="api",
                            latency_ms=2.5, batch_size=4, top1=n % 3, top1_probability=0.3 + n / 100, entropy=0.7,
                            pixel_mean=0.5, pixel_std=0.25, image=image)


def test_rows_read_back_as_written_with_their_image_and_feedback(workspace):
    run = workspace.create_run(RunConfig())
    log = PredictionLog(workspace, hold_open=True)
    log.add([_row(run.id, n) for n in range(5)])
    assert log.count(run.id) == 5 and log.count("other") == 0
    assert [r.id for r in log.recent(run.id)] == [f"{run.id}-{n:03d}" for n in range(5)]  # oldest first
    assert [r.id for r in log.recent(run.id, limit=2)] == [f"{run.id}-003", f"{run.id}-004"]
    assert [r.id for r in log.recent(run.id, since=1002.0)] == [f"{run.id}-003", f"{run.id}-004"]
    first = log.get(f"{run.id}-000")
    assert first == _row(run.id, 0) and first.image == b"\x89PNG\x00 bytes"  # bytes with a NUL survive
    assert [r.id for r in log.least_confident(run.id, limit=2)] == [f"{run.id}-000", f"{run.id}-001"]
    judged = log.set_feedback(f"{run.id}-001", 1)
    assert judged.feedback_label == 1 and judged.correct and judged.feedback_at is not None
    assert not log.set_feedback(f"{run.id}-001", 2).correct  # a later label replaces the first
    with pytest.raises(LogNotFound, match="no logged prediction 'nope'"):
        log.set_feedback("nope", 1)
    with pytest.raises(LogNotFound):
        log.get("nope")


def test_the_log_keeps_its_bounds_per_run_and_goes_with_the_run(workspace, monkeypatch):
    monkeypatch.setattr(prediction_log, "KEEP_ROWS", 6)
    monkeypatch.setattr(prediction_log, "KEEP_IMAGES", 3)
    run, other = workspace.create_run(RunConfig()), workspace.create_run(RunConfig())
    log = PredictionLog(workspace)
    log.add([_row(run.id, n) for n in range(5)] + [_row(other.id, 0)])
    log.add([_row(run.id, n) for n in range(5, 10)])
    kept = log.recent(run.id)
    assert [r.id for r in kept] == [f"{run.id}-{n:03d}" for n in range(4, 10)]  # the newest 6
    assert [r.id for r in log.least_confident(run.id, limit=10)] == [f"{run.id}-{n:03d}" for n in (7, 8, 9)]
    assert log.get(f"{run.id}-006").image is None and log.get(f"{run.id}-007").image is not None
    assert log.count(other.id) == 1  # another run's rows are bounded on their own
    workspace.delete_run(run.id)
    assert log.count(run.id) == 0 and log.count(other.id) == 1
    log.forget(other.id)
    assert log.count(other.id) == 0
