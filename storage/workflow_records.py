"""What the Store keeps about automation workflows (tables: storage/workflows_schema.py), the SQL
both backends share (``?`` placeholders; storage.trigger_records.numbered makes PostgreSQL's), and
the Store interface of it. Times are unix milliseconds."""

from __future__ import annotations

from typing import Final, Protocol

import msgspec

SCHEDULED: Final = "scheduled"
RUNNING: Final = "running"
DONE: Final = "done"
ACTION_STATUSES: Final = (SCHEDULED, RUNNING, DONE)


class WorkflowRow(msgspec.Struct, frozen=True):
    project: str
    workflow_id: str
    status: str  # active | paused | pending_approval | rejected (only active fires)
    created_ms: int
    updated_ms: int
    body: str  # actors/automation/workflows.py WorkflowDef as JSON
    approval: str | None = None  # actors/automation/approval.py ApprovalGate as JSON (the column wins)


class NewAction(msgspec.Struct, frozen=True, kw_only=True):
    """An action to schedule for a session the workflow fired in."""

    id: str  # deterministic: the same firing schedules it once
    project: str
    workflow_id: str
    session_id: str
    user_id: str | None
    action_index: int
    action_type: str
    variant: str
    due_at: int
    created_at: int
    detail: str  # JSON: the action, the firing (event, reasons, variant)


