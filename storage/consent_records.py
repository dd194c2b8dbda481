"""Consent records in the Store (issue 14; tables in storage/consent_schema.py). The SQL is written
with ``?`` placeholders (SQLite) and numbered for PostgreSQL by ``storage.trigger_records.numbered``.

A user's consent is a mask of granted categories (bits below). Each change is one append-only audit
row; the newest row per user is also kept in ``consent_current`` for a cheap load at start.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, Protocol

import msgspec

from protocol.privacy import ADVERTISING, ANALYTICS, CATEGORIES, MARKETING, PERSONALIZATION

# Bits of the granted-category mask
CATEGORY_BITS: Final = {ANALYTICS: 1, MARKETING: 2, PERSONALIZATION: 4, ADVERTISING: 8}
ALL_GRANTED: Final = 15
NONE_GRANTED: Final = 0

GRANTED: Final = "granted"
DENIED: Final = "denied"
WITHDRAWN: Final = "withdrawn"
STATUSES: Final = (GRANTED, DENIED, WITHDRAWN)


def categories(mask: int) -> dict[str, bool]:
    """The seed's ``granularConsent`` of a mask."""
    return {name: bool(mask & CATEGORY_BITS[name]) for name in CATEGORIES}


class ConsentRow(msgspec.Struct, kw_only=True, frozen=True):
    """One recorded consent change (an audit row). ``id`` is 0 until stored."""

    project: str
    user_id: str
    consent_id: str
    status: str  # GRANTED | DENIED | WITHDRAWN
    granted: int  # the effective mask of granted categories
    consent_type: str | None
    consent_source: str | None
    consent_date: int  # unix ms, as the client stated it
    recorded_ms: int  # unix ms, server clock
    id: int = 0


class ConsentChange(msgspec.Struct, frozen=True, array_like=True):
    """What a node's ConsentBook needs of an audit row."""

    id: int
    project: str
    user_id: str
    granted: int


_ROW_COLUMNS: Final = (
    "project, user_id, consent_id, status, granted, consent_type, consent_source, consent_date, recorded_ms"
)
INSERT_AUDIT: Final = f"INSERT INTO consent_audit ({_ROW_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id"
UPSERT_CURRENT: Final = (
    "INSERT INTO consent_current (project, user_id, audit_id, granted) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (project, user_id) DO UPDATE SET audit_id = excluded.audit_id, granted = excluded.granted"
)
SELECT_TRAIL: Final = (
    f"SELECT {_ROW_COLUMNS}, id FROM consent_audit WHERE project = ? AND user_id = ? ORDER BY id DESC LIMIT ?"
)
SELECT_MAX_ID: Final = "SELECT COALESCE(MAX(id), 0) FROM consent_audit"
SELECT_CURRENT: Final = "SELECT audit_id, project, user_id, granted FROM consent_current"
SELECT_CHANGES: Final = "SELECT id, project, user_id, granted FROM consent_audit WHERE id > ? ORDER BY id LIMIT ?"


def row_params(row: ConsentRow) -> tuple[object, ...]:
    return (row.project, row.user_id, row.consent_id, row.status, row.granted, row.consent_type,
            row.consent_source, row.consent_date, row.recorded_ms)  # fmt: skip


def row_from(r: Sequence[Any]) -> ConsentRow:
    return ConsentRow(
        project=r[0], user_id=r[1], consent_id=r[2], status=r[3], granted=int(r[4]), consent_type=r[5],
        consent_source=r[6], consent_date=int(r[7]), recorded_ms=int(r[8]), id=int(r[9]),
    )  # fmt: skip


def change_from(r: Sequence[Any]) -> ConsentChange:
    return ConsentChange(int(r[0]), r[1], r[2], int(r[3]))


class ConsentStore(Protocol):
    async def record_consent(self, row: ConsentRow) -> ConsentRow:
        """Append ``row`` to the audit trail and make it the user's current consent; answer it with
        its id (monotonic in commit order on this backend). Committed when this returns."""

    async def consent_trail(self, project: str, user_id: str, limit: int) -> list[ConsentRow]:
        """The user's recorded consent changes, newest first, at most ``limit``."""

    async def consent_snapshot(self) -> tuple[int, list[ConsentChange]]:
        """(an audit id N, every user's current mask): every change up to N is in the masks (some
        after N may be too: replaying the changes after N in order converges on the current state)."""

    async def consent_changes(self, after_id: int, limit: int) -> list[ConsentChange]:
        """The audit rows with id > ``after_id``, oldest first, at most ``limit``."""
