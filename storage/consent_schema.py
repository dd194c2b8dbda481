"""The consent tables (issue 14), for both backends: part of schema migration 4, which
storage/sqlite_schema.py and storage/postgres_schema.py assemble from this module and its siblings.

- ``consent_audit``: every consent change ever recorded (``POST /api/v1/behavioral/consent`` and the
  deletion's suppression), append-only. ``id`` grows monotonically in commit order on each backend
  (SQLite: one writer thread; PostgreSQL: inserts take a transaction-scoped advisory lock), so a
  node that has read every row up to ``id`` N never misses one below it: the nodes' ConsentBooks
  (actors/privacy/consent.py) reload only the rows after the last id they saw. ``granted`` is the
  effective mask of granted categories (storage/consent_records.py); ``consent_date`` is the
  client's date, ``recorded_ms`` the server's.
- ``consent_current``: per project and user, the newest audit row's mask: what a node loads at start
  (bounded by the users who ever sent consent, not by the length of the trail).
"""

from __future__ import annotations

from typing import Final

_COLUMNS: Final = """
        project TEXT NOT NULL,
        user_id TEXT NOT NULL,
        consent_id TEXT NOT NULL,
        status TEXT NOT NULL,
        granted INTEGER NOT NULL,
        consent_type TEXT,
        consent_source TEXT,
        consent_date BIGINT NOT NULL,
        recorded_ms BIGINT NOT NULL
"""
_CURRENT: Final = """
    CREATE TABLE consent_current (
        project TEXT NOT NULL,
        user_id TEXT NOT NULL,
        audit_id BIGINT NOT NULL,
        granted INTEGER NOT NULL,
        PRIMARY KEY (project, user_id)
    )
"""
_TRAIL: Final = "CREATE INDEX consent_audit_trail ON consent_audit (project, user_id, id)"

SQLITE_DDL: Final[tuple[str, ...]] = (
    f"CREATE TABLE consent_audit (id INTEGER PRIMARY KEY AUTOINCREMENT, {_COLUMNS})",
    _TRAIL,
    _CURRENT,
)
POSTGRES_DDL: Final[tuple[str, ...]] = (
    f"CREATE TABLE consent_audit (id bigserial PRIMARY KEY, {_COLUMNS})",
    _TRAIL,
    _CURRENT,
)
