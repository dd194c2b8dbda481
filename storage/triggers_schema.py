"""The triggers tables (issue 13), for both backends: part of schema migration 3, which
storage/sqlite_schema.py and storage/postgres_schema.py assemble from this module and its siblings.

- ``triggers``: one row per trigger definition (the validated definition as JSON in ``body``).
- ``trigger_sessions``: what a trigger did in one session, one row per (trigger, session): when the
  session first had the trigger's event type (``eligible_ms``), first met its conditions
  (``exposed_ms``: the A/B exposure; the control variant is exposed but never fires), first fired,
  how often, when it later converted, and the engagement score at the first firing. The
  performance figures are counts over these rows; the session actor rebuilds its "already fired"
  marks from them after a restart.
- ``trigger_executions``: every real execution (an event's firing, a control exposure, or
  ``POST …/execute``), with its reasons, for ``GET …/monitor``.
"""

from __future__ import annotations

from typing import Final

SQLITE_DDL: Final[tuple[str, ...]] = (
    """
    CREATE TABLE triggers (
        project TEXT NOT NULL,
        trigger_id TEXT NOT NULL,
        status TEXT NOT NULL,
        event_type TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (project, trigger_id)
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE trigger_sessions (
        project TEXT NOT NULL,
        trigger_id TEXT NOT NULL,
        session_id TEXT NOT NULL,
        variant TEXT NOT NULL DEFAULT '',
        eligible_ms INTEGER,
        exposed_ms INTEGER,
        fired_ms INTEGER,
        fires INTEGER NOT NULL DEFAULT 0,
        last_fired_ms INTEGER,
        converted_ms INTEGER,
        engagement REAL,
        PRIMARY KEY (project, trigger_id, session_id)
    ) WITHOUT ROWID
    """,
    "CREATE INDEX trigger_sessions_by_session ON trigger_sessions (project, session_id)",
    """
    CREATE TABLE trigger_executions (
        project TEXT NOT NULL,
        execution_id TEXT NOT NULL,
        trigger_id TEXT NOT NULL,
        session_id TEXT NOT NULL,
        user_id TEXT,
        variant TEXT NOT NULL DEFAULT '',
        executed_ms INTEGER NOT NULL,
        source TEXT NOT NULL,
        executed INTEGER NOT NULL,
        detail TEXT NOT NULL,
        PRIMARY KEY (project, execution_id)
    ) WITHOUT ROWID
    """,
    "CREATE INDEX trigger_executions_recent ON trigger_executions (project, trigger_id, executed_ms)",
)

POSTGRES_DDL: Final[tuple[str, ...]] = (
    """
    CREATE TABLE triggers (
        project text NOT NULL,
        trigger_id text NOT NULL,
        status text NOT NULL,
        event_type text NOT NULL,
        created_ms bigint NOT NULL,
        updated_ms bigint NOT NULL,
        body text NOT NULL,
        PRIMARY KEY (project, trigger_id)
    )
    """,
    """
    CREATE TABLE trigger_sessions (
        project text NOT NULL,
        trigger_id text NOT NULL,
        session_id text NOT NULL,
        variant text NOT NULL DEFAULT '',
        eligible_ms bigint,
        exposed_ms bigint,
        fired_ms bigint,
        fires integer NOT NULL DEFAULT 0,
        last_fired_ms bigint,
        converted_ms bigint,
        engagement double precision,
        PRIMARY KEY (project, trigger_id, session_id)
    )
    """,
    "CREATE INDEX trigger_sessions_by_session ON trigger_sessions (project, session_id)",
    """
    CREATE TABLE trigger_executions (
        project text NOT NULL,
        execution_id text NOT NULL,
        trigger_id text NOT NULL,
        session_id text NOT NULL,
        user_id text,
        variant text NOT NULL DEFAULT '',
        executed_ms bigint NOT NULL,
        source text NOT NULL,
        executed boolean NOT NULL,
        detail text NOT NULL,
        PRIMARY KEY (project, execution_id)
    )
    """,
    "CREATE INDEX trigger_executions_recent ON trigger_executions (project, trigger_id, executed_ms)",
)
