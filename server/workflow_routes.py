"""The automation workflow routes (seed 000 "Behavioral Automation Integration API"; docs/automation.md
"Workflows").

Every route needs the project's secret key (or open loopback access), like the trigger routes;
workflows belong to the key's project.

POST   /api/v1/behavioral/automation/workflows                   create (seed body and answer)
GET    /api/v1/behavioral/automation/workflows                   list
GET    /api/v1/behavioral/automation/workflows/{id}              one, with its performance
DELETE /api/v1/behavioral/automation/workflows/{id}              delete it, its actions and its marks
GET    /api/v1/behavioral/automation/workflows/{id}/executions   its scheduled and run actions, newest first

Create applies the approval gate as trigger create does (server/approval_routes.py
``gate_on_create``): ``requiresApproval``, a high or critical ``impact.riskLevel`` or an expected reach
over the project's threshold stores it ``pending_approval`` with an open approval, whose id the
answer carries (``approvalId``, ``approval``). The approval is kept in the row's approval column.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

import msgspec
from quart import Response, request

from actors.automation.definition import ABTest, Variant
from actors.automation.performance import performance
from actors.automation.workflow_rules import decode
from actors.automation.workflows import WORKFLOW_PREFIX, WorkflowDef, parse_workflow
from protocol.errors import InvalidInput
from protocol.normalize import iso_ms
from server import approval_routes
from server.json_body import json_object
from server.trigger_routes import MAX_BODY
from storage.workflow_records import ACTION_STATUSES, ScheduledAction, WorkflowRow

BASE: Final = "/api/v1/behavioral/automation/workflows"
MAX_WORKFLOWS: Final = 200  # per project: each one is evaluated on every event of every session
MAX_ID: Final = 200
DEFAULT_EXECUTIONS: Final = 50
MAX_EXECUTIONS: Final = 500
Json = Callable[..., Response]
_json = msgspec.json.Encoder()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _row(project: str, workflow: WorkflowDef) -> WorkflowRow:
    """The stored row: status and approval in their own columns (the approval gate changes them),
    the rest of the definition as the body."""
    body = msgspec.structs.replace(workflow, approval=None)
    approval = None if workflow.approval is None else _json.encode(workflow.approval).decode()
    return WorkflowRow(project=project, workflow_id=workflow.workflow_id, status=workflow.status,
                       created_ms=workflow.created, updated_ms=workflow.updated, body=_json.encode(body).decode(),
                       approval=approval)


def approval_answer(workflow: WorkflowDef) -> dict[str, Any]:
    """The create answer's approval part (as for triggers): the request that holds it."""
    if workflow.status != "pending_approval" or workflow.approval is None:
        return {}
    held = workflow.approval
    return {"approvalId": held.approval_id,
            "approval": {"approvalId": held.approval_id, "status": "pending", "reason": held.reason}}


def _test(workflow: WorkflowDef) -> ABTest | None:
    opt = workflow.optimization
    if opt is None or not opt.ab_test or opt.test_id is None:
        return None
    return ABTest(test_id=opt.test_id, variants=[Variant(name=n, actions=[]) for n in opt.variants],
                  traffic_split=list(opt.traffic_split), created=workflow.created)


def workflow_performance(counts: list[Any], workflow: WorkflowDef) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The seed's ``performance`` and ``optimization`` blocks, from the sessions the engine recorded."""
    test = _test(workflow)
    figures = performance(counts, test)
    answer: dict[str, Any] = {
        "triggerRate": figures["triggerRate"],
        "conversionRate": figures["conversionRate"],
        "roi": None,  # Pulse records no revenue or cost of an action: there is nothing to compute it from
        "engagement": figures["engagement"],
        "sessions": {"evaluated": figures["sessions"]["withEventType"], "fired": figures["sessions"]["fired"],
                     "firedThenConverted": figures["sessions"]["firedThenConverted"]},
        "definitions": {
            "triggerRate": "sessions it fired in / sessions that had an event while it was active",
            "conversionRate": "fired sessions with a conversion event after the firing / fired sessions",
            "roi": "null: no revenue or cost data is recorded for workflow actions",
        },
    }
    optimization: dict[str, Any] | None = None
    if workflow.optimization is not None:
        block: dict[str, Any] = {"abTest": workflow.optimization.ab_test}
        if test is not None:
            ab = figures["abTest"]
            block.update({
                "testId": test.test_id,
                "variants": [{"variant": v["variant"], "traffic": v["trafficSplit"], "performance": v["conversionRate"],
                              "exposures": v["exposures"], "conversions": v["conversions"],
                              **({"versusBaseline": v["versusBaseline"]} if "versusBaseline" in v else {})}
                             for v in ab["variants"]],
                "baseline": ab["baseline"],
                "performance": "conversion rate of the variant's exposed sessions (null before any exposure)",
            })
        optimization = block
    return answer, optimization


def view(workflow: WorkflowDef) -> dict[str, Any]:
    body = msgspec.to_builtins(workflow)
    body["created"] = iso_ms(workflow.created)
    body["updated"] = iso_ms(workflow.updated)
    if body.get("impact") is None:
        body.pop("impact", None)
    return body


