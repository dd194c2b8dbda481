"""A throwaway PostgreSQL for tests: one server per test session, a fresh database per test.

Where the server comes from:

- ``PULSE_TEST_DATABASE_URL`` set (``postgresql://user@host:port/dbname``): that server is used and
  never stopped; every database this module creates in it is uniquely named and dropped afterwards.
- otherwise a private server is started from the installed binaries (``PULSE_PG_BIN``, else the newest
  ``/usr/lib/postgresql/*/bin``, else ``initdb`` on the PATH) in a temporary directory on a free
  loopback port, with ``fsync=off``, and
  removed at the end of the session. initdb refuses to run as root, so as root it runs as the
  ``postgres`` user. initdb runs once per session; a fresh database costs ~0.1 s. Servers left
  behind by a killed session are stopped and removed when the next one starts.
- neither: tests that need PostgreSQL are skipped with the reason, or fail with it when
  ``PULSE_REQUIRE_SERVICES=1`` (CI: ``.ci/run``); see tests/services/__init__.py.

The API, for any test package::

    from tests.services.postgres import PostgresServer, postgres_dsn, postgres_server  # noqa: F401

    async def test_something(postgres_dsn: str) -> None:        # a fresh empty database
        ...

    def test_outage(postgres_server: PostgresServer) -> None:
        if not postgres_server.restartable:
            service_unavailable("needs a private server")
        with postgres_server.database() as dsn:                   # another fresh database
            postgres_server.stop()                                # clients see the server go away
            postgres_server.start()                               # same port, same data

- ``postgres_server`` (session scope, sync): the ``PostgresServer``. Importing it into several
  conftest modules still starts one server per session (a module-level singleton).
- ``postgres_dsn`` (function scope, sync): the DSN of a fresh empty database, dropped afterwards.
- ``PostgresServer.dsn``: the maintenance database; do not keep test data there.
- ``PostgresServer.database()``: context manager yielding a fresh database's DSN;
  ``create_database()`` / ``drop_database(dsn)`` are the same in two steps.
- ``PostgresServer.stop()`` / ``start()``: stop (fast shutdown: sessions are terminated) and start
  the private server again on the same port; ``pause()`` / ``resume()``: SIGSTOP / SIGCONT it and
  its backends (connections stay open, nothing answers); ``pids()``: the server's processes;
  ``restartable`` is False for an external server, where none of these work.

Everything here is blocking (subprocesses): call it from sync fixtures, or from async code through
``trio.to_thread.run_sync``.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pathlib
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import urllib.parse
from collections.abc import Iterator
from typing import Final

import pytest

from tests.services import service_unavailable

DATABASE_URL_ENV: Final = "PULSE_TEST_DATABASE_URL"
BIN_DIR_ENV: Final = "PULSE_PG_BIN"
SERVER_PROGRAMS: Final = ("initdb", "pg_ctl", "psql")  # what a bin directory must hold
ROOT_PREFIX: Final = "pulse-pg-"  # private servers live in <tmp>/pulse-pg-*/
OWNER_FILE: Final = "owner.pid"  # the test process a private server belongs to
SERVER_USER: Final = "postgres"  # the OS user that owns a private server's files when we are root
START_TIMEOUT_S: Final = 60
# Durability off, more connections than a laptop default (several stores and nodes per test).
SERVER_SETTINGS: Final = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "300",
    "shared_buffers": "'128MB'",
    "log_min_messages": "warning",
    "log_min_error_statement": "panic",  # expected errors (dropped connections) stay out of the log
}


class PostgresServer:
    """A PostgreSQL server for one test session: a private one, or the one in PULSE_TEST_DATABASE_URL."""

    def __init__(self, admin_dsn: str, *, data_dir: pathlib.Path | None, bin_dir: pathlib.Path | None) -> None:
        self.dsn = admin_dsn
        self._data_dir = data_dir  # None for an external server
        self._bin_dir = bin_dir
        self._prefix = f"pulse_test_{secrets.token_hex(4)}"
        self._created: set[str] = set()
        self._lock = threading.Lock()
        self._running = data_dir is None

    # databases -----------------------------------------------------------------------------------
    def create_database(self) -> str:
        """Create a fresh empty database; return its DSN."""
        with self._lock:
            name = f"{self._prefix}_{len(self._created)}"
            self._created.add(name)
        self.execute(f'CREATE DATABASE "{name}" TEMPLATE template0 ENCODING \'UTF8\'')
        return with_database(self.dsn, name)

    def drop_database(self, dsn: str) -> None:
        """Drop a database made by create_database(), closing its connections first."""
        name = database_of(dsn)
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        with self._lock:
            self._created.discard(name)

    @contextlib.contextmanager
    def database(self) -> Iterator[str]:
        """A fresh empty database for the duration of the block."""
        dsn = self.create_database()
        try:
            yield dsn
        finally:
            if not self._running:
                self.start()  # a fault test that failed while the server was down
            self.drop_database(dsn)

    def execute(self, sql: str) -> None:
        """Run one SQL statement in the maintenance database (with psql)."""
        psql = str(self._bin_dir / "psql") if self._bin_dir else shutil.which("psql") or "psql"
        _run([psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", self.dsn, "-c", sql])

    # a private server ----------------------------------------------------------------------------
    @property
    def restartable(self) -> bool:
        return self._data_dir is not None

    def start(self) -> None:
        self._pg_ctl("start", "-w", "-t", str(START_TIMEOUT_S), "-l", str(self._require_private() / "log"))
        self._running = True

    def stop(self) -> None:
        self._pg_ctl("stop", "-w", "-m", "fast")
        self._running = False

    def pause(self) -> None:
        """SIGSTOP the server and its backends: connections stay open, nothing answers (a hung or
        unreachable server). Always resume() afterwards."""
        for pid in self.pids():
            os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        for pid in self.pids():
            os.kill(pid, signal.SIGCONT)

    def pids(self) -> list[int]:
        """The postmaster of the private server and every process it started (now)."""
        postmaster = int((self._require_private() / "postmaster.pid").read_text().split()[0])
        pids = [postmaster]
        for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                # "pid (comm) state ppid ...": comm may contain spaces, so split after the last ')'.
                if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == postmaster:
                    pids.append(int(stat.parent.name))
        return pids

    def close(self) -> None:
        """Drop what this session created (external server), or stop and remove the private one."""
        data_dir = self._data_dir
        if data_dir is None:
            for name in sorted(self._created):
                with contextlib.suppress(subprocess.CalledProcessError):
                    self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            return
        if self._running:
            with contextlib.suppress(subprocess.CalledProcessError):
                self._pg_ctl("stop", "-w", "-m", "immediate")
            self._running = False
        shutil.rmtree(data_dir.parent, ignore_errors=True)

    def _require_private(self) -> pathlib.Path:
        if self._data_dir is None:
            raise RuntimeError(f"an external server ({DATABASE_URL_ENV}) cannot be stopped or started")
        return self._data_dir

    def _pg_ctl(self, *args: str) -> None:
        data_dir = self._require_private()
        assert self._bin_dir is not None
        _run_as_server_user([str(self._bin_dir / "pg_ctl"), "-D", str(data_dir), *args])


def with_database(dsn: str, name: str) -> str:
    """``dsn`` pointing at database ``name`` instead."""
    return urllib.parse.urlsplit(dsn)._replace(path="/" + name).geturl()


def database_of(dsn: str) -> str:
    return urllib.parse.urlsplit(dsn).path.lstrip("/")


# Starting a server ---------------------------------------------------------------------------------
def find_bin_dir() -> tuple[pathlib.Path | None, str]:
    """The directory of the server binaries, or None and why there is none."""
    configured = os.environ.get(BIN_DIR_ENV)
    if configured:
        missing = _missing_programs(pathlib.Path(configured))
        if missing:
            return None, f"{BIN_DIR_ENV}={configured!r} has no {', '.join(missing)}"
        return pathlib.Path(configured), ""
    candidates = sorted(
        pathlib.Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name)
    )
    if candidates:
        return candidates[-1].parent, ""
    on_path = shutil.which("initdb")
    if on_path:
        bin_dir = pathlib.Path(on_path).resolve().parent
        if not _missing_programs(bin_dir):
            return bin_dir, ""
    return None, (
        f"no PostgreSQL server binaries (no /usr/lib/postgresql/*/bin/initdb, no initdb on the PATH; "
        f"install the postgresql package, or set {BIN_DIR_ENV} or {DATABASE_URL_ENV})"
    )


def _missing_programs(bin_dir: pathlib.Path) -> list[str]:
    return [name for name in SERVER_PROGRAMS if not os.access(bin_dir / name, os.X_OK)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run(cmd: list[str]) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise subprocess.CalledProcessError(result.returncode, cmd, result.stdout, result.stderr)


def _run_as_server_user(cmd: list[str]) -> None:
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", SERVER_USER, "--", *cmd]
    _run(cmd)


def _reap_orphans(bin_dir: pathlib.Path) -> None:
    """Stop and remove private servers whose test process died without cleaning up (SIGKILL)."""
    for owner_file in pathlib.Path(tempfile.gettempdir()).glob(f"{ROOT_PREFIX}*/{OWNER_FILE}"):
        root = owner_file.parent
        try:
            os.kill(int(owner_file.read_text()), 0)
            continue  # its owner still runs (a concurrent test session)
        except ProcessLookupError:
            pass
        except (OSError, ValueError):
            continue
        if (root / "data" / "postmaster.pid").exists():
            with contextlib.suppress(subprocess.CalledProcessError):
                _run_as_server_user([str(bin_dir / "pg_ctl"), "-D", str(root / "data"), "stop", "-m", "immediate"])
        shutil.rmtree(root, ignore_errors=True)


def start_private_server(bin_dir: pathlib.Path) -> PostgresServer:
    _reap_orphans(bin_dir)
    root = pathlib.Path(tempfile.mkdtemp(prefix=ROOT_PREFIX))
    (root / OWNER_FILE).write_text(str(os.getpid()))
    if os.geteuid() == 0:
        owner = pwd.getpwnam(SERVER_USER)
        os.chown(root, owner.pw_uid, owner.pw_gid)
    data_dir = root / "data"
    port = _free_port()
    try:
        _run_as_server_user(
            [str(bin_dir / "initdb"), "-D", str(data_dir), "-U", "postgres", "--auth=trust",
             "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync", "--no-instructions"]
        )  # fmt: skip
        settings = {**SERVER_SETTINGS, "port": str(port), "unix_socket_directories": f"'{root}'"}
        with (data_dir / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
        server = PostgresServer(
            f"postgresql://postgres@127.0.0.1:{port}/postgres", data_dir=data_dir, bin_dir=bin_dir
        )
        server.start()
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    return server


def _open_server() -> tuple[PostgresServer | None, str]:
    url = os.environ.get(DATABASE_URL_ENV)
    if url:
        external = PostgresServer(url, data_dir=None, bin_dir=None)
        external.dsn = external.create_database()  # this session's own maintenance database
        return external, ""
    bin_dir, reason = find_bin_dir()
    if bin_dir is None:
        return None, reason
    return start_private_server(bin_dir), ""


# The session's server: one per process, however many conftests import the fixture ---------------
_shared: PostgresServer | None = None
_unavailable = ""  # why there is no server, once a first acquire_server() found none
_users = 0
_shared_lock = threading.Lock()


def acquire_server() -> PostgresServer | None:
    """The session's server, started on first use (None: see unavailable_reason()); pair with
    release_server()."""
    global _shared, _unavailable, _users
    with _shared_lock:
        if _shared is None:
            _shared, _unavailable = _open_server()
            if _shared is not None:
                atexit.register(_shared.close)  # in case a session dies before its teardown
        _users += 1
        return _shared


def unavailable_reason() -> str:
    """Why the last acquire_server() returned None."""
    return _unavailable


def release_server() -> None:
    global _shared, _users
    with _shared_lock:
        _users -= 1
        if _users == 0 and _shared is not None:
            server, _shared = _shared, None
            server.close()
            atexit.unregister(server.close)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = acquire_server()
    try:
        if server is None:
            service_unavailable(f"no PostgreSQL: {unavailable_reason()}")
        yield server
    finally:
        release_server()


@pytest.fixture
def postgres_dsn(postgres_server: PostgresServer) -> Iterator[str]:
    with postgres_server.database() as dsn:
        yield dsn
