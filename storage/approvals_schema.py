"""The approvals tables (issue 13), for both backends: part of schema migration 3, which
storage/sqlite_schema.py and storage/postgres_schema.py assemble from this module and its siblings.

- ``approvals``: one human-in-the-loop approval request (seed "Approval Gates API"). ``status`` is
  ``pending`` until decided, then ``approved`` or ``rejected``; ``decision`` keeps the exact decision
  (``approved_with_conditions`` is status ``approved``). ``target_kind`` / ``target_id`` name the
  trigger or workflow it gates ('' when it gates nothing stored). ``request`` is the validated
  request body as JSON, ``conditions`` the decision's conditions as a JSON list.
- ``approval_settings``: per-project gate settings (the expected-reach threshold); a project
  without a row uses the documented default (actors/automation/approval.py).
- ``sync_cursors``: per project and webhook receiver, the last event seq exported by
  ``POST /api/v1/behavioral/integration/sync`` and when (server/integrations.py).
"""

from __future__ import annotations

from typing import Final

_APPROVALS: Final = """
    CREATE TABLE approvals (
        project TEXT NOT NULL,
        approval_id TEXT NOT NULL,
        status TEXT NOT NULL,
        decision TEXT,
        target_kind TEXT NOT NULL,
        target_id TEXT NOT NULL,
        reason TEXT NOT NULL,
        request TEXT NOT NULL,
        conditions TEXT NOT NULL,
        approver TEXT,
        created_ms BIGINT NOT NULL,
        decided_ms BIGINT,
        PRIMARY KEY (project, approval_id)
    )
"""
_APPROVALS_RECENT: Final = "CREATE INDEX approvals_recent ON approvals (project, created_ms)"
_SETTINGS: Final = """
    CREATE TABLE approval_settings (
        project TEXT PRIMARY KEY,
        reach_threshold BIGINT NOT NULL,
        updated_ms BIGINT NOT NULL
    )
"""
_CURSORS: Final = """
    CREATE TABLE sync_cursors (
        project TEXT NOT NULL,
        webhook_id TEXT NOT NULL,
        after_seq BIGINT NOT NULL,
        synced_ms BIGINT NOT NULL,
        events_sent BIGINT NOT NULL,
        PRIMARY KEY (project, webhook_id)
    )
"""

SQLITE_DDL: Final[tuple[str, ...]] = (_APPROVALS, _APPROVALS_RECENT, _SETTINGS, _CURSORS)
POSTGRES_DDL: Final[tuple[str, ...]] = (_APPROVALS, _APPROVALS_RECENT, _SETTINGS, _CURSORS)
