"""The PostgreSQL backend's approval and sync-cursor statements (storage/approval_records.py has
the SQL and records). Each function is one unit of work on a pooled connection."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, TypeVar

import msgspec

from storage import approval_records as a
from storage.approval_records import Approval, CursorAdvance, Decision, ReceiverHealth, SyncCursor
from storage.trigger_records import numbered

Connection = Any  # asyncpg.Connection
_T = TypeVar("_T")

INSERT_APPROVAL: Final = numbered(a.INSERT_APPROVAL)
SELECT_APPROVAL: Final = numbered(a.SELECT_APPROVAL)
SELECT_APPROVALS: Final = numbered(a.SELECT_APPROVALS)
DECIDE: Final = numbered(a.DECIDE)
SELECT_THRESHOLD: Final = numbered(a.SELECT_THRESHOLD)
UPSERT_THRESHOLD: Final = numbered(a.UPSERT_THRESHOLD)
SELECT_CURSORS: Final = numbered(a.SELECT_CURSORS)
ADVANCE_CURSOR: Final = numbered(a.ADVANCE_CURSOR)
RECEIVER_COUNTS: Final = numbered(a.RECEIVER_COUNTS)
RECEIVER_LAST_DELIVERED: Final = numbered(a.RECEIVER_LAST_DELIVERED)
RECEIVER_ERRORS: Final = numbered(a.RECEIVER_ERRORS)


def _changed(status: str) -> bool:
    """asyncpg's command tag: "UPDATE 1", "INSERT 0 1" — the last number is the rows touched."""
    return status.rsplit(" ", 1)[-1] != "0"


async def create_approval(conn: Connection, row: Approval) -> None:
    await conn.execute(INSERT_APPROVAL, *msgspec.structs.astuple(row))


async def get_approval(conn: Connection, project: str, approval_id: str) -> Approval | None:
    row = await conn.fetchrow(SELECT_APPROVAL, project, approval_id)
    return None if row is None else a.approval(tuple(row))


async def list_approvals(conn: Connection, project: str, limit: int) -> list[Approval]:
    return [a.approval(tuple(r)) for r in await conn.fetch(SELECT_APPROVALS, project, limit)]


async def decide(conn: Connection, decision: Decision) -> bool:
    return _changed(await conn.execute(DECIDE, *a.decision_params(decision)))


async def reach_threshold(conn: Connection, project: str) -> int | None:
    value = await conn.fetchval(SELECT_THRESHOLD, project)
    return None if value is None else int(value)


async def set_threshold(conn: Connection, project: str, threshold: int, now_ms: int) -> None:
    await conn.execute(UPSERT_THRESHOLD, project, threshold, now_ms)


async def sync_cursors(conn: Connection, project: str) -> list[SyncCursor]:
    rows = await conn.fetch(SELECT_CURSORS, project)
    return [SyncCursor(project=r[0], webhook_id=r[1], after_seq=r[2], synced_ms=r[3], events_sent=r[4]) for r in rows]


async def advance(conn: Connection, advance_to: CursorAdvance) -> bool:
    return _changed(await conn.execute(ADVANCE_CURSOR, *a.advance_params(advance_to)))


async def receiver_health(conn: Connection, project: str, since_ms: int) -> list[ReceiverHealth]:
    return a.receiver_health(
        [tuple(r) for r in await conn.fetch(RECEIVER_COUNTS, project, since_ms)],
        [tuple(r) for r in await conn.fetch(RECEIVER_LAST_DELIVERED, project)],
        [tuple(r) for r in await conn.fetch(RECEIVER_ERRORS, project)],
    )


class PostgresApprovalMethods:
    """PostgresStore's approval and sync methods: each one crossing, committed when it returns."""

    if TYPE_CHECKING:
        def _require_running(self) -> None: ...
        async def _read(self, work: Callable[[Connection], Awaitable[_T]], *, time_limit_s: float = ...,
                        snapshot: bool = False) -> _T: ...

    async def _approval_write(self, work: Callable[[Connection], Awaitable[_T]]) -> _T:
        self._require_running()
        return await self._read(work)

    async def create_approval(self, row: Approval) -> None:
        await self._approval_write(functools.partial(create_approval, row=row))

    async def get_approval(self, project: str, approval_id: str) -> Approval | None:
        return await self._read(functools.partial(get_approval, project=project, approval_id=approval_id))

    async def list_approvals(self, project: str, limit: int) -> list[Approval]:
        return await self._read(functools.partial(list_approvals, project=project, limit=limit))

    async def decide_approval(self, decision: Decision) -> bool:
        return await self._approval_write(functools.partial(decide, decision=decision))

    async def reach_threshold(self, project: str) -> int | None:
        return await self._read(functools.partial(reach_threshold, project=project))

    async def set_reach_threshold(self, project: str, threshold: int, now_ms: int) -> None:
        await self._approval_write(functools.partial(set_threshold, project=project, threshold=threshold, now_ms=now_ms))

    async def sync_cursors(self, project: str) -> list[SyncCursor]:
        return await self._read(functools.partial(sync_cursors, project=project))

    async def advance_sync_cursor(self, advance_to: CursorAdvance) -> bool:
        return await self._approval_write(functools.partial(advance, advance_to=advance_to))

    async def receiver_health(self, project: str, since_ms: int) -> list[ReceiverHealth]:
        return await self._read(functools.partial(receiver_health, project=project, since_ms=since_ms))
