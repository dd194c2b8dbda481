"""The SQLite backend's consent statements (storage/consent_records.py has the SQL).

Writes go through the writer thread (one at a time, in queue order), so audit ids grow in commit
order: a reader that saw id N has seen every id below it."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from storage import consent_records as c
from storage.consent_records import ConsentChange, ConsentRow

_T = TypeVar("_T")


def record_consent(conn: sqlite3.Connection, row: ConsentRow) -> ConsentRow:
    conn.execute("BEGIN IMMEDIATE")  # the audit row and the current mask together, or neither
    try:
        audit_id = int(conn.execute(c.INSERT_AUDIT, c.row_params(row)).fetchone()[0])
        conn.execute(c.UPSERT_CURRENT, (row.project, row.user_id, audit_id, row.granted))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return msgspec.structs.replace(row, id=audit_id)


def consent_snapshot(conn: sqlite3.Connection) -> tuple[int, list[ConsentChange]]:
    # the id first: a change committed between the two reads is in the masks and replayed after
    upto = int(conn.execute(c.SELECT_MAX_ID).fetchone()[0])
    return upto, [c.change_from(r) for r in conn.execute(c.SELECT_CURRENT).fetchall()]


class SqliteConsentMethods:
    """SqliteStore's consent methods."""

    if TYPE_CHECKING:
        async def _write_with(self, fn: Callable[..., _T], *args: Any) -> _T: ...
        async def _read(self, fn: Callable[[sqlite3.Connection], _T]) -> _T: ...

    async def record_consent(self, row: ConsentRow) -> ConsentRow:
        return await self._write_with(record_consent, row)

    async def consent_trail(self, project: str, user_id: str, limit: int) -> list[ConsentRow]:
        return await self._read(
            lambda conn: [c.row_from(r) for r in conn.execute(c.SELECT_TRAIL, (project, user_id, limit)).fetchall()]
        )

    async def consent_snapshot(self) -> tuple[int, list[ConsentChange]]:
        return await self._read(consent_snapshot)

    async def consent_changes(self, after_id: int, limit: int) -> list[ConsentChange]:
        return await self._read(
            lambda conn: [c.change_from(r) for r in conn.execute(c.SELECT_CHANGES, (after_id, limit)).fetchall()]
        )
