"""The SQLite backend's workflow statements (storage/workflow_records.py has the shared SQL): writes
on SqliteStore's writer thread (in queue order with the appends), reads on its read pool."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, TypeVar

from storage import workflow_records as w
from storage.sqlite_transaction import transaction
from storage.workflow_records import ActionClaim, NewAction, ScheduledAction, WorkflowRow

_T = TypeVar("_T")

# One statement: the claim is atomic, and SQLite has one writer, so no two claims ever overlap.
_CLAIM: Final = f"""
UPDATE workflow_actions
SET status = 'running', lease_owner = :owner, lease_until = :until, attempts = attempts + 1
WHERE id IN (
    SELECT id FROM workflow_actions
    WHERE (status = 'scheduled' AND due_at <= :now) OR (status = 'running' AND lease_until <= :now)
    ORDER BY due_at, id LIMIT :limit
)
RETURNING {w.ACTION_COLUMNS}
"""


def save_workflow(conn: sqlite3.Connection, row: WorkflowRow) -> None:
    conn.execute(w.UPSERT_WORKFLOW, (row.project, row.workflow_id, row.status, row.created_ms, row.updated_ms, row.body,
                                     row.approval))


def delete_workflow(conn: sqlite3.Connection, project: str, workflow_id: str) -> bool:
    def work() -> bool:
        deleted = conn.execute(w.DELETE_WORKFLOW[0], (project, workflow_id)).rowcount
        for statement in w.DELETE_WORKFLOW[1:]:
            conn.execute(statement, (project, workflow_id))
        return bool(deleted)

    return transaction(conn, work)


def set_status(conn: sqlite3.Connection, project: str, workflow_id: str, status: str, approval: str | None) -> bool:
    return conn.execute(w.SET_STATUS, (status, approval, project, workflow_id)).rowcount == 1


def schedule(conn: sqlite3.Connection, rows: list[NewAction]) -> int:
    before = conn.total_changes
    transaction(conn, lambda: conn.executemany(w.INSERT_ACTION, [w.new_action_params(r) for r in rows]))
    return conn.total_changes - before


def claim(conn: sqlite3.Connection, c: ActionClaim) -> list[ScheduledAction]:
    params = {"owner": c.owner, "until": c.now_ms + c.lease_ms, "now": c.now_ms, "limit": c.limit}
    rows = [w.action(row) for row in conn.execute(_CLAIM, params).fetchall()]
    return sorted(rows, key=lambda a: (a.due_at, a.id))


def finish(conn: sqlite3.Connection, params: tuple[object, ...]) -> bool:
    return conn.execute(w.FINISH_ACTION, params).rowcount == 1


class SqliteWorkflowMethods:
    """SqliteStore's workflow methods."""

    if TYPE_CHECKING:
        async def _write_with(self, fn: Callable[..., _T], *args: Any) -> _T: ...
        async def _read(self, fn: Callable[[sqlite3.Connection], _T]) -> _T: ...

    async def save_workflow(self, row: WorkflowRow) -> None:
        await self._write_with(save_workflow, row)

    async def get_workflow(self, project: str, workflow_id: str) -> WorkflowRow | None:
        found = await self._read(lambda conn: conn.execute(w.SELECT_WORKFLOW, (project, workflow_id)).fetchone())
        return None if found is None else WorkflowRow(*found)

    async def list_workflows(self, project: str | None) -> list[WorkflowRow]:
        def read(conn: sqlite3.Connection) -> list[WorkflowRow]:
            rows = conn.execute(w.SELECT_ALL_WORKFLOWS) if project is None else conn.execute(w.SELECT_WORKFLOWS,
                                                                                             (project,))
            return [WorkflowRow(*row) for row in rows]

        return await self._read(read)

    async def delete_workflow(self, project: str, workflow_id: str) -> bool:
        return await self._write_with(delete_workflow, project, workflow_id)

    async def set_workflow_status(self, project: str, workflow_id: str, status: str,
                                  approval: str | None = None) -> bool:
        return await self._write_with(set_status, project, workflow_id, status, approval)

    async def schedule_workflow_actions(self, rows: list[NewAction]) -> int:
        if not rows:
            return 0
        return await self._write_with(schedule, rows)

    async def claim_workflow_actions(self, claim_: ActionClaim) -> list[ScheduledAction]:
        # A write (it leases), on the one writer: exclusive on one node, and the lease is still
        # written so that a restart knows which rows were mid-run.
        return await self._write_with(claim, claim_)

    async def finish_workflow_action(self, action_id: str, owner: str, status: str, now_ms: int,
                                     result: str | None) -> bool:  # fmt: skip
        return await self._write_with(finish, w.finish_params(action_id, owner, status, now_ms, result))

    async def list_workflow_actions(self, project: str, workflow_id: str, limit: int) -> list[ScheduledAction]:
        return await self._read(lambda conn: [w.action(r) for r in conn.execute(w.SELECT_ACTIONS,
                                                                                 (project, workflow_id, limit))])

    async def workflow_action_depth(self) -> tuple[int, int]:
        row = await self._read(lambda conn: conn.execute(w.ACTION_DEPTH).fetchone())
        return int(row[0]), int(row[1])
