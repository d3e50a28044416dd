"""A real PostgreSQL server (Debian's postgresql) on 127.0.0.1 for the store and replica tests.

initdb into a temp folder owned by the ``postgres`` user (PostgreSQL refuses to
run as root), then the server itself in the foreground, as that user, on a free
port on loopback. TCP logins need a password (scram-sha-256), as in production:
deskbot logs in as ``deskbot`` with ``DESKBOT_DB_PASSWORD``. Each test takes a
database of its own (``database()``), so tests sharing the server do not meet.
The server gets SIGKILL when the test process dies, so a killed run leaves
nothing behind; its port comes from tests/peers.py's ``start_on_free_port``.
"""

from __future__ import annotations

import ctypes
import glob
import itertools
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from peers import PeerDidNotStart, start_on_free_port

USER = "deskbot"
PASSWORD = "db-secret"
PASSWORD_ENV = "DESKBOT_DB_PASSWORD"
_databases = itertools.count(1)


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise PeerDidNotStart(
            f"{name} is not installed: run `make test`, which installs postgresql"
        )
    return found[-1]


def _as_postgres() -> None:
    """In the child: become the postgres user, then die with the parent."""
    account = pwd.getpwnam("postgres")
    os.setgroups([])
    os.setgid(account.pw_gid)
    os.setuid(account.pw_uid)  # a uid change clears the death signal: set it after
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Postgres:
    def __init__(self, workdir: Path):
        self.dir = workdir
        self.data = workdir / "data"
        self.port = 0  # chosen at start
        account = pwd.getpwnam("postgres")
        os.chown(workdir, account.pw_uid, account.pw_gid)
        secret = workdir / "pw"
        secret.write_text(PASSWORD + "\n")
        os.chown(secret, account.pw_uid, account.pw_gid)
        done = subprocess.run(
            [
                _bin("initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
            ],
            capture_output=True,
            text=True,
            preexec_fn=_as_postgres,
            cwd=workdir,
        )
        if done.returncode:
            raise RuntimeError(f"initdb failed: {done.stderr.strip()[-2000:]}")
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "postgres.log"

    def _start(self, port: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                _bin("postgres"),
                "-D",
                str(self.data),
                "-p",
                str(port),
                "-k",
                str(self.dir),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",  # tests only: a test server's data may be lost in a power cut
                "-c",
                "max_connections=200",
            ],
            stdout=self.log_path.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_as_postgres,
            cwd=self.dir,
        )

    def _answers(self, port: int) -> bool:
        self.port = port
        return self.psql("postgres", "SELECT 1", check=False).returncode == 0

    def start(self) -> Postgres:
        """Start and wait until it answers; PeerDidNotStart (with its log) if it does not."""
        self.port, self.proc = start_on_free_port(
            self._start, "postgres", self._answers, self.log, timeout=30
        )
        self.psql("postgres", f"CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}'")
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def psql(self, database: str, sql: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run SQL as the superuser over the Unix socket; its output, unaligned."""
        done = subprocess.run(
            [
                _bin("psql"),
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                str(self.dir),
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                database,
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
        )
        if check and done.returncode:
            raise RuntimeError(f"psql failed: {done.stderr.strip()}")
        return done

    def query(self, database: str, sql: str) -> list[list[str]]:
        out = self.psql(database, sql).stdout
        return [line.split("|") for line in out.splitlines() if line]

    def database(self) -> str:
        """A fresh database owned by deskbot's login; its URL (no password in it)."""
        name = f"t{next(_databases)}"
        self.psql("postgres", f"CREATE DATABASE {name} OWNER {USER}")
        return self.url(name)

    def url(self, name: str) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # fast shutdown
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """One PostgreSQL for the session; each test takes its own ``database()``."""
    workdir = Path(tempfile.mkdtemp(prefix="deskbot-postgres-"))
    server = Postgres(workdir).start()
    os.environ[PASSWORD_ENV] = PASSWORD  # deskbot's login, for the processes tests start
    yield server
    server.stop()
    os.environ.pop(PASSWORD_ENV, None)
    shutil.rmtree(workdir, ignore_errors=True)
