"""A private PostgreSQL server for tests: initdb into a temporary directory, start, stop.

`PostgresServer` runs `initdb` and `postgres -D dir -k socketdir -p port -c
listen_addresses=127.0.0.1` from the newest /usr/lib/postgresql/*/bin (else from the PATH),
with trust authentication for the superuser `postgres` over 127.0.0.1 only. PostgreSQL
refuses to run as root, so under root both run as the `postgres` system user (runuser) and
the temporary directory is created outside pytest's root-only temp tree and chowned to it.

Durability is switched off (fsync=off): the tests kill consumers, never this server, and a
crash of the server is not what they are about.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

SUPERUSER = "postgres"
_START_TIMEOUT_S = 30.0
_STOP_TIMEOUT_S = 20.0


def postgres_bin_dir() -> str | None:
    """The directory holding initdb and postgres, or None if PostgreSQL is not installed."""

    def version(path: str) -> tuple[int, ...]:
        name = Path(path).parent.name
        return tuple(int(x) for x in name.split(".") if x.isdigit())

    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version, reverse=True)
    for initdb in candidates:
        if os.access(initdb, os.X_OK) and os.access(Path(initdb).with_name("postgres"), os.X_OK):
            return str(Path(initdb).parent)
    initdb_on_path = shutil.which("initdb")
    if initdb_on_path and shutil.which("postgres"):
        return str(Path(initdb_on_path).parent)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """One PostgreSQL server on 127.0.0.1 with its data in a fresh temporary directory."""

    def __init__(self, bin_dir: str) -> None:
        self.bin_dir = bin_dir
        self.root = tempfile.mkdtemp(prefix="ackly-pg-")
        self.data_dir = os.path.join(self.root, "data")
        self.socket_dir = os.path.join(self.root, "socket")
        self.log_path = os.path.join(self.root, "postgres.log")
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._databases = 0
        self._as_root = os.geteuid() == 0

    @property
    def conninfo(self) -> str:
        """libpq connection string of the `postgres` database."""
        return self.database_conninfo("postgres")

    def database_conninfo(self, dbname: str) -> str:
        return f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname={dbname} connect_timeout=10"

    def _run_as(self) -> list[str]:
        return ["runuser", "-u", SUPERUSER, "--"] if self._as_root else []

    def start(self) -> PostgresServer:
        os.makedirs(self.socket_dir)
        if self._as_root:
            try:
                owner = pwd.getpwnam(SUPERUSER)
            except KeyError:
                raise RuntimeError(f"PostgreSQL refuses to run as root and there is no {SUPERUSER!r} "
                                   "user to run it as (Debian's postgresql package creates it)")
            for path in (self.root, self.socket_dir):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        initdb = subprocess.run(
            [*self._run_as(), os.path.join(self.bin_dir, "initdb"), "-D", self.data_dir, "-U", SUPERUSER,
             "--auth=trust", "--encoding=UTF8", "--no-locale", "--no-sync"],
            capture_output=True, text=True, timeout=120,
        )
        if initdb.returncode != 0:
            raise RuntimeError(f"initdb failed ({initdb.returncode}):\n{initdb.stdout}{initdb.stderr}")
        for _attempt in range(3):  # the free port may be taken between choosing and binding
            self.port = _free_port()
            if self._launch():
                return self
        raise RuntimeError("postgres did not start:\n" + self.log())

    def _launch(self) -> bool:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child until stop()
        try:
            self.proc = subprocess.Popen(
                [*self._run_as(), os.path.join(self.bin_dir, "postgres"), "-D", self.data_dir,
                 "-k", self.socket_dir, "-p", str(self.port), "-c", "listen_addresses=127.0.0.1",
                 "-c", "fsync=off", "-c", "max_connections=50", "-c", "shared_buffers=16MB"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        finally:
            log.close()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with psycopg.connect(self.conninfo, connect_timeout=2):
                    return True
            except psycopg.OperationalError:
                time.sleep(0.1)  # the server is still starting: nothing to wait on but a retry
        self._terminate()
        raise RuntimeError(f"postgres did not accept connections in {_START_TIMEOUT_S} s:\n" + self.log())

    def log(self) -> str:
        try:
            return Path(self.log_path).read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def create_database(self, prefix: str = "test") -> str:
        """A new empty database; returns its conninfo."""
        self._databases += 1
        name = f"{prefix}_{self._databases}"
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.database_conninfo(name)

    def _terminate(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        # SIGINT is PostgreSQL's fast shutdown; the postmaster may run under runuser, so the
        # signal goes to the process group this server was started in.
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=_STOP_TIMEOUT_S)

    def stop(self) -> None:
        self._terminate()
        shutil.rmtree(self.root, ignore_errors=True)
