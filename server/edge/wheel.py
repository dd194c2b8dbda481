"""A timer wheel: many deadlines, one task, no cancel scope per entry.

Every connection has a deadline (keep-alive while idle, the request's while one is arriving) and
every WebSocket a ping due; a cancel scope or a task each would cost memory per socket and a
scope per request. Entries here sit in slots of ``tick`` seconds, so adding or moving one is a
set operation, and one task sleeps until the earliest slot, runs only while there are entries,
and ends when the server stops, after handing each entry left to ``at_shutdown``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

import trio


class Stopping(Protocol):
    """hypercorn's WorkerContext.terminated (an async-set event), or anything alike."""

    def is_set(self) -> bool: ...
    async def wait(self) -> None: ...


class DeadlineWheel:
    """Entries (objects with a ``slot`` attribute, 0 when in no slot) due at a trio time.

    ``expire(entry, now)`` is called for each entry whose slot has come; an entry may be late by
    up to one tick, never early.
    """

    __slots__ = ("nursery", "stopping", "tick", "slots", "running", "sleep", "expire", "at_shutdown")

    def __init__(self, nursery: trio.Nursery, stopping: Stopping, tick: float, expire: Callable[[Any, float], None],
                 at_shutdown: Callable[[Any], None] | None = None) -> None:
        self.nursery = nursery  # lives as long as the server: the wheel's task runs in it
        self.stopping = stopping
        self.tick = tick
        self.slots: dict[int, set[Any]] = {}
        self.running = False
        self.sleep: trio.CancelScope | None = None  # the wheel's task waiting for its earliest slot
        self.expire = expire
        self.at_shutdown = at_shutdown

    def add(self, entry: Any, due: float) -> None:
        """Put ``entry`` in the slot of ``due`` (taking it out of the one it was in)."""
        slot = math.ceil(due / self.tick)
        if entry.slot == slot:
            return
        if entry.slot:
            self.remove(entry)
        entry.slot = slot
        members = self.slots.get(slot)
        if members is None:
            self.slots[slot] = {entry}
        else:
            members.add(entry)
        if not self.running:
            self.running = True
            self.nursery.start_soon(self._run)
        elif self.sleep is not None and slot * self.tick < self.sleep.deadline:
            self.sleep.deadline = slot * self.tick  # earlier than what the task waits for

    def remove(self, entry: Any) -> None:
        slot = entry.slot
        if slot:
            entry.slot = 0
            members = self.slots.get(slot)
            if members is not None:
                members.discard(entry)
                if not members:
                    del self.slots[slot]

    async def _run(self) -> None:
        stopping = self.stopping
        try:
            while self.slots and not stopping.is_set():
                with trio.move_on_at(min(self.slots) * self.tick) as self.sleep:
                    await stopping.wait()
                self.sleep = None
                if stopping.is_set():
                    break
                now = trio.current_time()
                for slot in [slot for slot in self.slots if slot * self.tick <= now]:
                    for entry in self.slots.pop(slot, ()):
                        entry.slot = 0
                        self.expire(entry, now)
            if stopping.is_set():
                left = [entry for members in self.slots.values() for entry in members]
                self.slots.clear()
                for entry in left:
                    entry.slot = 0
                    if self.at_shutdown is not None:
                        self.at_shutdown(entry)
        finally:
            self.running = False
            self.sleep = None
