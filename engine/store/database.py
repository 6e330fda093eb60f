"""`Database`: where the store's index lives, SQLite by default or PostgreSQL by URL, and how to talk to it.

`APERTURE_DATABASE_URL` unset keeps the embedded default, the SQLite file `aperture.db` in the workspace
(WAL, so readers never block the writing job). `APERTURE_DATABASE_URL=postgresql://user@host:port/name`
selects a PostgreSQL server through psycopg 3 with one connection pool per process. This module owns
what differs between the two and nothing else: connecting, transactions (`BEGIN IMMEDIATE` on SQLite; an
advisory lock and `FOR UPDATE SKIP LOCKED` on PostgreSQL), the `?` placeholders every query is written
with (PostgreSQL's driver wants `%s`), rows read by column name, and the catalogue questions migrations ask.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import sqlite3
import threading
import time
import zlib
from pathlib import Path
from typing import Any, Iterable, Iterator
from urllib.parse import urlsplit, urlunsplit

DATABASE_URL_ENV = "APERTURE_DATABASE_URL"
POOL_SIZE_ENV = "APERTURE_DATABASE_POOL"  # most connections one process opens to PostgreSQL (default 10)
SQLITE, POSTGRESQL = "sqlite", "postgresql"
_SCHEMES = {"postgresql": "postgresql", "postgres": "postgresql", "postgresql+psycopg": "postgresql"}
_CONNECT_SECONDS = 10
POOL_WAIT_SECONDS = 10.0  # the longest a call waits for a pooled connection (a busy pool, or a server gone)
_pools: dict[tuple[str, int], Any] = {}  # (url, pid) -> psycopg_pool.ConnectionPool; a forked child opens its own
_pools_lock = threading.Lock()


class StoreUnavailable(ConnectionError):
    """The store's database server cannot be reached (the message names it, without its password)."""


