"""Real Chromium (Playwright driving Debian's ``chromium``) against a real Pulse process.

Pages under test are served from a second origin (another loopback port), as an embedding site
would serve them, so every request the monitor makes to Pulse is cross-origin.
"""

from __future__ import annotations

import asyncio
import functools
import http.server
import os
import pathlib
import shutil
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.server_process import ServerProcess, serving

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")


def chromium_path() -> str | None:
    explicit = os.environ.get("PULSE_CHROMIUM")
    if explicit:
        return explicit
    for candidate in CHROMIUM_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("chromium")


# One Chromium per module, not per session: while Playwright's sync API is active, asyncio takes its
# loop for the thread's running loop, which breaks every later asyncio user in this process (asyncpg
# under trio-asyncio in the PostgreSQL tests).
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    path = chromium_path()
    if path is None:
        reason = "no chromium binary (apt-get install chromium, or set PULSE_CHROMIUM)"
        if os.environ.get("PULSE_REQUIRE_SERVICES") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    # Playwright's sync API makes its own asyncio loop through the current event loop policy; once
    # trio-asyncio's policy is installed (the PostgreSQL tests install it) that would be a trio-asyncio
    # loop, which cannot run inside Playwright's greenlets: make it a plain asyncio loop.
    policy = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())
    try:
        manager = sync_playwright()
        playwright = manager.__enter__()
    finally:
        asyncio.set_event_loop_policy(policy)
    try:
        chromium = playwright.chromium.launch(executable_path=path, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()
    finally:
        manager.__exit__(None, None, None)


@pytest.fixture
def pulse(tmp_path: pathlib.Path) -> Iterator[ServerProcess]:
    """A fresh Pulse on loopback (open access to the default project)."""
    with serving(tmp_path / "pulse-data") as proc:
        yield proc


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  (the stdlib's name)
        pass


@pytest.fixture
def site(tmp_path: pathlib.Path) -> Iterator[tuple[str, pathlib.Path]]:
    """Another origin: (base URL, directory) of a static file server on its own loopback port.
    Write a page into the directory, then open base URL + its name."""
    root = tmp_path / "site"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
