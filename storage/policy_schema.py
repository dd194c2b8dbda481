"""Project policies and event expiry (issue 14), for both backends: the first part of schema
migration 4, which storage/sqlite_schema.py and storage/postgres_schema.py assemble from this module
and its siblings.

- ``project_policies``: one row per project that changed its privacy and traffic policy
  (protocol/policy.py: consent default, rate limits, adaptive sampling, retention, and the
  salt identifiers are hashed with). ``policy`` is the ProjectPolicy as JSON; a project without a
  row has the defaults.
- ``events.expires_at``: unix ms after which the retention job removes the event (a
  privacy-compliant event's ``retention``); NULL when only the project's retention applies. The
  partial index keeps events without one out of it.
"""

from __future__ import annotations

from typing import Final

_POLICIES: Final = """
    CREATE TABLE project_policies (
        project TEXT PRIMARY KEY,
        policy TEXT NOT NULL,
        updated_ms BIGINT NOT NULL
    )
"""

SQLITE_DDL: Final[tuple[str, ...]] = (
    _POLICIES,
    "ALTER TABLE events ADD COLUMN expires_at INTEGER",
    "CREATE INDEX events_expiry ON events (expires_at) WHERE expires_at IS NOT NULL",
)
POSTGRES_DDL: Final[tuple[str, ...]] = (
    _POLICIES,
    "ALTER TABLE events ADD COLUMN expires_at bigint",
    "CREATE INDEX events_expiry ON events (expires_at) WHERE expires_at IS NOT NULL",
)