class ScheduledAction(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    project: str
    workflow_id: str
    session_id: str
    user_id: str | None
    action_index: int
    action_type: str
    variant: str
    due_at: int
    status: str  # scheduled | running | done
    attempts: int  # runs started (counted when claimed)
    lease_owner: str | None
    lease_until: int | None
    created_at: int
    finished_at: int | None
    detail: str
    result: str | None  # JSON: what running it did (webhooks recorded, stream pushed, node)


class ActionClaim(msgspec.Struct, frozen=True, kw_only=True):
    owner: str  # the node id, written as lease_owner
    now_ms: int
    lease_ms: int
    limit: int


ACTION_COLUMNS: Final = (
    "id, project, workflow_id, session_id, user_id, action_index, action_type, variant, due_at, status, attempts,"
    " lease_owner, lease_until, created_at, finished_at, detail, result"
)
ACTION_FIELDS: Final = ACTION_COLUMNS.replace(" ", "").split(",")
_WF_COLUMNS: Final = "project, workflow_id, status, created_ms, updated_ms, body, approval"

UPSERT_WORKFLOW: Final = (
    f"INSERT INTO workflows ({_WF_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (project, workflow_id) DO UPDATE SET status = excluded.status, updated_ms = excluded.updated_ms,"
    " body = excluded.body, approval = excluded.approval"
)
SELECT_WORKFLOW: Final = f"SELECT {_WF_COLUMNS} FROM workflows WHERE project = ? AND workflow_id = ?"
SELECT_WORKFLOWS: Final = f"SELECT {_WF_COLUMNS} FROM workflows WHERE project = ? ORDER BY created_ms, workflow_id"
SELECT_ALL_WORKFLOWS: Final = f"SELECT {_WF_COLUMNS} FROM workflows ORDER BY project, created_ms, workflow_id"
# The approval travels with the status: NULL keeps the stored one (a status change without a new gate).
SET_STATUS: Final = (
    "UPDATE workflows SET status = ?, approval = COALESCE(?, approval) WHERE project = ? AND workflow_id = ?"
)
# The workflow, its actions, and what the trigger engine recorded for it (its rule id is the
# workflow id: once-per-session marks and firing executions).
DELETE_WORKFLOW: Final = (
    "DELETE FROM workflows WHERE project = ? AND workflow_id = ?",
    "DELETE FROM workflow_actions WHERE project = ? AND workflow_id = ?",
    "DELETE FROM trigger_sessions WHERE project = ? AND trigger_id = ?",
    "DELETE FROM trigger_executions WHERE project = ? AND trigger_id = ?",
)
INSERT_ACTION: Final = (
    "INSERT INTO workflow_actions (id, project, workflow_id, session_id, user_id, action_index, action_type, variant,"
    " due_at, status, attempts, created_at, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'scheduled', 0, ?, ?)"
    " ON CONFLICT (id) DO NOTHING"
)
FINISH_ACTION: Final = (
    "UPDATE workflow_actions SET status = ?, finished_at = ?, result = ?,"
    " due_at = CASE WHEN ? = 'done' THEN due_at ELSE ? END, lease_owner = NULL, lease_until = NULL"
    " WHERE id = ? AND status = 'running' AND lease_owner = ?"
)
SELECT_ACTIONS: Final = (
    f"SELECT {ACTION_COLUMNS} FROM workflow_actions WHERE project = ? AND workflow_id = ?"
    " ORDER BY created_at DESC, action_index DESC, id DESC LIMIT ?"
)
ACTION_DEPTH: Final = (
    "SELECT (SELECT count(*) FROM workflow_actions WHERE status = 'scheduled'),"
    " (SELECT count(*) FROM workflow_actions WHERE status = 'running')"
)


def finish_params(action_id: str, owner: str, status: str, now_ms: int, result: str | None) -> tuple[object, ...]:
    return (status, now_ms if status == DONE else None, result, status, now_ms, action_id, owner)


def new_action_params(a: NewAction) -> tuple[object, ...]:
    return (a.id, a.project, a.workflow_id, a.session_id, a.user_id, a.action_index, a.action_type, a.variant,
            a.due_at, a.created_at, a.detail)


def action(row: tuple[object, ...]) -> ScheduledAction:
    return ScheduledAction(**dict(zip(ACTION_FIELDS, row, strict=True)))  # type: ignore[arg-type]


class WorkflowStore(Protocol):
    """The Store's workflow methods (part of storage.base.Store; both backends implement them)."""

    async def save_workflow(self, row: WorkflowRow) -> None:
        """Insert or replace a definition (created_ms is kept from the first save)."""
    async def get_workflow(self, project: str, workflow_id: str) -> WorkflowRow | None: ...
    async def list_workflows(self, project: str | None) -> list[WorkflowRow]:
        """The project's workflows, oldest first; every project's when ``project`` is None."""
    async def delete_workflow(self, project: str, workflow_id: str) -> bool:
        """Remove the workflow, its scheduled and done actions, and its firing marks; False when
        the project has no such workflow."""
    async def set_workflow_status(self, project: str, workflow_id: str, status: str,
                                  approval: str | None = None) -> bool:
        """Set the status (the approval gate: pending_approval -> active | rejected) and, when given,
        the approval (ApprovalGate JSON: the pending request, or the decision with its conditions;
        None keeps the stored one); False when the project has no such workflow. Every node applies
        it at its next reload."""
    async def schedule_workflow_actions(self, rows: list[NewAction]) -> int:
        """Store the actions as scheduled (one transaction, committed when this returns); an id
        stored before is skipped. Returns how many were new."""
    async def claim_workflow_actions(self, claim: ActionClaim) -> list[ScheduledAction]:
        """Atomically lease due actions (scheduled and due, or running with an expired lease) to
        ``claim.owner``: status running, attempts + 1, oldest due first. Concurrent claims (other
        nodes) never get the same row while its lease holds."""
    async def finish_workflow_action(self, action_id: str, owner: str, status: str, now_ms: int,
                                     result: str | None) -> bool:
        """End a run: ``done`` (with its result) or ``scheduled`` again (given back at shutdown, due
        now), only while ``owner`` still holds the lease (else False: fenced)."""
    async def list_workflow_actions(self, project: str, workflow_id: str, limit: int) -> list[ScheduledAction]:
        """The workflow's actions, newest first."""
    async def workflow_action_depth(self) -> tuple[int, int]:
        """(scheduled, running) actions of every project."""
