"""The PostgreSQL backend's workflow statements (storage/workflow_records.py has the shared SQL) and
PostgresStore's workflow methods (a mixin).

Claims: ``WITH due AS (SELECT ... FOR UPDATE SKIP LOCKED) UPDATE ... RETURNING``: concurrent claims
from several nodes skip the rows another claim holds, and a row whose claim committed is re-checked
(its lease is live, so it is not due): no two nodes ever lease the same action at once.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, TypeVar

from storage import workflow_records as w
from storage.pg_bridge import Connection, transaction
from storage.trigger_records import numbered
from storage.workflow_records import ActionClaim, NewAction, ScheduledAction, WorkflowRow

_T = TypeVar("_T")

_UPSERT: Final = numbered(w.UPSERT_WORKFLOW)
_SELECT: Final = numbered(w.SELECT_WORKFLOW)
_SELECT_PROJECT: Final = numbered(w.SELECT_WORKFLOWS)
_SET_STATUS: Final = numbered(w.SET_STATUS)
_DELETE: Final = tuple(numbered(s) for s in w.DELETE_WORKFLOW)
_INSERT_ACTION: Final = numbered(w.INSERT_ACTION)
_FINISH: Final = numbered(w.FINISH_ACTION).replace("$4 = 'done'", "$4::text = 'done'")
_SELECT_ACTIONS: Final = numbered(w.SELECT_ACTIONS)
_CLAIM: Final = f"""
WITH due AS (
    SELECT id FROM workflow_actions
    WHERE (status = 'scheduled' AND due_at <= $1) OR (status = 'running' AND lease_until <= $1)
    ORDER BY due_at, id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
UPDATE workflow_actions a
SET status = 'running', lease_owner = $3, lease_until = $4, attempts = a.attempts + 1
FROM due WHERE a.id = due.id
RETURNING {", ".join("a." + f for f in w.ACTION_FIELDS)}
"""


def _rowcount(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


async def _save(conn: Connection, row: WorkflowRow) -> None:
    await conn.execute(_UPSERT, row.project, row.workflow_id, row.status, row.created_ms, row.updated_ms, row.body,
                       row.approval)


async def _get(conn: Connection, project: str, workflow_id: str) -> WorkflowRow | None:
    row = await conn.fetchrow(_SELECT, project, workflow_id)
    return None if row is None else WorkflowRow(*row)


async def _list(conn: Connection, project: str | None) -> list[WorkflowRow]:
    if project is None:
        return [WorkflowRow(*row) for row in await conn.fetch(w.SELECT_ALL_WORKFLOWS)]
    return [WorkflowRow(*row) for row in await conn.fetch(_SELECT_PROJECT, project)]


async def _delete(conn: Connection, project: str, workflow_id: str) -> bool:
    async with transaction(conn):
        deleted = _rowcount(await conn.execute(_DELETE[0], project, workflow_id))
        for statement in _DELETE[1:]:
            await conn.execute(statement, project, workflow_id)
    return bool(deleted)


async def _set_status(conn: Connection, project: str, workflow_id: str, status: str, approval: str | None) -> bool:
    return _rowcount(await conn.execute(_SET_STATUS, status, approval, project, workflow_id)) == 1


async def _schedule(conn: Connection, rows: list[NewAction]) -> int:
    new = 0
    async with transaction(conn):
        for r in rows:
            new += _rowcount(await conn.execute(_INSERT_ACTION, *w.new_action_params(r)))
    return new


async def _claim(conn: Connection, c: ActionClaim) -> list[ScheduledAction]:
    rows = await conn.fetch(_CLAIM, c.now_ms, c.limit, c.owner, c.now_ms + c.lease_ms)
    return sorted((w.action(tuple(row)) for row in rows), key=lambda a: (a.due_at, a.id))


async def _finish(conn: Connection, params: tuple[object, ...]) -> bool:
    return _rowcount(await conn.execute(_FINISH, *params)) == 1


async def _actions(conn: Connection, project: str, workflow_id: str, limit: int) -> list[ScheduledAction]:
    return [w.action(tuple(row)) for row in await conn.fetch(_SELECT_ACTIONS, project, workflow_id, limit)]


async def _depth(conn: Connection) -> tuple[int, int]:
    row = await conn.fetchrow(w.ACTION_DEPTH)
    return int(row[0]), int(row[1])


class PostgresWorkflowMethods:
    """PostgresStore's workflow methods: each statement (or short transaction) committed when it returns."""

    if TYPE_CHECKING:
        def _require_running(self) -> None: ...
        async def _read(self, work: Callable[[Connection], Awaitable[_T]], *, time_limit_s: float = ...,
                        snapshot: bool = False) -> _T: ...

    async def _workflow_write(self, work: Callable[[Connection], Awaitable[_T]]) -> _T:
        self._require_running()
        return await self._read(work)

    async def save_workflow(self, row: WorkflowRow) -> None:
        await self._workflow_write(functools.partial(_save, row=row))

    async def get_workflow(self, project: str, workflow_id: str) -> WorkflowRow | None:
        return await self._read(functools.partial(_get, project=project, workflow_id=workflow_id))

    async def list_workflows(self, project: str | None) -> list[WorkflowRow]:
        return await self._read(functools.partial(_list, project=project))

    async def delete_workflow(self, project: str, workflow_id: str) -> bool:
        return await self._workflow_write(functools.partial(_delete, project=project, workflow_id=workflow_id))

    async def set_workflow_status(self, project: str, workflow_id: str, status: str,
                                  approval: str | None = None) -> bool:
        return await self._workflow_write(functools.partial(_set_status, project=project, workflow_id=workflow_id,
                                                            status=status, approval=approval))

    async def schedule_workflow_actions(self, rows: list[NewAction]) -> int:
        if not rows:
            return 0
        return await self._workflow_write(functools.partial(_schedule, rows=rows))

    async def claim_workflow_actions(self, claim: ActionClaim) -> list[ScheduledAction]:
        return await self._workflow_write(functools.partial(_claim, c=claim))

    async def finish_workflow_action(self, action_id: str, owner: str, status: str, now_ms: int,
                                     result: str | None) -> bool:  # fmt: skip
        params: Any = w.finish_params(action_id, owner, status, now_ms, result)
        return await self._workflow_write(functools.partial(_finish, params=params))

    async def list_workflow_actions(self, project: str, workflow_id: str, limit: int) -> list[ScheduledAction]:
        return await self._read(functools.partial(_actions, project=project, workflow_id=workflow_id, limit=limit))

    async def workflow_action_depth(self) -> tuple[int, int]:
        return await self._read(_depth)
