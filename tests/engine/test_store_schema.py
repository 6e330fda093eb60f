"""The store's schema versions and migrations, on SQLite and on PostgreSQL: a new database, one made before
versions existed, several processes opening a new database at once, a database from a newer Aperture, and
what a bad APERTURE_DATABASE_URL says."""

from __future__ import annotations

import multiprocessing

import pytest

from engine import store
from engine.config import RunConfig
from engine.store import Workspace, schema
from engine.store.database import Database, StoreUnavailable

# The jobs table as it was before job requests lived in the index (and before schema_version).
_OLD_JOBS = """CREATE TABLE jobs (id TEXT PRIMARY KEY, run_id TEXT NOT NULL, kind TEXT NOT NULL, status TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL, started_at DOUBLE PRECISION, finished_at DOUBLE PRECISION,
    heartbeat_at DOUBLE PRECISION, host TEXT, pid INTEGER, cancel_requested_at DOUBLE PRECISION,
    progress DOUBLE PRECISION NOT NULL DEFAULT 0, message TEXT NOT NULL DEFAULT '', error TEXT, traceback TEXT)"""


@pytest.fixture
def workspace(store_workspace):
    return store_workspace


def _versions(database: Database) -> list[int]:
    with database.connect() as db:
        return [r["version"] for r in db.execute("SELECT version FROM schema_version ORDER BY version")]


def test_a_new_database_is_at_the_latest_version_with_every_table(workspace):
    assert _versions(workspace.database) == [number for number, _, _ in schema.MIGRATIONS]
    with workspace.database.connect() as db:
        assert schema.current_version(workspace.database, db) == schema.LATEST == 3
        assert all(workspace.database.has_table(db, t) for t in ("runs", "jobs", "metrics", "prediction_log",
                                                                   "sweeps", "sweep_trials"))
        assert "request_json" in workspace.database.columns(db, "jobs")
    assert schema.migrate(workspace.database) == schema.LATEST  # opening again changes nothing
    assert len(_versions(workspace.database)) == schema.LATEST


def test_a_database_from_before_versions_is_migrated_and_its_old_queued_jobs_failed(workspace):
    database = workspace.database
    with database.connect(immediate=True) as db:  # back to an index from before request_json and versions
        for table in ("schema_version", "jobs", "sweep_trials", "sweeps"):
            db.execute(f"DROP TABLE {table}")
        db.execute(_OLD_JOBS)
        for job_id, kind in (("j-train", "train"), ("j-export", "export")):
            db.execute("INSERT INTO jobs (id, run_id, kind, status, created_at) VALUES (?, 'r', ?, 'queued', 1.0)",
                       (job_id, kind))
    reopened = Workspace(workspace.root, database_url=database.url)
    assert _versions(reopened.database) == [1, 2, 3]
    assert reopened.get_job("j-export").status == store.FAILED
    assert reopened.get_job("j-export").error == "queued before an upgrade of Aperture: submit it again"
    assert reopened.get_job("j-train").status == store.QUEUED, "a train job reads its run's config: it still runs"
    with reopened.database.connect() as db:
        assert reopened.database.has_table(db, "sweeps")


def _open(root, url, ready, go):
    ready.wait()
    go.wait()
    Workspace(root, database_url=url).create_run(RunConfig())


def test_processes_opening_a_new_database_at_once_migrate_it_once(workspace, tmp_path):
    """Six processes open one new database at the same moment: each migration is applied once, none fails."""
    url = workspace.database.url
    if url:  # a second, untouched database on the same server
        with workspace.database.connect() as db:
            name = db.execute("SELECT current_database() AS name").fetchone()["name"]
        from psycopg import connect

        with connect(url, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}_race"')
        url = url.rsplit("/", 1)[0] + f"/{name}_race"
    root = tmp_path / "race"
    context = multiprocessing.get_context("spawn")
    ready, go = context.Barrier(7), context.Event()
    workers = [context.Process(target=_open, args=(root, url, ready, go)) for _ in range(6)]
    for w in workers:
        w.start()
    ready.wait()
    go.set()
    for w in workers:
        w.join(60)
    assert [w.exitcode for w in workers] == [0] * 6
    opened = Workspace(root, database_url=url)
    assert _versions(opened.database) == [1, 2, 3] and len(opened.list_runs()) == 6


def test_a_database_from_a_newer_aperture_is_refused(workspace):
    with workspace.database.connect() as db:
        db.execute("INSERT INTO schema_version (version, description, applied_at) VALUES (99, 'future', 0)")
    with pytest.raises(RuntimeError, match="schema version 99, newer than this Aperture's 3"):
        Workspace(workspace.root, database_url=workspace.database.url)


def test_a_bad_database_url_says_what_is_wrong(tmp_path, postgres_server):
    with pytest.raises(ValueError, match=r"APERTURE_DATABASE_URL='mysql://me:\*\*\*@db/x': expected postgresql://"):
        Workspace(tmp_path, database_url="mysql://me:secret@db/x")
    unused = f"postgresql://me:secret@127.0.0.1:{postgres_server.port + 1}/x"  # nothing listens there
    with pytest.raises(StoreUnavailable, match=r"cannot reach the store's database at postgresql://me:\*\*\*@") as caught:
        Workspace(tmp_path, database_url=unused)
    assert "secret" not in str(caught.value)
    missing = postgres_server.url("no_such_database")
    with pytest.raises(StoreUnavailable, match="no_such_database"):
        Workspace(tmp_path, database_url=missing)
