"""The PostgreSQL backend's trigger statements (storage/trigger_records.py has the SQL and records).
Each function is one unit of work on a pooled connection (storage/pg_bridge.py runs it)."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, TypeVar

import msgspec

from storage import trigger_records as t
from storage.pg_bridge import transaction
from storage.trigger_records import Execution, SessionMark, TriggerRow, VariantCounts

Connection = Any  # asyncpg.Connection
_T = TypeVar("_T")

UPSERT_TRIGGER: Final = t.numbered(t.UPSERT_TRIGGER)
SELECT_TRIGGER: Final = t.numbered(t.SELECT_TRIGGER)
SELECT_TRIGGERS: Final = t.numbered(t.SELECT_TRIGGERS)
DELETE_TRIGGER: Final = tuple(t.numbered(s) for s in t.DELETE_TRIGGER)
UPSERT_MARK: Final = t.numbered(t.UPSERT_MARK)
SELECT_MARKS: Final = t.numbered(t.SELECT_MARKS)
INSERT_EXECUTION: Final = t.numbered(t.INSERT_EXECUTION)
SELECT_EXECUTIONS: Final = t.numbered(t.SELECT_EXECUTIONS)
SELECT_COUNTS: Final = t.numbered(t.SELECT_COUNTS)


async def save_trigger(conn: Connection, row: TriggerRow) -> None:
    await conn.execute(UPSERT_TRIGGER, *msgspec.structs.astuple(row))


async def delete_trigger(conn: Connection, project: str, trigger_id: str) -> bool:
    """Run in a transaction: the definition and everything recorded about it."""
    status = await conn.execute(DELETE_TRIGGER[0], project, trigger_id)
    for statement in DELETE_TRIGGER[1:]:
        await conn.execute(statement, project, trigger_id)
    return bool(status != "DELETE 0")


async def get_trigger(conn: Connection, project: str, trigger_id: str) -> TriggerRow | None:
    row = await conn.fetchrow(SELECT_TRIGGER, project, trigger_id)
    return None if row is None else TriggerRow(*row)


async def list_triggers(conn: Connection, project: str | None) -> list[TriggerRow]:
    if project is None:
        return [TriggerRow(*row) for row in await conn.fetch(t.SELECT_ALL_TRIGGERS)]
    return [TriggerRow(*row) for row in await conn.fetch(SELECT_TRIGGERS, project)]


async def record_activity(conn: Connection, marks: list[SessionMark], executions: list[Execution]) -> None:
    """Run in a transaction."""
    if marks:
        await conn.executemany(UPSERT_MARK, [t.mark_params(m) for m in marks])
    if executions:
        await conn.executemany(INSERT_EXECUTION, [t.execution_params(e) for e in executions])


async def session_marks(conn: Connection, project: str, session_id: str) -> list[SessionMark]:
    return [SessionMark(*row) for row in await conn.fetch(SELECT_MARKS, project, session_id)]


async def executions(conn: Connection, project: str, trigger_id: str, limit: int) -> list[Execution]:
    return [Execution(*row) for row in await conn.fetch(SELECT_EXECUTIONS, project, trigger_id, limit)]


async def counts(conn: Connection, project: str, trigger_id: str) -> list[VariantCounts]:
    rows = await conn.fetch(SELECT_COUNTS, project, trigger_id)
    return [VariantCounts(r[0], r[1], r[2], r[3], r[4], r[5], None if r[6] is None else float(r[6]), r[7]) for r in rows]


async def _record_in_transaction(conn: Connection, marks: list[SessionMark], executions: list[Execution]) -> None:
    async with transaction(conn):
        await record_activity(conn, marks, executions)


async def _delete_in_transaction(conn: Connection, project: str, trigger_id: str) -> bool:
    async with transaction(conn):
        return await delete_trigger(conn, project, trigger_id)


class PostgresTriggerMethods:
    """PostgresStore's trigger methods: each one crossing, committed when it returns."""

    if TYPE_CHECKING:
        def _require_running(self) -> None: ...
        async def _read(self, work: Callable[[Connection], Awaitable[_T]], *, time_limit_s: float = ...,
                        snapshot: bool = False) -> _T: ...

    async def _trigger_write(self, work: Callable[[Connection], Awaitable[_T]]) -> _T:
        self._require_running()
        return await self._read(work)

    async def save_trigger(self, row: TriggerRow) -> None:
        await self._trigger_write(functools.partial(save_trigger, row=row))

    async def get_trigger(self, project: str, trigger_id: str) -> TriggerRow | None:
        return await self._read(functools.partial(get_trigger, project=project, trigger_id=trigger_id))

    async def list_triggers(self, project: str | None) -> list[TriggerRow]:
        return await self._read(functools.partial(list_triggers, project=project))

    async def delete_trigger(self, project: str, trigger_id: str) -> bool:
        return await self._trigger_write(functools.partial(_delete_in_transaction, project=project, trigger_id=trigger_id))

    async def record_trigger_activity(self, marks: list[SessionMark], executions: list[Execution]) -> None:
        if marks or executions:
            await self._trigger_write(functools.partial(_record_in_transaction, marks=marks, executions=executions))

    async def trigger_session_marks(self, project: str, session_id: str) -> list[SessionMark]:
        return await self._read(functools.partial(session_marks, project=project, session_id=session_id))

    async def trigger_executions(self, project: str, trigger_id: str, limit: int) -> list[Execution]:
        return await self._read(functools.partial(executions, project=project, trigger_id=trigger_id, limit=limit))

    async def trigger_counts(self, project: str, trigger_id: str) -> list[VariantCounts]:
        return await self._read(functools.partial(counts, project=project, trigger_id=trigger_id))
