"""The Train form's `train.workers` setting: more than one worker is refused on the local backend, by the field."""

from __future__ import annotations

from tests.dashboard.apptest import open_app, texts


def test_two_workers_on_the_local_backend_are_refused_next_to_the_field(workspace, monkeypatch):
    monkeypatch.delenv("APERTURE_BACKEND", raising=False)
    at = open_app("train")
    at.number_input(key="cfg.train.workers").set_value(2).run()
    at.button(key="train.start").click().run()
    assert not at.exception
    assert "Workers (processes): training one model across 2 workers needs the Ray backend" in texts(at.error)
    assert workspace.list_runs() == []
