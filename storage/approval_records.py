"""The records the Store keeps for approval gates and integration syncs (issue 13 items 5, 6);
tables in storage/approvals_schema.py. The SQL is written with ``?`` placeholders (SQLite) and
numbered for PostgreSQL by ``storage.trigger_records.numbered``. Times are unix milliseconds."""

from __future__ import annotations

from typing import Final, Protocol

import msgspec

PENDING: Final = "pending"
APPROVED: Final = "approved"
REJECTED: Final = "rejected"


class Approval(msgspec.Struct, frozen=True, kw_only=True):
    project: str
    approval_id: str
    status: str  # pending | approved | rejected
    decision: str | None  # approved | approved_with_conditions | rejected
    target_kind: str  # "trigger", "workflow" or "" (gates nothing stored)
    target_id: str
    reason: str  # why it was asked for
    request: str  # the validated request body, JSON
    conditions: str  # the decision's conditions, a JSON list
    approver: str | None
    created_ms: int
    decided_ms: int | None


class Decision(msgspec.Struct, frozen=True, kw_only=True):
    project: str
    approval_id: str
    status: str  # approved | rejected
    decision: str
    conditions: str  # JSON list
    approver: str
    decided_ms: int


class SyncCursor(msgspec.Struct, frozen=True, kw_only=True):
    project: str
    webhook_id: str
    after_seq: int  # every event with seq <= after_seq has been exported to this receiver
    synced_ms: int
    events_sent: int  # in total, over every sync


class CursorAdvance(msgspec.Struct, frozen=True, kw_only=True):
    """Move a cursor from ``expected_seq`` (0 for one never written) to ``after_seq``."""

    project: str
    webhook_id: str
    expected_seq: int
    after_seq: int
    synced_ms: int
    sent: int


class ReceiverHealth(msgspec.Struct, frozen=True, kw_only=True):
    """One webhook receiver's deliveries created since a time, by outcome."""

    webhook_id: str
    delivered: int
    dead: int
    retrying: int  # pending after at least one failed attempt
    in_flight: int  # pending before their first attempt, or being attempted
    last_delivered_ms: int | None  # the newest successful delivery (any time)
    last_error: str | None  # the newest failed attempt's error among open or dead rows
    last_status: int | None


_APPROVAL_COLUMNS: Final = ("project, approval_id, status, decision, target_kind, target_id, reason, request, conditions,"
                            " approver, created_ms, decided_ms")
INSERT_APPROVAL: Final = f"INSERT INTO approvals ({_APPROVAL_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
SELECT_APPROVAL: Final = f"SELECT {_APPROVAL_COLUMNS} FROM approvals WHERE project = ? AND approval_id = ?"
SELECT_APPROVALS: Final = (f"SELECT {_APPROVAL_COLUMNS} FROM approvals WHERE project = ?"
                           " ORDER BY created_ms DESC, approval_id DESC LIMIT ?")
# a decision is taken once: only a pending row changes (a second decision finds none)
DECIDE: Final = ("UPDATE approvals SET status = ?, decision = ?, conditions = ?, approver = ?, decided_ms = ?"
                 " WHERE project = ? AND approval_id = ? AND status = 'pending'")
SELECT_THRESHOLD: Final = "SELECT reach_threshold FROM approval_settings WHERE project = ?"
UPSERT_THRESHOLD: Final = (
    "INSERT INTO approval_settings (project, reach_threshold, updated_ms) VALUES (?, ?, ?)"
    " ON CONFLICT (project) DO UPDATE SET reach_threshold = excluded.reach_threshold, updated_ms = excluded.updated_ms"
)
SELECT_CURSOR: Final = ("SELECT project, webhook_id, after_seq, synced_ms, events_sent FROM sync_cursors"
                        " WHERE project = ? AND webhook_id = ?")
SELECT_CURSORS: Final = ("SELECT project, webhook_id, after_seq, synced_ms, events_sent FROM sync_cursors"
                         " WHERE project = ? ORDER BY webhook_id")
