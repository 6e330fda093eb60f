"""The Train and Runs pages when jobs go to a Ray cluster that cannot be reached (AppTest, no cluster needed).

A Ray run shown on the Runs page is tested with a real cluster in tests/engine/jobs/test_ray_cluster.py.
"""

from __future__ import annotations

import pytest

from engine.jobs.backends import ray as ray_backend
from tests.dashboard.apptest import open_app, texts


@pytest.fixture
def unreachable_ray(monkeypatch):
    monkeypatch.setenv("APERTURE_BACKEND", "ray")
    monkeypatch.setenv(ray_backend.ADDRESS_ENV, "http://127.0.0.1:1")  # nothing listens on port 1
    monkeypatch.setenv("APERTURE_STANDBY", "0")


def test_start_says_the_cluster_cannot_be_reached_and_records_nothing(workspace, unreachable_ray):
    at = open_app("train")
    at.button(key="train.start").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert ("Could not start the run: the Ray cluster at RAY_ADDRESS=http://127.0.0.1:1 cannot be reached"
            in texts(at.error))
    assert workspace.list_runs() == []


def test_the_runs_page_still_opens_while_the_cluster_is_away(workspace, unreachable_ray):
    from engine.config import RunConfig

    run = workspace.create_run(RunConfig.from_dict({"name": "on ray"}))
    workspace.claim_next_job(limit=1)
    at = open_app("runs", run=run.id)
    assert not at.exception
    assert at.progress, "a running job is left to its heartbeat while Ray cannot be asked"
    assert "(no output yet)" in texts(at.code)
