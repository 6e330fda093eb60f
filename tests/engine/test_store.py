"""The store's index on both kinds of database: SQLite in the workspace and a real PostgreSQL server."""

import multiprocessing
import sqlite3

import pytest

from engine import store
from engine.config import RunConfig
from engine.store import EpochMetrics, RunNotFound, Workspace
from engine.runfolder import RunFolder


@pytest.fixture
def workspace(store_workspace):
    return store_workspace


def test_create_run_writes_row_folder_config_and_queued_job(workspace):
    run = workspace.create_run(RunConfig(name="first"))
    assert run.status == store.QUEUED and run.label == "first"
    assert RunConfig.from_json(RunFolder(workspace, run.id).config_file.read_text()) == RunConfig(name="first")
    assert [r.id for r in workspace.list_runs()] == [run.id]


@pytest.mark.parametrize("store_workspace", ["sqlite"], indirect=True)
def test_the_sqlite_index_is_in_the_workspace_and_in_wal_mode(workspace):
    assert workspace.database.dialect == "sqlite" and workspace.db_path == workspace.root / "aperture.db"
    journal = sqlite3.connect(workspace.db_path).execute("PRAGMA journal_mode").fetchone()[0]
    assert journal == "wal"


def test_list_runs_newest_first_with_latest_job(workspace):
    first = workspace.create_run(RunConfig())
    second = workspace.create_run(RunConfig())
    assert [r.id for r in workspace.list_runs()] == [second.id, first.id]


def test_dataset_label_is_the_folder_name(workspace):
    run = workspace.create_run(RunConfig.from_dict({"data": {"source": "/data/my photos"}}))
    assert run.dataset == "my photos"


def test_resolve_run_id_by_prefix_or_suffix(workspace):
    run = workspace.create_run(RunConfig())
    assert workspace.resolve_run_id(run.id[-4:]) == run.id
    assert workspace.resolve_run_id(run.id) == run.id
    with pytest.raises(RunNotFound):
        workspace.resolve_run_id("nope")
    with pytest.raises(RunNotFound):
        workspace.resolve_run_id("")


def test_claim_respects_the_limit_and_queue_order(workspace):
    a = workspace.create_run(RunConfig()).job
    b = workspace.create_run(RunConfig()).job
    claimed = workspace.claim_next_job(1)
    assert claimed.id == a.id and claimed.status == store.RUNNING
    assert workspace.claim_next_job(1) is None
    assert workspace.claim_next_job(2).id == b.id


def test_finish_job_only_once(workspace):
    job = workspace.create_run(RunConfig()).job
    assert workspace.finish_job(job.id, store.FAILED, error="boom")
    assert not workspace.finish_job(job.id, store.COMPLETED)
    assert workspace.get_job(job.id).status == store.FAILED
    with pytest.raises(ValueError):
        workspace.finish_job(job.id, store.RUNNING)


def test_epoch_metrics_upsert_and_progress(workspace):
    run = workspace.create_run(RunConfig())
    workspace.add_epoch(run.id, EpochMetrics(1, loss=1.0, val_accuracy=0.5))
    workspace.add_epoch(run.id, EpochMetrics(1, loss=0.9, val_accuracy=0.6))
    workspace.add_epoch(run.id, EpochMetrics(2, loss=0.5))
    assert [(e.epoch, e.loss) for e in workspace.epochs(run.id)] == [(1, 0.9), (2, 0.5)]
    assert workspace.get_run(run.id).epochs_done == 2


def test_delete_run_removes_rows_and_folder(workspace):
    run = workspace.create_run(RunConfig())
    workspace.add_epoch(run.id, EpochMetrics(1))
    workspace.delete_run(run.id)
    assert not RunFolder(workspace, run.id).path.exists()
    assert workspace.list_runs() == [] and workspace.epochs(run.id) == []


def test_update_run_refuses_unknown_columns(workspace):
    run = workspace.create_run(RunConfig())
    workspace.update_run(run.id, params=123, device="CPU")
    assert workspace.get_run(run.id).params == 123
    with pytest.raises(ValueError):
        workspace.update_run(run.id, status="completed")


def _hammer(root, database_url, run_id, job_id, worker):
    ws = Workspace(root, database_url=database_url)
    for i in range(60):
        ws.add_epoch(run_id, EpochMetrics(worker * 1000 + i, loss=float(i)))
        ws.heartbeat(job_id, progress=i / 60, message=f"w{worker} {i}")
        ws.list_runs()


