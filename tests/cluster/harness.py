"""Several real Pulse nodes on loopback over one PostgreSQL database and one Redis server."""

from __future__ import annotations

import pathlib
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final

import httpx
import trio

from tests.e2e.server_process import ServerProcess

FORM_TIMEOUT_S: Final = 20.0  # every node sees every other within this (heartbeat 1 s, TTL 3 s)


class Cluster:
    """``nodes[i]`` is a ServerProcess; ``client(i)`` an httpx client for it."""

    def __init__(self, tmp_path: pathlib.Path, dsn: str, redis_url: str, size: int = 3) -> None:
        self.tmp_path = tmp_path
        self.dsn = dsn
        self.redis_url = redis_url
        self.prefix = f"t{secrets.token_hex(2)}"
        self.nodes = [self._node(i) for i in range(size)]

    def _node(self, index: int) -> ServerProcess:
        extra = ["--database-url", self.dsn, "--redis-url", self.redis_url, "--node-id", f"{self.prefix}-n{index}"]
        return ServerProcess(self.tmp_path / f"node{index}", extra=extra)

    def node_id(self, index: int) -> str:
        return f"{self.prefix}-n{index}"

    def start(self) -> Cluster:
        for node in self.nodes:
            node.start()
        return self

    def restart(self, index: int) -> ServerProcess:
        """A replacement for node ``index`` (a new process with the same node id)."""
        self.nodes[index] = self._node(index).start()
        return self.nodes[index]

    def stop(self) -> list[int]:
        codes = []
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                codes.append(node.stop())
        return codes

    def output(self) -> str:
        return "\n".join(f"--- node {i} ---\n" + "".join(node.output) for i, node in enumerate(self.nodes))

    async def wait_formed(self, live: list[int] | None = None, timeout: float = FORM_TIMEOUT_S) -> None:  # noqa: ASYNC109
        """Wait until each live node's health lists exactly the live nodes."""
        live = list(range(len(self.nodes))) if live is None else live
        expected = sorted(self.node_id(i) for i in live)
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=5) as http:
            while True:
                seen = []
                for i in live:
                    health = (await http.get(f"{self.nodes[i].url}/api/v1/behavioral/health")).json()
                    seen.append(sorted(health["details"]["redis"]["liveNodes"]))
                if all(nodes == expected for nodes in seen):
                    return
                if time.monotonic() > deadline:
                    raise AssertionError(f"cluster did not form: expected {expected}, nodes see {seen}")
                await trio.sleep(0.1)


async def health(node: ServerProcess) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=5) as http:
        return (await http.get(f"{node.url}/api/v1/behavioral/health")).json()


async def wait_for_component(node: ServerProcess, component: str, state: str, timeout: float = 30.0) -> None:  # noqa: ASYNC109
    """Poll another process's health until ``component`` reports ``state`` (no event to wait on)."""
    with trio.fail_after(timeout):
        while (await health(node))["components"][component] != state:  # noqa: ASYNC110
            await trio.sleep(0.1)


@asynccontextmanager
async def formed_cluster(tmp_path: pathlib.Path, dsn: str, redis_url: str, size: int = 3) -> AsyncIterator[Cluster]:
    """``size`` nodes formed into one cluster; stopped at the end, each required to exit cleanly
    (their output is printed, so pytest shows it when the test fails)."""
    nodes = Cluster(tmp_path, dsn, redis_url, size=size).start()
    try:
        await nodes.wait_formed()
        yield nodes
    finally:
        codes = nodes.stop()
        print(nodes.output())
        assert all(code == 0 for code in codes), nodes.output()