# compare and set: two syncs racing for one receiver move its cursor once
ADVANCE_CURSOR: Final = (
    "INSERT INTO sync_cursors (project, webhook_id, after_seq, synced_ms, events_sent) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT (project, webhook_id) DO UPDATE SET after_seq = excluded.after_seq,"
    " synced_ms = excluded.synced_ms, events_sent = sync_cursors.events_sent + excluded.events_sent"
    " WHERE sync_cursors.after_seq = ?"
)
RECEIVER_COUNTS: Final = (
    "SELECT webhook_id,"
    " count(CASE WHEN status = 'delivered' THEN 1 END),"
    " count(CASE WHEN status = 'dead' THEN 1 END),"
    " count(CASE WHEN status = 'pending' AND attempts > 0 THEN 1 END),"
    " count(CASE WHEN status = 'delivering' OR (status = 'pending' AND attempts = 0) THEN 1 END)"
    " FROM webhook_deliveries WHERE project = ? AND created_at >= ? GROUP BY webhook_id"
)
RECEIVER_LAST_DELIVERED: Final = (
    "SELECT webhook_id, max(finished_at) FROM webhook_deliveries WHERE project = ? AND status = 'delivered'"
    " GROUP BY webhook_id"
)
# the newest failure per receiver: a bounded scan of the newest failed rows (the per-hook index)
RECEIVER_ERRORS: Final = (
    "SELECT webhook_id, last_error, last_status FROM webhook_deliveries"
    " WHERE project = ? AND status IN ('pending', 'delivering', 'dead') AND last_error IS NOT NULL"
    " ORDER BY created_at DESC LIMIT 200"
)


def approval(row: tuple[object, ...]) -> Approval:
    names = _APPROVAL_COLUMNS.replace(" ", "").split(",")
    return Approval(**dict(zip(names, row, strict=True)))  # type: ignore[arg-type]


def decision_params(d: Decision) -> tuple[object, ...]:
    return (d.status, d.decision, d.conditions, d.approver, d.decided_ms, d.project, d.approval_id)


def advance_params(a: CursorAdvance) -> tuple[object, ...]:
    return (a.project, a.webhook_id, a.after_seq, a.synced_ms, a.sent, a.expected_seq)


def receiver_health(counts: list[tuple[object, ...]], delivered: list[tuple[object, ...]],
                    errors: list[tuple[object, ...]]) -> list[ReceiverHealth]:  # fmt: skip
    last_ok = {str(row[0]): row[1] for row in delivered}
    last_error: dict[str, tuple[object, object]] = {}
    for row in errors:  # newest first: the first one per receiver is kept
        last_error.setdefault(str(row[0]), (row[1], row[2]))
    by_hook = {str(row[0]): row for row in counts}
    out = []
    for hook in sorted(set(by_hook) | set(last_ok) | set(last_error)):
        row = by_hook.get(hook, (hook, 0, 0, 0, 0))
        error, status = last_error.get(hook, (None, None))
        ok = last_ok.get(hook)
        out.append(ReceiverHealth(
            webhook_id=hook, delivered=int(row[1]), dead=int(row[2]), retrying=int(row[3]),  # type: ignore[call-overload]
            in_flight=int(row[4]), last_delivered_ms=None if ok is None else int(ok),  # type: ignore[call-overload]
            last_error=None if error is None else str(error), last_status=None if status is None else int(status),  # type: ignore[call-overload]
        ))  # fmt: skip
    return out


class ApprovalStore(Protocol):
    """The Store's approval and sync methods (part of storage.base.Store; both backends)."""

    async def create_approval(self, row: Approval) -> None: ...
    async def get_approval(self, project: str, approval_id: str) -> Approval | None: ...
    async def list_approvals(self, project: str, limit: int) -> list[Approval]:
        """The project's approvals, newest first."""
    async def decide_approval(self, decision: Decision) -> bool:
        """Record the decision if the approval is still pending (committed when this returns);
        False when there is no such approval or it was decided already."""
    async def reach_threshold(self, project: str) -> int | None:
        """The project's expected-reach threshold; None when it never set one."""
    async def set_reach_threshold(self, project: str, threshold: int, now_ms: int) -> None: ...
    async def sync_cursors(self, project: str) -> list[SyncCursor]: ...
    async def advance_sync_cursor(self, advance_to: CursorAdvance) -> bool:
        """Move the cursor if it is still at ``expected_seq`` (or was never written and
        ``expected_seq`` is 0); False when another sync moved it first."""
    async def receiver_health(self, project: str, since_ms: int) -> list[ReceiverHealth]:
        """Per webhook receiver of the project: its deliveries created since ``since_ms`` by
        outcome, its newest success (any time) and its newest failure."""