def test_many_writers_never_see_database_locked(workspace):
    run = workspace.create_run(RunConfig())
    context = multiprocessing.get_context("spawn")
    args = (workspace.root, workspace.database.url, run.id, run.job.id)
    workers = [context.Process(target=_hammer, args=(*args, w)) for w in range(4)]
    for w in workers:
        w.start()
    _hammer(*args, 9)
    for w in workers:
        w.join(60)
        assert w.exitcode == 0
    assert len(workspace.epochs(run.id)) == 5 * 60


def test_concurrent_claimers_keep_the_limit_and_never_take_a_job_twice(workspace):
    """Twelve threads claim at once from a queue of 30 with a limit of 5 (on PostgreSQL, through the pool)."""
    import threading

    run = workspace.create_run(RunConfig())
    queued = [run.job.id] + [f"job-{i:02d}" for i in range(29)]  # ids of our own: new_id() has 16 random bits
    with workspace._connect() as db:
        db.executemany("INSERT INTO jobs (id, run_id, kind, status, created_at) VALUES (?, ?, 'export', 'queued', ?)",
                       [(job_id, run.id, 2e9 + i) for i, job_id in enumerate(queued[1:])])
    go, claimed = threading.Barrier(12), []

    def claim() -> None:
        go.wait()
        for _ in range(10):
            if (job := workspace.claim_next_job(5)) is not None:
                claimed.append(job.id)

    threads = [threading.Thread(target=claim) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(claimed) == 5 and len(set(claimed)) == 5 and sorted(claimed) == queued[:5]  # the oldest five
    assert sorted(claimed) == sorted(j.id for j in workspace.jobs(statuses=(store.RUNNING,)))


@pytest.mark.parametrize("store_workspace", ["postgresql"], indirect=True)
def test_the_store_carries_on_after_the_postgresql_server_restarts(workspace, postgres_server):
    """The pool's connections break with the server; the next calls get fresh ones and lose nothing."""
    run = workspace.create_run(RunConfig())
    workspace.heartbeat(run.job.id, progress=0.5)
    postgres_server.restart()
    for _ in range(3):  # more calls than the pool has idle connections
        assert workspace.get_run(run.id).job.progress == 0.5
    workspace.add_epoch(run.id, EpochMetrics(1, loss=0.5))
    assert [m.epoch for m in workspace.epochs(run.id)] == [1]


@pytest.mark.parametrize("store_workspace", ["postgresql"], indirect=True)
def test_a_stopped_postgresql_server_is_named_in_the_error_and_nothing_is_lost(workspace, postgres_server,
                                                                                monkeypatch):
    from engine.store import database

    monkeypatch.setattr(database, "POOL_WAIT_SECONDS", 2.0)  # instead of 10 s
    workspace = Workspace(workspace.root, database_url=postgres_server.create_database())  # a pool made with it
    run = workspace.create_run(RunConfig())
    postgres_server.pause()
    try:
        with pytest.raises(store.StoreUnavailable, match=r"lost the store's database at postgresql://postgres@127"):
            workspace.heartbeat(run.job.id, progress=0.5)
    finally:
        postgres_server.resume()
    assert workspace.get_run(run.id).job.progress == 0.0  # the failed beat left nothing half-written
    workspace.heartbeat(run.job.id, progress=0.5)
    assert workspace.get_run(run.id).job.progress == 0.5


def test_two_runs_that_draw_the_same_id_get_two_folders(tmp_path, monkeypatch):
    """Ids made in one second differ in 16 random bits: a drawn id whose folder exists is drawn again."""
    from engine.store import workspace as workspace_module

    drawn = ["20261202-120000-beef", "20261202-120000-beef", "20261202-120000-cafe"]
    real = workspace_module.new_id
    monkeypatch.setattr(workspace_module, "new_id", lambda: drawn.pop(0) if drawn else real())  # jobs draw too
    ws = Workspace(tmp_path)
    first = ws.create_run(RunConfig()).id  # draws beef; its job draws the second beef (no folder: a job id)
    drawn[:0] = ["20261202-120000-beef"]
    second = ws.create_run(RunConfig()).id  # draws beef (taken), then cafe
    assert (first, second) == ("20261202-120000-beef", "20261202-120000-cafe")
    assert sorted(r.id for r in ws.list_runs()) == [first, second]
