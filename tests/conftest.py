"""Shared fixtures: an isolated workspace, tiny image folders made on the fly, a real PostgreSQL server."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.jobs import STANDBY_ENV
from engine.store import DATABASE_URL_ENV, HOME_ENV, Workspace
from tests import pg
from tests.helpers.images import write_image_folder

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ[STANDBY_ENV] = "0"  # tests that want the warm standby turn it on themselves


def _open_workspace(root: Path, monkeypatch, database_url: str | None = None) -> Workspace:
    """A workspace at `root` on SQLite (or the given PostgreSQL database), exported for child processes."""
    monkeypatch.setenv(HOME_ENV, str(root))
    if database_url:
        monkeypatch.setenv(DATABASE_URL_ENV, database_url)
    else:
        monkeypatch.delenv(DATABASE_URL_ENV, raising=False)
    return Workspace(root)


@pytest.fixture
def workspace(tmp_path, monkeypatch) -> Workspace:
    """A fresh workspace on SQLite, also exported as APERTURE_HOME for child processes."""
    return _open_workspace(tmp_path / "workspace", monkeypatch)


# -- PostgreSQL --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server for the session (skipped without its binaries; in CI their absence fails)."""
    bindir = pg.find_bindir()
    if bindir is None:
        message = "PostgreSQL's server binaries (initdb, pg_ctl) are not installed: apt-get install postgresql"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)  # CI must never silently skip the PostgreSQL tests
        pytest.skip(message)
    server = pg.PostgresServer(bindir).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def postgres_url(postgres_server) -> str:
    """The URL of a fresh PostgreSQL database for this test module."""
    return postgres_server.create_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_workspace(request, tmp_path, monkeypatch) -> Workspace:
    """A fresh workspace on each kind of store: SQLite, then a new database on the test PostgreSQL server
    (exported as APERTURE_DATABASE_URL for child processes). A module runs its tests on both with
    `@pytest.fixture def workspace(store_workspace): return store_workspace`."""
    url = request.getfixturevalue("postgres_server").create_database() if request.param == "postgresql" else None
    return _open_workspace(tmp_path / "workspace", monkeypatch, url)


@pytest.fixture
def image_folder(tmp_path):
    """A folder of three classes of twelve 16x16 PNGs each."""
    return write_image_folder(tmp_path / "images")


# -- tests/hostile: nothing outside the workspace may change -----------------------------


def _tree(root: Path, skip: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under `root` except `skip`, with its size and mtime."""
    found = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if Path(folder, d) != skip]
        for name in dirs + files:
            path = Path(folder, name)
            info = path.lstat()
            found[str(path.relative_to(root))] = (info.st_size if path.is_file() else 0, info.st_mtime_ns)
    return found


@pytest.fixture
def untouched_outside(tmp_path, workspace):
    """Fails the test if anything under tmp_path but outside the workspace was created or changed."""
    before = _tree(tmp_path, workspace.root)
    yield before
    after = _tree(tmp_path, workspace.root)
    assert after == before, f"changed outside the workspace: {sorted(set(after.items()) ^ set(before.items()))[:5]}"
