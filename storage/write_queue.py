"""The front of a group-commit store, shared by the backends: the queue of writes its writer
drains, what a caller waits for, and the cache of projects (which never change once created).

A backend gives ``APPEND_TIMEOUT_S``, ``_require_running`` and its writer, and either ``_send`` (the
bounded memory channel a writer task drains: PostgreSQL) or its own ``_submit`` (SQLite hands writes
straight to its writer thread); everything a caller of ``append``/``save_snapshot`` sees is the same
for both.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import trio

from protocol.record import AppendOutcome, Event
from storage.base import Project, Snapshot, StoreUnavailable

SnapshotRow = tuple[str, str, str, bytes, int]  # project, kind, key, state, upto_seq


class Write:
    """One append (or snapshot) handed to the writer, and what became of it."""

    __slots__ = ("events", "snapshot", "outcomes", "error", "done", "abandoned", "deadline")

    def __init__(self, events: Sequence[Event], snapshot: SnapshotRow | None = None) -> None:
        self.events = events
        self.snapshot = snapshot
        self.outcomes: list[AppendOutcome] = []
        self.error: str | None = None  # set instead of outcomes when the group failed
        self.done = trio.Event()
        self.abandoned = False  # the caller gave up while it was still queued
        self.deadline = math.inf  # trio time past which the caller gets StoreUnavailable (SQLite)


class WriteQueueFront:
    APPEND_TIMEOUT_S: ClassVar[float]  # queueing + commit; past it the caller gets StoreUnavailable
    _send: trio.MemorySendChannel[Write]
    _projects: dict[str, Project]  # public and secret key -> Project
    _default: Project | None

    def _require_running(self) -> None:
        raise NotImplementedError

    # projects -----------------------------------------------------------------------------------
    async def default_project(self) -> Project:
        self._require_running()
        assert self._default is not None  # set when the store opened, before it runs
        return self._default

    def _remember(self, project: Project) -> None:
        self._projects[project.public_key] = project
        self._projects[project.secret_key] = project

    # the log: writes ----------------------------------------------------------------------------
    async def append(self, events: list[Event]) -> list[AppendOutcome]:
        if not events:
            return []
        write = Write(events)
        await self._submit(write)
        return write.outcomes

    async def save_snapshot(self, project: str, kind: str, key: str, snapshot: Snapshot) -> None:
        # Snapshots ride the same group commit as appends: no transaction of their own.
        await self._submit(Write((), (project, kind, key, snapshot.state, snapshot.upto_seq)))

    # health -------------------------------------------------------------------------------------
    def queue_depth(self) -> int:
        """Writes waiting for the writer (not yet taken into a group)."""
        return self._send.statistics().current_buffer_used

    async def probe_writer(self) -> None:
        """An empty write through the writer's queue and one commit (no rows): returns when the
        writer can commit now, raises StoreUnavailable when it cannot. The caller sets the deadline."""
        await self._submit(Write(()))

    async def _submit(self, write: Write) -> None:
        """Hand ``write`` to the writer task through ``_send`` and wait for it, within
        APPEND_TIMEOUT_S (a deadline of its own: one cancel scope per write)."""
        self._require_running()
        timeout = self.APPEND_TIMEOUT_S
        with trio.move_on_after(timeout):
            try:
                await self._send.send(write)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                raise StoreUnavailable("store is closed") from None
            await write.done.wait()
        if not write.done.is_set():
            # Still queued: a writer that looks at ``abandoned`` skips it. Already in a group: it
            # may commit later; clients retry with their client ids, which dedup.
            write.abandoned = True
            raise StoreUnavailable(f"write not committed within {timeout!r} s")
        if write.error is not None:
            raise StoreUnavailable(write.error)
