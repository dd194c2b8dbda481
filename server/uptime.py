"""Availability from recorded process lifetimes: the health's ``metrics.uptime`` (seed 000).

Every server process records its lifetime in the store (table ``lifetimes``): a row at start, its
``last_seen_ms`` moved forward every HEARTBEAT_S while it runs, and ``stopped_ms`` at a clean stop.
A process that dies without stopping cleanly (kill -9, power loss) leaves its row as it was at the
last heartbeat: it counts as up until then and down afterwards, so at most HEARTBEAT_S of running
time goes uncounted per crash. The process answering counts as running until the request;
another node still running counts until its last heartbeat (at most HEARTBEAT_S behind).

``availability`` is the share of the window covered by running time, in percent: the window is
the last WINDOW_MS (24 h), or since the first start ever recorded when that is more recent. With
several nodes sharing a database the service counts as up while at least one of them runs (the
union of their lifetimes). The figure is computed from the rows at every health request.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
import weakref
from typing import Final

import msgspec
import trio

from storage.base import Lifetime, LifetimeHistory, Store, StoreError

HEARTBEAT_S: Final = 5.0  # the most running time a crash can leave uncounted
WINDOW_MS: Final = 24 * 3_600_000
RECORD_TIMEOUT_S: Final = 1.0  # one heartbeat's write; a slow store skips a beat, never blocks
STOP_TIMEOUT_S: Final = 2.0  # the clean stop's write, within the shutdown's budget (server/main.py)

log = logging.getLogger(__name__)
# The lifetime id of the process's recorder per store, for the health of the same process
_recording: weakref.WeakKeyDictionary[Store, str] = weakref.WeakKeyDictionary()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Availability(msgspec.Struct, frozen=True):
    percent: float  # running time / window, 0-100, three decimals
    window_start_ms: int
    window_end_ms: int
    running_ms: int  # running time inside the window (the union of every lifetime)
    restarts: int  # process starts inside the window, after its beginning (any node)


def availability(history: LifetimeHistory, now: int, *, current: str | None = None,
                 window_ms: int = WINDOW_MS) -> Availability:
    """The share of [max(now - window_ms, first start), now] covered by the lifetimes. ``current``
    is the lifetime id of the process asking: it runs until ``now``. The others end at their clean
    stop, or else at their last heartbeat."""
    lifetimes = history.lifetimes

    def running_until(life: Lifetime) -> int:
        if life.id == current:
            return now
        return life.stopped_ms if life.stopped_ms is not None else life.last_seen_ms

    first = history.first_started_ms
    start = now - window_ms if first is None else min(now, max(now - window_ms, first))
    spans = sorted((max(life.started_ms, start), min(running_until(life), now)) for life in lifetimes)
    running, reach = 0, start
    for lo, hi in spans:
        lo = max(lo, reach)
        if hi > lo:
            running += hi - lo
            reach = hi
    length = now - start
    # a window of no length (the first start is this very ms): up if the asking process is the one
    percent = round(running * 100 / length, 3) if length > 0 else (100.0 if current is not None else 0.0)
    restarts = sum(1 for life in lifetimes if start < life.started_ms <= now)
    return Availability(min(percent, 100.0), start, now, running, restarts)


class LifetimeRecorder:
    """Records this process's lifetime: ``run`` (a service task) writes the start and then a
    heartbeat every HEARTBEAT_S; ``stop`` writes the clean stop (call it before the store closes)."""

    def __init__(self, store: Store, node: str) -> None:
        self._store = store
        started = now_ms()
        self.lifetime = Lifetime(
            id=f"{socket.gethostname()}-{os.getpid()}-{started}-{secrets.token_hex(3)}",
            node=node,
            started_ms=started,
            last_seen_ms=started,
            stopped_ms=None,
        )
        self._writing = trio.Lock()  # one write at a time, so a late heartbeat never undoes the stop
        self._stopped = False

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        _recording[self._store] = self.lifetime.id
        await self._record(self.lifetime)
        task_status.started()
        while True:
            await trio.sleep(HEARTBEAT_S)
            async with self._writing:
                if self._stopped:
                    return
                await self._record(msgspec.structs.replace(self.lifetime, last_seen_ms=now_ms()))

    async def stop(self) -> None:
        async with self._writing:
            self._stopped = True
            stopped = now_ms()
            await self._record(msgspec.structs.replace(self.lifetime, last_seen_ms=stopped, stopped_ms=stopped),
                               STOP_TIMEOUT_S)

    async def _record(self, lifetime: Lifetime, within_s: float = RECORD_TIMEOUT_S) -> None:
        with trio.move_on_after(within_s) as scope:
            try:
                await self._store.record_lifetime(lifetime)
            except StoreError as exc:  # the store is down: this beat is lost, the health says why
                log.warning("recording this server's lifetime failed: %s", exc)
                return
            self.lifetime = lifetime
        if scope.cancelled_caught:
            log.warning("recording this server's lifetime took over %s s: skipped", within_s)


async def uptime_figures(store: Store) -> Availability:
    """Availability as the process recording its lifetime in ``store`` sees it."""
    now = now_ms()
    return availability(await store.lifetimes(now - WINDOW_MS), now, current=_recording.get(store))
