"""A throwaway PostgreSQL cluster for the tests and the bench (Debian's `postgresql`).

    pg_unavailable_reason() -> str    "" when a cluster can be started here
    PgCluster(fsync=False)            initdb in a temp dir, pg_ctl start on a free
                                      loopback port, unix socket in the temp dir;
                                      .url(db), .create_database(), .stop(), .start(),
                                      .destroy()
    pg_cluster                        session fixture: one cluster for the whole run
    pg_url                            a fresh, empty database per test

As root (the tests and CI run as root) initdb and pg_ctl run as the `postgres`
OS user, which owns the temp dir; otherwise as the current user. Where the
binaries are missing the fixtures skip, unless MAILGUARD_REQUIRE_POSTGRES=1
(CI sets it): then they fail, so a broken harness cannot pass quietly.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest

REQUIRED = os.environ.get("MAILGUARD_REQUIRE_POSTGRES") == "1"
_counter = itertools.count(1)


def pg_bindir() -> Path | None:
    for cand in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True):
        if os.access(os.path.join(cand, "initdb"), os.X_OK):
            return Path(cand)
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def pg_unavailable_reason() -> str:
    if pg_bindir() is None:
        return "PostgreSQL binaries not found (apt-get install postgresql)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root but there is no `postgres` OS user to run the server"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed"
    return ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgCluster:
    def __init__(self, *, fsync: bool = False) -> None:
        reason = pg_unavailable_reason()
        if reason:
            raise RuntimeError(reason)
        self.bin = pg_bindir()
        self.root = Path(tempfile.mkdtemp(prefix="mailguard-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        os.chmod(self.root, 0o700)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                  "--no-locale", "--no-sync")
        with open(self.data / "postgresql.conf", "a", encoding="utf-8") as f:
            f.write(f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                    f"unix_socket_directories = '{self.root}'\nmax_connections = 200\n"
                    f"fsync = {'on' if fsync else 'off'}\nfull_page_writes = {'on' if fsync else 'off'}\n")
        self.start()

    def _run(self, tool: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        cmd = [str(self.bin / tool), *args]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        r = subprocess.run(cmd, capture_output=True, timeout=timeout, cwd=self.root)
        if r.returncode != 0:
            raise RuntimeError(f"{tool} failed: {r.stderr.decode(errors='replace')[-1500:]}")
        return r

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w", "-t", "30", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def create_database(self, name: str | None = None) -> str:
        import psycopg

        name = name or f"t{os.getpid()}_{next(_counter)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        except RuntimeError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)


def unavailable(reason: str) -> None:
    if REQUIRED:
        pytest.fail(f"MAILGUARD_REQUIRE_POSTGRES=1 but: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    reason = pg_unavailable_reason()
    if reason:
        unavailable(reason)
    try:
        cluster = PgCluster()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        unavailable(f"cannot start a PostgreSQL cluster: {exc}")
    yield cluster
    cluster.destroy()


@pytest.fixture
def pg_url(pg_cluster: PgCluster) -> str:
    return pg_cluster.create_database()


def wait_until(pred, timeout: float = 20.0, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return False
