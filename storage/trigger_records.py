"""What the Store keeps about triggers (storage/triggers_schema.py has the tables), and the SQL both
backends share: written with ``?`` placeholders, turned into ``$n`` for PostgreSQL by ``numbered``.
"""

from __future__ import annotations

import re
from typing import Final, Protocol

import msgspec


class TriggerRow(msgspec.Struct, frozen=True):
    project: str
    trigger_id: str
    status: str
    event_type: str
    created_ms: int
    updated_ms: int
    body: str  # the definition as JSON (actors/automation/definition.py TriggerDef)


class SessionMark(msgspec.Struct, frozen=True):
    """What one trigger did in one session. Stored by merging: the first time of each kind wins,
    ``fires`` adds up, ``last_fired_ms`` is the latest."""

    project: str
    trigger_id: str
    session_id: str
    variant: str = ""
    eligible_ms: int | None = None
    exposed_ms: int | None = None
    fired_ms: int | None = None
    fires: int = 0
    last_fired_ms: int | None = None
    converted_ms: int | None = None
    engagement: float | None = None


class Execution(msgspec.Struct, frozen=True):
    project: str
    execution_id: str
    trigger_id: str
    session_id: str
    user_id: str | None
    variant: str
    executed_ms: int
    source: str  # "event" (fired by an event), "control" (exposure of the control variant), "execute"
    executed: bool
    detail: str  # JSON: the event, reasons, actions, notification


class VariantCounts(msgspec.Struct, frozen=True):
    variant: str  # "" without an A/B test
    eligible: int  # sessions that had the trigger's event type
    exposed: int  # sessions that met its conditions
    fired: int
    exposed_converted: int  # exposed sessions that converted after their exposure
    fired_converted: int
    engagement_mean: float | None  # over the fired sessions' engagement at their first firing
    engagement_samples: int


UPSERT_TRIGGER: Final = (
    "INSERT INTO triggers (project, trigger_id, status, event_type, created_ms, updated_ms, body)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (project, trigger_id) DO UPDATE SET status = excluded.status,"
    " event_type = excluded.event_type, updated_ms = excluded.updated_ms, body = excluded.body"
)
SELECT_TRIGGER: Final = (
    "SELECT project, trigger_id, status, event_type, created_ms, updated_ms, body FROM triggers"
    " WHERE project = ? AND trigger_id = ?"
)
SELECT_TRIGGERS: Final = (
    "SELECT project, trigger_id, status, event_type, created_ms, updated_ms, body FROM triggers"
    " WHERE project = ? ORDER BY created_ms, trigger_id"
)
SELECT_ALL_TRIGGERS: Final = (
    "SELECT project, trigger_id, status, event_type, created_ms, updated_ms, body FROM triggers"
    " ORDER BY project, created_ms, trigger_id"
)
DELETE_TRIGGER: Final = (
    "DELETE FROM triggers WHERE project = ? AND trigger_id = ?",
    "DELETE FROM trigger_sessions WHERE project = ? AND trigger_id = ?",
    "DELETE FROM trigger_executions WHERE project = ? AND trigger_id = ?",
)
UPSERT_MARK: Final = (
    "INSERT INTO trigger_sessions (project, trigger_id, session_id, variant, eligible_ms, exposed_ms,"
    " fired_ms, fires, last_fired_ms, converted_ms, engagement) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (project, trigger_id, session_id) DO UPDATE SET"
    " variant = CASE WHEN trigger_sessions.variant = '' THEN excluded.variant ELSE trigger_sessions.variant END,"
    " eligible_ms = COALESCE(trigger_sessions.eligible_ms, excluded.eligible_ms),"
    " exposed_ms = COALESCE(trigger_sessions.exposed_ms, excluded.exposed_ms),"
    " fired_ms = COALESCE(trigger_sessions.fired_ms, excluded.fired_ms),"
    " fires = trigger_sessions.fires + excluded.fires,"
    " last_fired_ms = CASE WHEN excluded.last_fired_ms IS NULL THEN trigger_sessions.last_fired_ms"
    "   WHEN trigger_sessions.last_fired_ms IS NULL OR excluded.last_fired_ms > trigger_sessions.last_fired_ms"
    "   THEN excluded.last_fired_ms ELSE trigger_sessions.last_fired_ms END,"
    " converted_ms = COALESCE(trigger_sessions.converted_ms, excluded.converted_ms),"
    " engagement = COALESCE(trigger_sessions.engagement, excluded.engagement)"
)
SELECT_MARKS: Final = (
    "SELECT project, trigger_id, session_id, variant, eligible_ms, exposed_ms, fired_ms, fires, last_fired_ms,"
    " converted_ms, engagement FROM trigger_sessions WHERE project = ? AND session_id = ?"
)
INSERT_EXECUTION: Final = (
    "INSERT INTO trigger_executions (project, execution_id, trigger_id, session_id, user_id, variant,"
    " executed_ms, source, executed, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (project, execution_id) DO NOTHING"
)
SELECT_EXECUTIONS: Final = (
    "SELECT project, execution_id, trigger_id, session_id, user_id, variant, executed_ms, source, executed, detail"
    " FROM trigger_executions WHERE project = ? AND trigger_id = ? ORDER BY executed_ms DESC, execution_id DESC LIMIT ?"
)
SELECT_COUNTS: Final = (
    "SELECT variant, count(eligible_ms), count(exposed_ms), count(fired_ms),"
    " count(CASE WHEN exposed_ms IS NOT NULL AND converted_ms IS NOT NULL THEN 1 END),"
    " count(CASE WHEN fired_ms IS NOT NULL AND converted_ms IS NOT NULL THEN 1 END),"
    " avg(engagement), count(engagement)"
    " FROM trigger_sessions WHERE project = ? AND trigger_id = ? GROUP BY variant ORDER BY variant"
)

_PLACEHOLDER: Final = re.compile(r"\?")


def numbered(statement: str) -> str:
    """The statement with PostgreSQL's ``$1, $2, …`` for its ``?`` placeholders."""
    counter = iter(range(1, 1000))
    return _PLACEHOLDER.sub(lambda _: f"${next(counter)}", statement)


def mark_params(mark: SessionMark) -> tuple[object, ...]:
    return msgspec.structs.astuple(mark)


def execution_params(execution: Execution) -> tuple[object, ...]:
    return msgspec.structs.astuple(execution)


class TriggerStore(Protocol):
    """The Store's trigger methods (part of storage.base.Store; both backends implement them)."""

    async def save_trigger(self, row: TriggerRow) -> None:
        """Insert or replace a definition (created_ms is kept from the first save)."""
    async def get_trigger(self, project: str, trigger_id: str) -> TriggerRow | None: ...
    async def list_triggers(self, project: str | None) -> list[TriggerRow]:
        """The project's triggers, oldest first; every project's when ``project`` is None."""
    async def delete_trigger(self, project: str, trigger_id: str) -> bool:
        """Remove the trigger and everything recorded about it; False when there was none."""
    async def record_trigger_activity(self, marks: list[SessionMark], executions: list[Execution]) -> None:
        """Merge the session marks and insert the executions (an execution id seen before is
        ignored), in one transaction, committed when this returns."""
    async def trigger_session_marks(self, project: str, session_id: str) -> list[SessionMark]: ...
    async def trigger_executions(self, project: str, trigger_id: str, limit: int) -> list[Execution]:
        """The most recent executions first."""
    async def trigger_counts(self, project: str, trigger_id: str) -> list[VariantCounts]: ...
