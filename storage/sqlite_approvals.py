"""The SQLite backend's approval and sync-cursor statements (storage/approval_records.py has the
SQL and records). Writes run on the store's writer thread, reads on its reader pool."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from storage import approval_records as a
from storage.approval_records import Approval, CursorAdvance, Decision, ReceiverHealth, SyncCursor

_T = TypeVar("_T")


def create_approval(conn: sqlite3.Connection, row: Approval) -> None:
    conn.execute(a.INSERT_APPROVAL, msgspec.structs.astuple(row))


def decide(conn: sqlite3.Connection, decision: Decision) -> bool:
    return conn.execute(a.DECIDE, a.decision_params(decision)).rowcount > 0


def set_threshold(conn: sqlite3.Connection, project: str, threshold: int, now_ms: int) -> None:
    conn.execute(a.UPSERT_THRESHOLD, (project, threshold, now_ms))


def advance(conn: sqlite3.Connection, advance: CursorAdvance) -> bool:
    return conn.execute(a.ADVANCE_CURSOR, a.advance_params(advance)).rowcount > 0


def receiver_health(conn: sqlite3.Connection, project: str, since_ms: int) -> list[ReceiverHealth]:
    return a.receiver_health(
        conn.execute(a.RECEIVER_COUNTS, (project, since_ms)).fetchall(),
        conn.execute(a.RECEIVER_LAST_DELIVERED, (project,)).fetchall(),
        conn.execute(a.RECEIVER_ERRORS, (project,)).fetchall(),
    )


class SqliteApprovalMethods:
    """SqliteStore's approval and sync methods."""

    if TYPE_CHECKING:
        async def _write_with(self, fn: Callable[..., _T], *args: Any) -> _T: ...
        async def _read(self, fn: Callable[[sqlite3.Connection], _T]) -> _T: ...

    async def create_approval(self, row: Approval) -> None:
        await self._write_with(create_approval, row)

    async def get_approval(self, project: str, approval_id: str) -> Approval | None:
        def read(conn: sqlite3.Connection) -> Approval | None:
            row = conn.execute(a.SELECT_APPROVAL, (project, approval_id)).fetchone()
            return None if row is None else a.approval(row)

        return await self._read(read)

    async def list_approvals(self, project: str, limit: int) -> list[Approval]:
        return await self._read(lambda conn: [a.approval(r) for r in conn.execute(a.SELECT_APPROVALS, (project, limit))])

    async def decide_approval(self, decision: Decision) -> bool:
        return await self._write_with(decide, decision)

    async def reach_threshold(self, project: str) -> int | None:
        def read(conn: sqlite3.Connection) -> int | None:
            row = conn.execute(a.SELECT_THRESHOLD, (project,)).fetchone()
            return None if row is None else int(row[0])

        return await self._read(read)

    async def set_reach_threshold(self, project: str, threshold: int, now_ms: int) -> None:
        await self._write_with(set_threshold, project, threshold, now_ms)

    async def sync_cursors(self, project: str) -> list[SyncCursor]:
        return await self._read(lambda conn: [SyncCursor(project=r[0], webhook_id=r[1], after_seq=r[2], synced_ms=r[3],
                                                         events_sent=r[4])
                                              for r in conn.execute(a.SELECT_CURSORS, (project,))])

    async def advance_sync_cursor(self, advance_to: CursorAdvance) -> bool:
        return await self._write_with(advance, advance_to)

    async def receiver_health(self, project: str, since_ms: int) -> list[ReceiverHealth]:
        return await self._read(lambda conn: receiver_health(conn, project, since_ms))
