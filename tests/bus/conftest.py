"""Fixtures of the bus suite: a private Redis per test (tests/services/redis.py) and running buses.

Buses here use short heartbeats and TTLs so membership tests take a fraction of a second.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import coredis
import trio

from storage.redis_bus import RedisBus
from tests.services.redis import RedisServer, redis_server, redis_url  # noqa: F401

HEARTBEAT_S = 0.05
NODE_TTL_S = 0.4
WAIT_S = 10.0  # generous upper bound for anything a test waits on; passing tests take far less


def make_bus(url: str, node_id: str, **settings: Any) -> RedisBus:
    settings.setdefault("heartbeat_s", HEARTBEAT_S)
    settings.setdefault("node_ttl_s", NODE_TTL_S)
    return RedisBus(url, node_id, **settings)


class Recorder:
    """What one bus delivered to on_entry, with an event per new entry to wait on."""

    def __init__(self, bus: RedisBus) -> None:
        self.entries: list[tuple[str, str, bytes]] = []
        self._changed = trio.Event()
        bus.on_entry(self._record)

    def _record(self, channel: str, stream_id: str, payload: bytes) -> None:
        self.entries.append((channel, stream_id, payload))
        self._changed.set()

    async def wait_for(self, count: int) -> None:
        with trio.fail_after(WAIT_S):
            while len(self.entries) < count:
                self._changed = trio.Event()
                await self._changed.wait()

    def payloads(self, channel: str | None = None) -> list[bytes]:
        return [p for c, _, p in self.entries if channel is None or c == channel]


class RunningBuses:
    """Buses running in one nursery; each can be stopped on its own."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self._runs: dict[str, tuple[trio.CancelScope, trio.Event]] = {}
        self.buses: dict[str, RedisBus] = {}

    async def start(self, bus: RedisBus) -> RedisBus:
        scope, finished = trio.CancelScope(), trio.Event()

        async def run(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            try:
                with scope:
                    await bus.run(task_status=task_status)
            finally:
                finished.set()

        await self._nursery.start(run)
        self._runs[bus.node_id] = (scope, finished)
        self.buses[bus.node_id] = bus
        return bus

    async def stop(self, node_id: str) -> None:
        """Cancel the bus's run() and wait until it has returned."""
        scope, finished = self._runs.pop(node_id)
        del self.buses[node_id]
        scope.cancel()
        await finished.wait()


@contextlib.asynccontextmanager
async def running() -> AsyncIterator[RunningBuses]:
    async with trio.open_nursery() as nursery:
        yield RunningBuses(nursery)
        nursery.cancel_scope.cancel()


async def wait_until(predicate: Callable[[], bool], *, within: float = WAIT_S, poll_s: float = 0.01) -> None:
    """Poll ``predicate`` (state with no event to wait on: connected, live nodes) until true,
    or fail after ``within`` seconds."""
    with trio.fail_after(within):
        while not predicate():  # noqa: ASYNC110 (no event exists for these states)
            await trio.sleep(poll_s)


@contextlib.asynccontextmanager
async def redis_client(url: str) -> AsyncIterator[coredis.Redis[bytes]]:
    """A plain client for poking at Redis from a test."""
    client: coredis.Redis[bytes] = coredis.Redis.from_url(url, decode_responses=False)
    async with client:
        yield client


async def register_fake_node(client: coredis.Redis[bytes], node_id: str, *, ahead_s: float = 0.0) -> None:
    """One heartbeat for a node with no process behind it (Redis's clock, ``ahead_s`` later)."""
    await client.eval(
        "local t = redis.call('TIME') "
        "redis.call('ZADD', KEYS[1], t[1] * 1000 + math.floor(t[2] / 1000) + tonumber(ARGV[2]), ARGV[1])",
        ["pulse:nodes"],
        [node_id, round(ahead_s * 1000)],
    )
