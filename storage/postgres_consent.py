"""The PostgreSQL backend's consent statements (storage/consent_records.py has the SQL).

A bigserial id is taken at insert, not at commit: two nodes' concurrent inserts could commit ids 11
then 10, and a node that read 11 first would never reload 10. Each insert therefore takes one
transaction-scoped advisory lock, held until its commit: ids are handed out and committed in one
order. Consent changes are rare (a user's banner click), so serialising them costs nothing."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, TypeVar

import msgspec

from storage import consent_records as c
from storage.consent_records import ConsentChange, ConsentRow
from storage.trigger_records import numbered

Connection = Any  # asyncpg.Connection
_T = TypeVar("_T")

AUDIT_LOCK: Final = 0x70756C7365_0C  # pg_advisory_xact_lock key of the consent audit ("pulse", 12)
INSERT_AUDIT: Final = numbered(c.INSERT_AUDIT)
UPSERT_CURRENT: Final = numbered(c.UPSERT_CURRENT)
SELECT_TRAIL: Final = numbered(c.SELECT_TRAIL)
SELECT_CHANGES: Final = numbered(c.SELECT_CHANGES)


async def record_consent(conn: Connection, row: ConsentRow) -> ConsentRow:
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", AUDIT_LOCK)
        audit_id = int(await conn.fetchval(INSERT_AUDIT, *c.row_params(row)))
        await conn.execute(UPSERT_CURRENT, row.project, row.user_id, audit_id, row.granted)
    return msgspec.structs.replace(row, id=audit_id)


async def consent_trail(conn: Connection, project: str, user_id: str, limit: int) -> list[ConsentRow]:
    return [c.row_from(tuple(r)) for r in await conn.fetch(SELECT_TRAIL, project, user_id, limit)]


async def consent_snapshot(conn: Connection) -> tuple[int, list[ConsentChange]]:
    # the id first: a change committed between the two reads is in the masks and replayed after
    upto = int(await conn.fetchval(c.SELECT_MAX_ID))
    return upto, [c.change_from(tuple(r)) for r in await conn.fetch(c.SELECT_CURRENT)]


async def consent_changes(conn: Connection, after_id: int, limit: int) -> list[ConsentChange]:
    return [c.change_from(tuple(r)) for r in await conn.fetch(SELECT_CHANGES, after_id, limit)]


class PostgresConsentMethods:
    """PostgresStore's consent methods: each one crossing, committed when it returns."""

    if TYPE_CHECKING:
        def _require_running(self) -> None: ...
        async def _read(self, work: Callable[[Connection], Awaitable[_T]], *, time_limit_s: float = ...,
                        snapshot: bool = False) -> _T: ...

    async def record_consent(self, row: ConsentRow) -> ConsentRow:
        self._require_running()
        return await self._read(functools.partial(record_consent, row=row))

    async def consent_trail(self, project: str, user_id: str, limit: int) -> list[ConsentRow]:
        return await self._read(functools.partial(consent_trail, project=project, user_id=user_id, limit=limit))

    async def consent_snapshot(self) -> tuple[int, list[ConsentChange]]:
        return await self._read(consent_snapshot)

    async def consent_changes(self, after_id: int, limit: int) -> list[ConsentChange]:
        return await self._read(functools.partial(consent_changes, after_id=after_id, limit=limit))
