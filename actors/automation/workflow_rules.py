"""The workflows of every project as this node's session actors see them: a rule source of the
TriggerIndex (``install_any_event``), kept in step with the Store.

A change made on this node (the workflow routes) is applied at once (``put`` / ``remove``); the
other nodes' changes, and status changes by the approval gate (``set_workflow_status``), arrive by
the periodic reload (``run``: every RELOAD_S seconds). A row whose (updated, status, approval) is
the one compiled already is reused (a decision changes the approval, hence the rule's conditions).
"""

from __future__ import annotations

import logging
from typing import Any, Final

import msgspec
import trio

from actors.automation.approval import ApprovalGate
from actors.automation.index import CompiledTrigger, TriggerIndex
from actors.automation.workflows import WorkflowDef, compile_workflow
from storage.workflow_records import WorkflowRow

log = logging.getLogger("pulse.automation")

RELOAD_S: Final = 2.0
_DECODER: Final = msgspec.json.Decoder(WorkflowDef)
_GATE: Final = msgspec.json.Decoder(ApprovalGate)


def approval_of(row: WorkflowRow) -> ApprovalGate | None:
    return None if row.approval is None else _GATE.decode(row.approval)


def decode(row: WorkflowRow) -> WorkflowDef:
    """The stored definition with the row's status and approval (the columns are the truth: the
    approval gate sets them)."""
    return msgspec.structs.replace(_DECODER.decode(row.body), status=row.status, approval=approval_of(row))


class WorkflowRules:
    def __init__(self, index: TriggerIndex) -> None:
        self.index = index
        self._defs: dict[str, dict[str, tuple[WorkflowDef, CompiledTrigger]]] = {}  # project -> id -> (def, rule)
        self.reloads = 0
        self.reload_failures = 0

    def get(self, project: str, workflow_id: str) -> WorkflowDef | None:
        found = self._defs.get(project, {}).get(workflow_id)
        return found[0] if found is not None else None

    def put(self, project: str, workflow: WorkflowDef) -> None:
        defs = dict(self._defs.get(project, {}))
        defs[workflow.workflow_id] = (workflow, compile_workflow(workflow, workflow.status))
        self._install(project, defs)

    def remove(self, project: str, workflow_id: str) -> None:
        defs = dict(self._defs.get(project, {}))
        defs.pop(workflow_id, None)
        self._install(project, defs)

    def replace_all(self, rows: list[WorkflowRow]) -> None:
        grouped: dict[str, dict[str, tuple[WorkflowDef, CompiledTrigger]]] = {}
        for row in rows:
            known = self._defs.get(row.project, {}).get(row.workflow_id)
            try:
                if (known is not None and known[0].updated == row.updated_ms and known[0].status == row.status
                        and known[0].approval == approval_of(row)):
                    grouped.setdefault(row.project, {})[row.workflow_id] = known
                    continue
                workflow = decode(row)
                grouped.setdefault(row.project, {})[row.workflow_id] = (workflow, compile_workflow(workflow, row.status))
            except Exception as exc:  # a row this version cannot read must not hide the others
                log.warning("workflow %s/%s is unreadable and ignored: %r", row.project, row.workflow_id, exc)
        for project in set(self._defs) - set(grouped):
            self._install(project, {})
        for project, defs in grouped.items():
            current = self._defs.get(project, {})
            if defs.keys() != current.keys() or any(defs[k] is not current[k] for k in defs):
                self._install(project, defs)

    def _install(self, project: str, defs: dict[str, tuple[WorkflowDef, CompiledTrigger]]) -> None:
        if defs:
            self._defs[project] = defs
        else:
            self._defs.pop(project, None)
        self.index.install_any_event(project, {k: rule for k, (_, rule) in defs.items()})

    async def run(self, store: Any, *, interval: float = RELOAD_S,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self._reload(store)
        task_status.started()
        while True:
            await trio.sleep(interval)
            await self._reload(store)

    async def _reload(self, store: Any) -> None:
        try:
            rows = await store.list_workflows(None)
        except Exception as exc:  # StoreError: keep what we have, try again next time
            self.reload_failures += 1
            log.warning("workflow reload failed: %r", exc)
            return
        self.replace_all(rows)
        self.reloads += 1