def execution_view(action: ScheduledAction) -> dict[str, Any]:
    detail = msgspec.json.decode(action.detail)
    result = None if action.result is None else msgspec.json.decode(action.result)
    return {
        "actionId": action.id,
        "actionIndex": action.action_index,
        "type": action.action_type,
        "delay": detail["action"]["delay"],
        "parameters": detail["action"].get("parameters", {}),
        "status": action.status,
        "sessionId": action.session_id,
        "userId": action.user_id,
        "variant": action.variant or None,
        "scheduled": iso_ms(action.created_at),
        "dueAt": iso_ms(action.due_at),
        "executedAt": None if action.finished_at is None else iso_ms(action.finished_at),
        "attempts": action.attempts,
        "result": result,
        "firedBy": detail["firedBy"],
    }


def register(app: Any, pulse: Any, access: Callable[[], Awaitable[Any]], json_response: Json) -> None:
    def not_found(workflow_id: str) -> Response:
        reason = f"no workflow {workflow_id!r} in this project"
        return json_response({"success": False, "error": {"code": "not_found", "reason": reason}}, 404)

    async def load(project: str, workflow_id: str) -> WorkflowDef | None:
        if len(workflow_id) > MAX_ID:
            return None
        row = await pulse.store.get_workflow(project, workflow_id)
        return None if row is None else decode(row)

    @app.post(BASE)
    async def create_workflow() -> Response:
        granted = await access()
        project = granted.project.id
        body = await json_object(MAX_BODY)
        now = now_ms()
        workflow = parse_workflow(body, WORKFLOW_PREFIX + secrets.token_hex(8), "test_" + secrets.token_hex(8), now)
        if len(await pulse.store.list_workflows(project)) >= MAX_WORKFLOWS:
            raise InvalidInput("$", f"a project has at most {MAX_WORKFLOWS} workflows; delete one first", status=409,
                               code="limit_reached")
        # the approval gate (docs/automation.md "Approval gates"): requiresApproval, a high or critical
        # riskLevel, or an expected reach over the project's threshold holds it pending_approval
        held = await approval_routes.gate_on_create(
            pulse, project, kind="workflow", target_id=workflow.workflow_id, requires=workflow.requires_approval,
            impact=workflow.impact, description=workflow.description or workflow.workflow_name,
            automation={"workflowName": workflow.workflow_name, "triggers": [t.type for t in workflow.triggers],
                        "actions": [a.type for a in workflow.actions]},
        )  # fmt: skip
        if held is not None:
            workflow = msgspec.structs.replace(workflow, status="pending_approval", approval=held)
        await pulse.store.save_workflow(_row(project, workflow))
        pulse.workflows.rules.put(project, workflow)  # this node at once; the others at their next reload
        figures, optimization = workflow_performance([], workflow)
        answer: dict[str, Any] = {"workflowId": workflow.workflow_id, "status": workflow.status,
                                  "created": iso_ms(workflow.created), "performance": figures}
        if optimization is not None:
            answer["optimization"] = optimization
        answer.update(approval_answer(workflow))
        return json_response(answer, 201)

    @app.get(BASE)
    async def list_workflows() -> Response:
        granted = await access()
        rows = await pulse.store.list_workflows(granted.project.id)
        workflows = [view(decode(row)) for row in rows]
        return json_response({"workflows": workflows, "total": len(workflows)})

    @app.get(f"{BASE}/<workflow_id>")
    async def get_workflow(workflow_id: str) -> Response:
        granted = await access()
        workflow = await load(granted.project.id, workflow_id)
        if workflow is None:
            return not_found(workflow_id)
        counts = await pulse.store.trigger_counts(granted.project.id, workflow_id)
        figures, optimization = workflow_performance(counts, workflow)
        answer = view(workflow)
        answer["performance"] = figures
        if optimization is not None:
            answer["optimization"] = {**answer["optimization"], **optimization}
        return json_response(answer)

    @app.delete(f"{BASE}/<workflow_id>")
    async def delete_workflow(workflow_id: str) -> Response:
        granted = await access()
        project = granted.project.id
        if len(workflow_id) > MAX_ID or not await pulse.store.delete_workflow(project, workflow_id):
            return not_found(workflow_id)
        pulse.workflows.rules.remove(project, workflow_id)
        pulse.triggers.limits.forget(project, workflow_id)  # its approval conditions' counts
        return json_response({"deleted": True, "workflowId": workflow_id})

    @app.get(f"{BASE}/<workflow_id>/executions")
    async def workflow_executions(workflow_id: str) -> Response:
        granted = await access()
        project = granted.project.id
        workflow = await load(project, workflow_id)
        if workflow is None:
            return not_found(workflow_id)
        raw_limit = request.args.get("limit", str(DEFAULT_EXECUTIONS))
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_EXECUTIONS:
            raise InvalidInput("limit", f"an integer from 1 to {MAX_EXECUTIONS}")
        status = request.args.get("status")
        if status is not None and status not in ACTION_STATUSES:
            raise InvalidInput("status", f"one of {', '.join(ACTION_STATUSES)}")
        actions = await pulse.store.list_workflow_actions(project, workflow_id, MAX_EXECUTIONS)
        shown = [execution_view(a) for a in actions if status is None or a.status == status][: int(raw_limit)]
        return json_response({"workflowId": workflow_id, "status": workflow.status, "executions": shown,
                              "count": len(shown)})
