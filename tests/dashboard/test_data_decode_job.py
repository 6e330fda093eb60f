"""The Data page decodes a set too big to decode on the page in a `decode` job: progress, Cancel, then the preview
from the cache; a second session attaches to the same job."""

from __future__ import annotations

import time

from engine import jobs, store
from engine.data.decode_job import DecodeRequest
from engine.store.workspace import DECODE_JOB
from tests.dashboard.apptest import texts
from tests.dashboard.test_pages import _until, open_page
from tests.engine.jobs.test_task_jobs import write_jpegs, write_slow_pngs


def _open_folder(folder, size: int = 16):
    at = open_page()
    at.number_input(key="data.image_size").set_value(size).run()
    at.segmented_control(key="data.kind").set_value("Folder on the server").run()
    at.text_input(key="data.folder").input(str(folder)).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_a_big_folder_decodes_in_a_job_with_progress_then_shows_the_preview(workspace, tmp_path):
    folder = write_jpegs(tmp_path / "photos", per_class=100)
    at = _open_folder(folder)
    job = workspace.latest_job(DecodeRequest.of(str(folder), 16).task_id, DECODE_JOB)
    assert job is not None, "300 images: a job, not the page's thread"
    assert any("Decoding into the cache" in p.proto.text for p in at.get("progress"))
    second = _open_folder(folder)  # another session: attaches to the same job
    assert [j.id for j in workspace.jobs() if j.kind == DECODE_JOB] == [job.id]
    _until(at, lambda a: "Images" in {m.label for m in a.metric})
    assert not at.exception and not at.error, texts(at.error)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Images"] == "300" and metrics["Classes"] == "3"
    assert "300 images decoded at 16×16" in texts(at.caption)
    assert workspace.get_job(job.id).status == store.COMPLETED
    _until(second, lambda a: "Images" in {m.label for m in a.metric})
    assert {m.label: m.value for m in second.metric}["Images"] == "300"


def test_a_decode_job_cancelled_from_the_page_says_so_and_can_run_again(workspace, tmp_path):
    folder = write_slow_pngs(tmp_path / "big")
    at = _open_folder(folder, 32)
    task = DecodeRequest.of(str(folder), 32).task_id
    job = workspace.latest_job(task, DECODE_JOB)
    deadline = time.monotonic() + 60
    while "images/s" not in workspace.get_job(job.id).message and time.monotonic() < deadline:
        jobs.refresh(workspace)
        time.sleep(0.2)
    at.run()
    assert "images/s" in " ".join(p.proto.text for p in at.get("progress"))
    at.button(key="data.decode.cancel").click().run()
    _until(at, lambda a: "cancelled" in texts(a.warning))
    assert workspace.get_job(job.id).status == store.CANCELLED
    assert "Decoding was cancelled" in texts(at.warning)
    at.button(key="data.decode.again").click().run()
    again = workspace.latest_job(task, DECODE_JOB)
    assert again.id != job.id and again.active
    jobs.cancel_job(again.id, workspace)
