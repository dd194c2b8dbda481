"""What the ingest pipeline makes of a batch's trigger activity: Store rows (marks and executions),
``trigger_notification`` stream messages, and ``trigger_fired`` webhook data."""

from __future__ import annotations

import time
from typing import Any

import msgspec

from actors.automation.engine import CONVERTED, ELIGIBLE, EXPOSED, FIRED, Activity, Fired
from storage.trigger_records import Execution, SessionMark

_json = msgspec.json.Encoder()


def session_marks(project: str, session_id: str, activity: list[Activity]) -> list[SessionMark]:
    """One merged row per trigger of the session (the Store merges it with what it has)."""
    rows: dict[str, dict[str, Any]] = {}
    for item in activity:
        row = rows.setdefault(item.trigger_id, {"variant": "", "fires": 0})
        if item.variant and not row["variant"]:
            row["variant"] = item.variant
        if item.kind == ELIGIBLE:
            row.setdefault("eligible_ms", item.at)
        elif item.kind == EXPOSED:
            row.setdefault("exposed_ms", item.at)
        elif item.kind == FIRED:
            row.setdefault("fired_ms", item.at)
            row["last_fired_ms"] = max(row.get("last_fired_ms", item.at), item.at)
            row["fires"] += 1
            if item.engagement is not None:
                row.setdefault("engagement", item.engagement)
        elif item.kind == CONVERTED:
            row.setdefault("converted_ms", item.at)
    return [SessionMark(project=project, trigger_id=tid, session_id=session_id, **row) for tid, row in rows.items()]


def execution(project: str, session_id: str, user_id: str | None, fired: Fired, source: str | None = None) -> Execution:
    detail = {
        "eventType": fired.event_type,
        "eventSeq": fired.seq,
        "eventTime": fired.at,
        "reasons": fired.reasons,
        "actions": fired.actions,
        "personalization": fired.personalization,
        "engagementScore": fired.engagement,
    }
    return Execution(
        project=project,
        execution_id=fired.execution_id,
        trigger_id=fired.trigger_id,
        session_id=session_id,
        user_id=user_id,
        variant=fired.variant,
        executed_ms=time.time_ns() // 1_000_000,
        source=source or ("event" if fired.executed else "control"),
        executed=fired.executed,
        detail=_json.encode(detail).decode(),
    )


def notification(fired: Fired, session_id: str, user_id: str | None) -> dict[str, Any]:
    """The seed's ``trigger_notification`` (seed 000, "Real-time trigger notifications") with what
    a page needs to act on it: the action's parameters, the variant, the execution id."""
    first = fired.actions[0] if fired.actions else None
    return {
        "type": "trigger_notification",
        "triggerId": fired.trigger_id,
        "triggerType": fired.trigger_type,
        "action": first["type"] if first else None,
        "urgency": fired.urgency,
        "personalization": fired.personalization,
        "actions": fired.actions,
        "variant": fired.variant or None,
        "executionId": fired.execution_id,
        "sessionId": session_id,
        "userId": user_id,
        "eventType": fired.event_type,
        "timestamp": fired.at,
    }


def webhook_data(fired: Fired, session_id: str, user_id: str | None) -> dict[str, Any]:
    data = notification(fired, session_id, user_id)
    del data["type"]
    data["reasons"] = msgspec.to_builtins(fired.reasons)
    return data