def redacted(url: str) -> str:
    """`url` without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{netloc}"))


class Database:
    """The store's database: a SQLite file, or a PostgreSQL server reached through a pool.

    Args:
        sqlite_path: the SQLite file used when `url` is None.
        url: `postgresql://user[:password]@host[:port]/name` (also `postgres://`, `postgresql+psycopg://`),
            or None for SQLite. Anything else raises ValueError naming the value.
    """

    def __init__(self, sqlite_path: Path, url: str | None = None):
        self.url = url or None
        self.path = None if self.url else Path(sqlite_path)
        if self.url is None:
            self.dialect = SQLITE
            _use_wal(self.path)
            return
        scheme = urlsplit(self.url).scheme
        if scheme not in _SCHEMES:
            raise ValueError(f"{DATABASE_URL_ENV}={redacted(self.url)!r}: expected postgresql://user@host:port/name "
                             "(or unset it for the SQLite file in the workspace)")
        self.dialect = POSTGRESQL
        self._conninfo = urlunsplit(urlsplit(self.url)._replace(scheme="postgresql"))
        self._pool = _pool(self._conninfo)

    def __repr__(self) -> str:
        return f"Database({str(self.path) if self.path else redacted(self.url)!r})"

    @property
    def label(self) -> str:
        """Where the index is, for people: the SQLite file or the server URL without its password."""
        return str(self.path) if self.path else redacted(self.url)

    # -- transactions --------------------------------------------------------------------

    @contextlib.contextmanager
    def connect(self, *, immediate: bool = False) -> Iterator[Connection]:
        """One transaction on a connection, committed on success and rolled back on any error.

        Args:
            immediate: take the write lock at the start (SQLite's `BEGIN IMMEDIATE`, so two read-then-write
                transactions never deadlock); on PostgreSQL rows are locked as statements reach them.
        """
        if self.dialect == SQLITE:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.row_factory = sqlite3.Row
            try:
                db.execute("PRAGMA busy_timeout=30000")
                db.execute("PRAGMA synchronous=NORMAL")
                db.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
                try:
                    yield Connection(db, SQLITE)
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
            finally:
                db.close()
            return
        import psycopg
        from psycopg_pool import PoolTimeout

        try:
            with self._pool.connection() as db:  # commits when the block ends, rolls back on an exception
                yield Connection(db, POSTGRESQL)
        except (psycopg.OperationalError, PoolTimeout) as error:  # the server went away, or never answered
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise StoreUnavailable(f"lost the store's database at {self.label}: {reason}") from error

    def lock(self, db: Connection, name: str) -> None:
        """Holds the lock `name` until `db`'s transaction ends, so one process at a time passes (PostgreSQL's
        advisory lock; on SQLite a transaction begun `immediate` already holds the one write lock)."""
        if self.dialect == POSTGRESQL:
            db.execute("SELECT pg_advisory_xact_lock(?)", (zlib.crc32(name.encode()),)).fetchall()

    @property
    def skip_locked(self) -> str:
        """The clause that makes a `SELECT` lock its rows and pass over rows another transaction holds."""
        return " FOR UPDATE SKIP LOCKED" if self.dialect == POSTGRESQL else ""

    def keep_warm(self) -> sqlite3.Connection | None:
        """An idle connection for a long-lived writer to hold (the model server's): SQLite checkpoints and syncs
        the WAL whenever the *last* connection to a file closes, which each short-lived write otherwise is
        (15-30 ms a batch, measured). PostgreSQL's pool keeps its connections anyway: None."""
        if self.dialect != SQLITE:
            return None
        keeper = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        keeper.execute("SELECT COUNT(*) FROM sqlite_master").fetchall()  # opens the WAL; holds no lock
        return keeper

    # -- the catalogue -------------------------------------------------------------------

    def has_table(self, db: Connection, table: str) -> bool:
        if self.dialect == SQLITE:
            query = "SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?"
        else:
            query = "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() " \
                    "AND table_name = ?"
        return db.execute(query, (table,)).fetchone() is not None

    def columns(self, db: Connection, table: str) -> set[str]:
        """The names of `table`'s columns."""
        if self.dialect == SQLITE:
            return {row["name"] for row in db.execute(f"PRAGMA table_info({table})")}
        return {row["column_name"] for row in db.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = ?", (table,))}

    # -- other clients of the same database ----------------------------------------------------

    @property
    def sqlalchemy_url(self) -> str:
        """The same database as a SQLAlchemy URL (Optuna's RDB storage): `sqlite:///…` or
        `postgresql+psycopg://…` (SQLAlchemy's dialect for psycopg 3)."""
        if self.dialect == SQLITE:
            return f"sqlite:///{self.path}"
        return urlunsplit(urlsplit(self.url)._replace(scheme="postgresql+psycopg"))

    @property
    def sqlalchemy_connect_args(self) -> dict[str, Any]:
        return {"timeout": 30} if self.dialect == SQLITE else {"connect_timeout": _CONNECT_SECONDS}


class Connection:
    """One connection inside a transaction; queries use `?` placeholders on both databases, and rows are read by
    column name (`row["id"]`, `dict(row)`)."""

    def __init__(self, raw: Any, dialect: str):
        self.raw, self.dialect = raw, dialect

    def execute(self, query: str, params: Iterable[Any] = ()) -> Any:
        if self.dialect == SQLITE:
            return self.raw.execute(query, tuple(params))
        return self.raw.execute(_postgres_query(query), tuple(params))

    def executemany(self, query: str, rows: Iterable[Iterable[Any]]) -> None:
        if self.dialect == SQLITE:
            self.raw.executemany(query, rows)
        else:
            self.raw.cursor().executemany(_postgres_query(query), [tuple(r) for r in rows])


@functools.lru_cache(maxsize=512)
def _postgres_query(query: str) -> str:
    """`?` placeholders as psycopg's `%s` (a literal `%` doubled); the store's SQL has no `?` inside strings."""
    return query.replace("%", "%%").replace("?", "%s")


def _use_wal(path: Path, wait_seconds: float = 30.0) -> None:
    """Puts the SQLite file at `path` in WAL mode (readers never block the writing job). Switching a new file's
    journal mode needs it alone, and SQLite answers "database is locked" at once, without its busy handler,
    while another process is opening the same new file: so it is tried again until `wait_seconds` pass."""
    deadline = time.monotonic() + wait_seconds
    pause = 0.01
    while True:
        db = sqlite3.connect(path, timeout=wait_seconds, isolation_level=None)
        try:
            db.execute(f"PRAGMA busy_timeout={int(wait_seconds * 1000)}")
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
        finally:
            db.close()
        time.sleep(pause)
        pause = min(pause * 2, 0.2)


def _pool(conninfo: str):
    """This process's pool for `conninfo`, opened on first use after one direct connection proves the server is
    there (a pool would otherwise retry quietly for its whole timeout)."""
    key = (conninfo, os.getpid())
    with _pools_lock:
        if key in _pools:
            return _pools[key]
        import psycopg
        from psycopg.rows import dict_row
        from psycopg_pool import ConnectionPool

        try:
            psycopg.connect(conninfo, connect_timeout=_CONNECT_SECONDS).close()
        except psycopg.Error as error:
            reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
            raise StoreUnavailable(f"cannot reach the store's database at {redacted(conninfo)}: {reason}") from None
        size = max(1, int(os.environ.get(POOL_SIZE_ENV) or 10))
        # `check` costs a round trip per checkout and spares a restarted server's first callers an error each.
        pool = ConnectionPool(conninfo, min_size=1, max_size=size, kwargs={"row_factory": dict_row},
                              check=ConnectionPool.check_connection, timeout=POOL_WAIT_SECONDS, name="aperture-store",
                              open=True)
        atexit.register(pool.close)
        _pools[key] = pool
        return pool
