"""Run the real ``pulse serve`` as a child process on a free loopback port, for end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import pathlib
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any, Final

READY_TIMEOUT_S: Final = 15.0
STOP_TIMEOUT_S: Final = 10.0
ROOT: Final = pathlib.Path(__file__).resolve().parents[2]
URL_LINE: Final = re.compile(r"Pulse listening on (http://\S+)")
KEY_LINE: Final = re.compile(r"(public|secret) key:\s+(\S+)")


class ServerProcess:
    """A running server. ``url`` is its base URL; ``public_key``/``secret_key`` the default project's."""

    def __init__(self, data_dir: pathlib.Path, *, host: str = "127.0.0.1", extra: list[str] | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.host = host
        self.extra = extra or []
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.public_key = ""
        self.secret_key = ""
        self.output: list[str] = []

    def start(self) -> ServerProcess:
        cmd = [sys.executable, "-m", "server.cli", "serve", "--host", self.host, "--port", "0",
               "--data-dir", str(self.data_dir), "--log-level", "warning", *self.extra]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        ready = threading.Event()
        self._reader = threading.Thread(target=self._read_output, args=(ready,), daemon=True)
        self._reader.start()
        if not ready.wait(READY_TIMEOUT_S):
            self.kill()
            raise RuntimeError("server did not start:\n" + "".join(self.output))
        if self.host == "0.0.0.0":
            self.url = re.sub(r"//[^:/]+", "//127.0.0.1", self.url)
        return self

    def _read_output(self, ready: threading.Event) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            if match := URL_LINE.search(line):
                self.url = match.group(1)
            if match := KEY_LINE.search(line):
                setattr(self, f"{match.group(1)}_key", match.group(2))
                if match.group(1) == "secret":
                    ready.set()

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Signal the server and wait for it; returns its exit code (must be 0 after SIGTERM)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError("server did not stop within the deadline:\n" + "".join(self.output)) from None
        self._close_pipe()
        return code

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(STOP_TIMEOUT_S)
        self._close_pipe()

    def _close_pipe(self) -> None:
        assert self.proc is not None
        self._reader.join(STOP_TIMEOUT_S)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def wait_stopped(self) -> float:
        started = time.monotonic()
        assert self.proc is not None
        self.proc.wait(STOP_TIMEOUT_S)
        return time.monotonic() - started


@contextlib.contextmanager
def serving(data_dir: pathlib.Path, **options: Any) -> Iterator[ServerProcess]:
    """A started server (``ServerProcess`` options), stopped with SIGTERM on leaving; it must then exit
    0, or its output is the failure's message."""
    proc = ServerProcess(data_dir, **options).start()
    try:
        yield proc
    finally:
        code = proc.stop()
    assert code == 0, "".join(proc.output)
