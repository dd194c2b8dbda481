"""The SQLite backend's trigger statements (storage/trigger_records.py has the SQL and records).
Writes run on the store's writer thread (``SqliteStore._on_writer``), reads on its reader pool."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from storage import trigger_records as t
from storage.sqlite_transaction import transaction
from storage.trigger_records import Execution, SessionMark, TriggerRow, VariantCounts

_T = TypeVar("_T")


def save_trigger(conn: sqlite3.Connection, row: TriggerRow) -> None:
    conn.execute(t.UPSERT_TRIGGER, msgspec.structs.astuple(row))


def delete_trigger(conn: sqlite3.Connection, project: str, trigger_id: str) -> bool:
    def work() -> bool:  # the definition and everything recorded about it
        deleted = conn.execute(t.DELETE_TRIGGER[0], (project, trigger_id)).rowcount
        for statement in t.DELETE_TRIGGER[1:]:
            conn.execute(statement, (project, trigger_id))
        return deleted > 0

    return transaction(conn, work)


def get_trigger(conn: sqlite3.Connection, project: str, trigger_id: str) -> TriggerRow | None:
    row = conn.execute(t.SELECT_TRIGGER, (project, trigger_id)).fetchone()
    return None if row is None else TriggerRow(*row)


def list_triggers(conn: sqlite3.Connection, project: str | None) -> list[TriggerRow]:
    if project is None:
        return [TriggerRow(*row) for row in conn.execute(t.SELECT_ALL_TRIGGERS)]
    return [TriggerRow(*row) for row in conn.execute(t.SELECT_TRIGGERS, (project,))]


def record_activity(conn: sqlite3.Connection, marks: list[SessionMark], executions: list[Execution]) -> None:
    def work() -> None:
        if marks:
            conn.executemany(t.UPSERT_MARK, [t.mark_params(m) for m in marks])
        if executions:
            conn.executemany(t.INSERT_EXECUTION, [t.execution_params(e) for e in executions])

    transaction(conn, work)


def session_marks(conn: sqlite3.Connection, project: str, session_id: str) -> list[SessionMark]:
    return [SessionMark(*row) for row in conn.execute(t.SELECT_MARKS, (project, session_id))]


def executions(conn: sqlite3.Connection, project: str, trigger_id: str, limit: int) -> list[Execution]:
    rows = conn.execute(t.SELECT_EXECUTIONS, (project, trigger_id, limit))
    return [Execution(*row[:8], bool(row[8]), row[9]) for row in rows]  # type: ignore[call-arg]


def counts(conn: sqlite3.Connection, project: str, trigger_id: str) -> list[VariantCounts]:
    return [VariantCounts(*row) for row in conn.execute(t.SELECT_COUNTS, (project, trigger_id))]


class SqliteTriggerMethods:
    """SqliteStore's trigger methods: writes on the writer thread (queue order with the appends),
    reads on the read pool."""

    if TYPE_CHECKING:
        async def _write_with(self, fn: Callable[..., _T], *args: Any) -> _T: ...
        async def _read(self, fn: Callable[[sqlite3.Connection], _T]) -> _T: ...

    async def save_trigger(self, row: TriggerRow) -> None:
        await self._write_with(save_trigger, row)

    async def get_trigger(self, project: str, trigger_id: str) -> TriggerRow | None:
        return await self._read(lambda conn: get_trigger(conn, project, trigger_id))

    async def list_triggers(self, project: str | None) -> list[TriggerRow]:
        return await self._read(lambda conn: list_triggers(conn, project))

    async def delete_trigger(self, project: str, trigger_id: str) -> bool:
        return await self._write_with(delete_trigger, project, trigger_id)

    async def record_trigger_activity(self, marks: list[SessionMark], executions: list[Execution]) -> None:
        if marks or executions:
            await self._write_with(record_activity, marks, executions)

    async def trigger_session_marks(self, project: str, session_id: str) -> list[SessionMark]:
        return await self._read(lambda conn: session_marks(conn, project, session_id))

    async def trigger_executions(self, project: str, trigger_id: str, limit: int) -> list[Execution]:
        return await self._read(lambda conn: executions(conn, project, trigger_id, limit))

    async def trigger_counts(self, project: str, trigger_id: str) -> list[VariantCounts]:
        return await self._read(lambda conn: counts(conn, project, trigger_id))
