"""A real PostgreSQL server for the tests: started once per session in a temporary folder, stopped at the end.

`initdb` refuses to run as root, so as root the server's commands run as the `postgres` user (Debian's
package makes it) in a folder that user owns. The binaries are found on PATH, through `pg_config --bindir`,
or under Debian's /usr/lib/postgresql/*/bin. Without them the PostgreSQL tests skip here and fail in CI.
"""

from __future__ import annotations

import glob
import itertools
import os
import shlex
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

SERVER_USER = "postgres"


def find_bindir() -> Path | None:
    """The folder with `initdb`, `pg_ctl` and `postgres`, or None."""
    candidates = []
    if found := shutil.which("initdb"):
        candidates.append(Path(found).resolve().parent)
    if pg_config := shutil.which("pg_config"):
        try:
            candidates.append(Path(subprocess.run([pg_config, "--bindir"], capture_output=True, text=True,
                                                  timeout=10).stdout.strip()))
        except (OSError, subprocess.SubprocessError):
            pass
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    return next((c for c in candidates if (c / "initdb").is_file() and (c / "pg_ctl").is_file()), None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """One throwaway server on 127.0.0.1 (durability off: fsync and synchronous commit); `create_database` gives
    each test module or test its own empty database.

    Args:
        bindir: where `initdb` and `pg_ctl` are (`find_bindir()`).
    """

    def __init__(self, bindir: Path):
        self.bindir = bindir
        self.folder = Path(tempfile.mkdtemp(prefix="aperture-pg-"))
        self.data = self.folder / "data"
        self.port = _free_port()
        self.as_root = os.geteuid() == 0
        self._names = itertools.count()
        if self.as_root:
            shutil.chown(self.folder, SERVER_USER)
        self.folder.chmod(0o700)

    def _run(self, *command: str, timeout: float = 60) -> subprocess.CompletedProcess:
        argv = [str(self.bindir / command[0]), *command[1:]]
        if self.as_root:
            argv = ["su", SERVER_USER, "-s", "/bin/sh", "-c", shlex.join(argv)]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=True, cwd=self.folder)

    def start(self) -> PostgresServer:
        try:
            self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", SERVER_USER, "-E", "UTF8",
                      "--no-locale", "--no-sync")
            self.resume()
        except subprocess.CalledProcessError as error:
            log = (self.folder / "server.log")
            raise RuntimeError(f"PostgreSQL did not start: {error.stderr or error.stdout}"
                               f"{log.read_text()[-2000:] if log.exists() else ''}") from error
        return self

    def resume(self) -> None:
        """Starts the initialised server (again, after `pause`)."""
        options = (f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.folder / "server.log"), "-o", options,
                  "-w", "-t", "60", "start")

    def pause(self) -> None:
        """Stops the server, keeping its data (`resume` starts it again)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")

    def restart(self) -> None:
        """Stops the server (its clients' connections break) and starts it again on the same port."""
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.folder / "server.log"), "-m", "fast", "-w", "-t", "60",
                  "restart")

    def url(self, database: str = SERVER_USER) -> str:
        return f"postgresql://{SERVER_USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, prefix: str = "aperture") -> str:
        """A new empty database; returns its URL."""
        import psycopg

        name = f"{prefix}_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", timeout=30)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            pass  # never started, or already gone
        shutil.rmtree(self.folder, ignore_errors=True)
