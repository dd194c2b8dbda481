"""A throwaway Redis for tests: a private ``redis-server`` per test, or the one in PULSE_TEST_REDIS_URL.

Where the server comes from:

- ``PULSE_TEST_REDIS_URL`` set (``redis://host:port/db``): that server is used and never stopped.
  It is flushed (FLUSHDB) before each test that uses it, so point it at a database of its own.
  It cannot be stopped or started: fault tests that need that skip (``restartable`` is False).
- otherwise a private ``redis-server`` (``PULSE_REDIS_SERVER``, else ``/usr/bin/redis-server``, else
  ``redis-server`` on the PATH) is
  started for each test in a temporary directory on a free loopback port, with persistence off
  (``--save "" --appendonly no``). It starts in a few milliseconds and is removed afterwards, so
  every test gets an empty server and may stop and start it at will.
- neither: tests that need Redis are skipped with the reason, or fail with it when
  ``PULSE_REQUIRE_SERVICES=1`` (CI: ``.ci/run``); see tests/services/__init__.py.

The API, for any test package::

    from tests.services.redis import RedisServer, redis_server, redis_url  # noqa: F401

    async def test_something(redis_url: str) -> None:         # an empty server's URL
        ...

    async def test_outage(redis_server: RedisServer) -> None:
        if not redis_server.restartable:
            service_unavailable("needs a private server")
        redis_server.stop()          # the process exits (SIGTERM); clients see their sockets close
        redis_server.start()         # a new, empty server on the same port (same url)
        redis_server.pause()         # SIGSTOP: connections stay open but nothing answers
        redis_server.resume()        # SIGCONT

- ``redis_server`` (function scope, sync): the ``RedisServer``; stopped and removed after the test.
- ``redis_url`` (function scope, sync): ``redis_server.url``.
- ``RedisServer.url`` / ``port``; ``running``; ``restartable``; ``stop(kill=False)`` (``kill=True``:
  SIGKILL, a crash); ``start()``; ``pause()`` / ``resume()``; ``close()`` (stop and remove).
- ``start_private_server()``: a private server outside any fixture (e.g. several per test); the
  caller closes it.

Everything here is blocking (subprocesses, short waits): call it from sync fixtures, from test code
between awaits (start/stop take milliseconds), or through ``trio.to_thread.run_sync``.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from typing import Final

import pytest

from tests.services import service_unavailable

REDIS_URL_ENV: Final = "PULSE_TEST_REDIS_URL"
SERVER_BIN_ENV: Final = "PULSE_REDIS_SERVER"
DEFAULT_SERVER_BIN: Final = "/usr/bin/redis-server"
START_TIMEOUT_S: Final = 10.0
STOP_TIMEOUT_S: Final = 10.0


class RedisServer:
    """One Redis server: a private process this module controls, or an external one."""

    def __init__(self, url: str, *, binary: str | None = None, root: pathlib.Path | None = None) -> None:
        self.url = url
        parts = urllib.parse.urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 6379
        self._binary = binary
        self._root = root  # None for an external server
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def restartable(self) -> bool:
        return self._root is not None

    @property
    def running(self) -> bool:
        return self._root is None or (self._process is not None and self._process.poll() is None)

    def start(self) -> None:
        """Start the private server (empty: nothing is persisted) and wait until it answers PING."""
        root = self._require_private()
        if self.running:
            return
        assert self._binary is not None
        log = (root / "redis.log").open("ab")
        with log:
            self._process = subprocess.Popen(
                [self._binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(root), "--daemonize", "no", "--protected-mode", "no"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _answers_ping(self.host, self.port):
            if self._process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self._process.returncode}: {self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop(kill=True)
                raise RuntimeError(
                    f"redis-server did not answer within {START_TIMEOUT_S} s: {self.log_tail()}"
                )
            time.sleep(0.005)

    def stop(self, *, kill: bool = False) -> None:
        """Stop the private server: SIGTERM (clean exit), or SIGKILL with ``kill`` (a crash)."""
        self._require_private()
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        if kill:
            process.kill()
        else:
            process.send_signal(signal.SIGCONT)  # a paused server cannot handle SIGTERM
            process.terminate()
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def pause(self) -> None:
        """SIGSTOP: the server keeps its connections but answers nothing until resume()."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def flush(self) -> None:
        """Empty the server's database (FLUSHDB)."""
        _command(self.host, self.port, _db_of(self.url), b"FLUSHDB")

    def close(self) -> None:
        """Stop and remove a private server; leave an external one alone."""
        if self._root is None:
            return
        self.stop(kill=True)
        shutil.rmtree(self._root, ignore_errors=True)

    def log_tail(self, lines: int = 20) -> str:
        if self._root is None:
            return ""
        with contextlib.suppress(OSError):
            return "\n".join((self._root / "redis.log").read_text(errors="replace").splitlines()[-lines:])
        return ""

    def _signal(self, signum: int) -> None:
        self._require_private()
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signum)

    def _require_private(self) -> pathlib.Path:
        if self._root is None:
            raise RuntimeError(f"an external server ({REDIS_URL_ENV}) cannot be stopped or started")
        return self._root


def server_binary() -> str | None:
    return find_server_binary()[0]


def find_server_binary() -> tuple[str | None, str]:
    """The ``redis-server`` to run, or None and why there is none."""
    configured = os.environ.get(SERVER_BIN_ENV)
    if configured:
        if not os.access(configured, os.X_OK):
            return None, f"{SERVER_BIN_ENV}={configured!r} is not an executable file"
        return configured, ""
    if os.access(DEFAULT_SERVER_BIN, os.X_OK):
        return DEFAULT_SERVER_BIN, ""
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path, ""
    return None, (
        f"no redis-server ({DEFAULT_SERVER_BIN} missing, none on the PATH; install the redis-server "
        f"package, or set {SERVER_BIN_ENV} or {REDIS_URL_ENV})"
    )


def start_private_server() -> RedisServer:
    """A new private server on a free loopback port, running; close() it when done."""
    binary, reason = find_server_binary()
    if binary is None:
        raise RuntimeError(reason)
    root = pathlib.Path(tempfile.mkdtemp(prefix="pulse-redis-"))
    server = RedisServer(f"redis://127.0.0.1:{_free_port()}/0", binary=binary, root=root)
    try:
        server.start()
    except BaseException:
        server.close()
        raise
    return server


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _db_of(url: str) -> int:
    path = urllib.parse.urlsplit(url).path.strip("/")
    return int(path) if path else 0


def _command(host: str, port: int, db: int, *command: bytes) -> bytes:
    """Send one command (after SELECT db) in RESP and return the raw reply; enough for a fixture."""
    with socket.create_connection((host, port), timeout=5) as sock:
        payload = b""
        for args in ((b"SELECT", str(db).encode()), command):
            payload += b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)
        sock.sendall(payload)
        reply = b""
        while reply.count(b"\r\n") < 2:
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
        return reply


def _answers_ping(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    url = os.environ.get(REDIS_URL_ENV)
    if url:
        external = RedisServer(url)
        external.flush()
        yield external
        return
    _, reason = find_server_binary()
    if reason:
        service_unavailable(f"no Redis: {reason}")
    server = start_private_server()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url
