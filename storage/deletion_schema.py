"""The deletion tables (issue 14, part 4), for both backends: part of schema migration 4, which
storage/sqlite_schema.py and storage/postgres_schema.py assemble from this module and its siblings.

- ``deletions``: one row per data deletion request (``DELETE /api/v1/behavioral/data/{userId}``),
  kept as the record that the request was made and carried out: its options (JSON), its status
  (``processing`` -> ``completed`` | ``failed``), the exact counts removed and when. The user id is
  kept in clear: the status routes look requests up by it, and the record of an erasure is
  something a controller must be able to show (GDPR art. 5(2)); it is not event data.
- ``seq_floor`` (SQLite only): the highest event seq ever assigned before a deletion removed the
  newest events. SQLite numbers events itself from ``max(seq) + 1`` at start; without the floor a
  restart after deleting the newest events would hand their seqs out again, and a stream client
  that saw a deleted event's seq would skip the new event that reuses it. PostgreSQL draws seqs
  from a sequence, which never goes back.
"""

from __future__ import annotations

from typing import Final

_DELETIONS: Final = """
    CREATE TABLE deletions (
        deletion_id TEXT PRIMARY KEY,
        project TEXT NOT NULL,
        user_id TEXT NOT NULL,
        status TEXT NOT NULL,
        options TEXT NOT NULL,
        events BIGINT NOT NULL DEFAULT 0,
        sessions BIGINT NOT NULL DEFAULT 0,
        profiles BIGINT NOT NULL DEFAULT 0,
        requested_ms BIGINT NOT NULL,
        completed_ms BIGINT,
        error TEXT
    )
"""
_DELETIONS_BY_USER: Final = "CREATE INDEX deletions_by_user ON deletions (project, user_id, requested_ms)"

SQLITE_DDL: Final[tuple[str, ...]] = (
    _DELETIONS,
    _DELETIONS_BY_USER,
    "CREATE TABLE seq_floor (id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL)",
)
POSTGRES_DDL: Final[tuple[str, ...]] = (_DELETIONS, _DELETIONS_BY_USER)
