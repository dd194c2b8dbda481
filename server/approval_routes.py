"""The approval-gate routes (seed "HITL Integration Points"; docs/automation.md "Approval gates").

Every route needs the project's secret key (or open loopback access); approvals belong to the
key's project.

POST /api/v1/behavioral/hitl/approval                         request an approval (seed body; may name
                                                              triggerId or workflowId: it is gated now)
GET  /api/v1/behavioral/hitl/approval/{approvalId}            the seed's status answer
POST /api/v1/behavioral/hitl/approval/{approvalId}/decision   {decision, conditions, approver}
GET  /api/v1/behavioral/hitl/approvals?limit=                 the project's approvals, newest first
GET  /api/v1/behavioral/hitl/settings                         {expectedReachThreshold}
PUT  /api/v1/behavioral/hitl/settings                         {expectedReachThreshold}

Creating a trigger (server/trigger_routes.py) or a workflow that needs approval
(actors/automation/approval.py ``needs_approval``) opens an approval through ``gate_on_create``.
The target keeps the approval that gates it (a trigger in its definition, a workflow in its row's
approval column), and the decision with its conditions is applied to it, so the engine enforces
approved_with_conditions for workflows exactly as for triggers.
A decision is taken once (a second one is 409); it is stored first, then applied to its target,
and a repeated decision re-applies a stored one whose target was not reached (a crash in
between): the target converges on the decision.
"""

from __future__ import annotations

import secrets
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

import msgspec
from quart import Response, request
from quart_trio import QuartTrio

from actors.automation import workflow_rules
from actors.automation.approval import (
    DECISIONS,
    DEFAULT_REACH_THRESHOLD,
    ApprovalGate,
    needs_approval,
    parse_conditions,
    parse_impact,
    parse_threshold,
)
from actors.automation.definition import GATED_STATUSES, TriggerDef, public_status
from protocol.errors import InvalidInput
from protocol.normalize import iso_ms
from server import trigger_routes
from server.context import Pulse
from server.json_body import json_object
from storage.approval_records import APPROVED, PENDING, REJECTED, Approval, Decision

BASE: Final = "/api/v1/behavioral/hitl"
MAX_BODY: Final = 64 * 1024
MAX_ID: Final = 200
MAX_TEXT: Final = 4000
MAX_AUTOMATION_BYTES: Final = 16 * 1024
REQUEST_KEYS: Final = frozenset({"requestType", "description", "impact", "automation", "justification", "triggerId",
                                 "workflowId"})
DECISION_KEYS: Final = frozenset({"decision", "conditions", "approver"})
HISTORY: Final = 200  # past approvals read for the estimated response time and the reviewers
DEFAULT_LIST: Final = 50
MAX_LIST: Final = 500
PRIORITY: Final = {"low": "low", "medium": "medium", "high": "high", "critical": "high"}

Json = Callable[..., Response]
_TRIGGER: Final = msgspec.json.Decoder(TriggerDef)
_json = msgspec.json.Encoder()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _text(body: dict[str, Any], key: str, limit: int, default: str | None = None) -> str | None:
    value = body.get(key, default)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit or "\x00" in value:
        raise InvalidInput(f"$.{key}", f"must be a string of at most {limit} characters")
    return value


def priority_of(impact: dict[str, Any] | None) -> str:
    """The seed's ``priority``: the request's risk level (low, medium, high; critical is high)."""
    return PRIORITY.get(str((impact or {}).get("riskLevel")), "medium")


async def new_approval(
    pulse: Pulse, project: str, *, kind: str, target_id: str, reason: str, request_body: dict[str, Any],
) -> Approval:  # fmt: skip
    row = Approval(
        project=project, approval_id="approval_" + secrets.token_hex(8), status=PENDING, decision=None,
        target_kind=kind, target_id=target_id, reason=reason, request=_json.encode(request_body).decode(),
        conditions="[]", approver=None, created_ms=now_ms(), decided_ms=None,
    )  # fmt: skip
    await pulse.store.create_approval(row)
    return row


async def reach_threshold(pulse: Pulse, project: str) -> int:
    stored = await pulse.store.reach_threshold(project)
    return DEFAULT_REACH_THRESHOLD if stored is None else stored


async def gate_on_create(
    pulse: Pulse, project: str, *, kind: str, target_id: str, requires: bool, impact: dict[str, Any] | None,
    description: str, automation: dict[str, Any],
) -> ApprovalGate | None:  # fmt: skip
    """For a new (or changed) trigger or workflow: if it needs approval, open one and answer the
    gate to store with it (the caller stores it ``pending_approval``); None when it may act."""
    reason = needs_approval(requires, impact, await reach_threshold(pulse, project))
    if reason is None:
        return None
    body = {"requestType": "behavioral_automation", "description": description, "impact": impact or {},
            "automation": automation, "justification": None, "priority": priority_of(impact)}
    row = await new_approval(pulse, project, kind=kind, target_id=target_id, reason=reason, request_body=body)
    return ApprovalGate(approval_id=row.approval_id, reason=reason)


def _estimate(history: list[Approval], created_ms: int) -> tuple[str | None, list[str]]:
    """When a decision may be expected (the median time the project's past decisions took) and
    who decided them, most recent first; (None, []) before any decision."""
    decided = [a for a in history if a.decided_ms is not None]
    reviewers: list[str] = []
    for item in sorted(decided, key=lambda a: a.decided_ms or 0, reverse=True):
        if item.approver and item.approver not in reviewers:
            reviewers.append(item.approver)
    if not decided:
        return None, reviewers
    median = statistics.median((a.decided_ms or 0) - a.created_ms for a in decided)
    return iso_ms(created_ms + int(median)), reviewers


def register(app: QuartTrio, pulse: Pulse, access: Callable[[], Awaitable[Any]], json_response: Json) -> None:
    def not_found(approval_id: str) -> Response:
        reason = f"no approval {approval_id!r} in this project"
        return json_response({"success": False, "error": {"code": "not_found", "reason": reason}}, 404)

    async def load_trigger(project: str, trigger_id: str) -> TriggerDef | None:
        row = await pulse.store.get_trigger(project, trigger_id)
        return None if row is None else _TRIGGER.decode(row.body)

    async def save_trigger(project: str, trigger: TriggerDef) -> None:
        await pulse.store.save_trigger(trigger_routes.trigger_row(project, trigger))
        pulse.triggers.put(trigger, project)  # this node at once; the others at their next reload

    async def save_workflow_gate(project: str, workflow_id: str, status: str, gate: ApprovalGate) -> bool:
        """Store a workflow's status with the approval that gates it (its conditions go into its
        rule: the engine enforces them when it would fire); this node applies it at once."""
        if not await pulse.store.set_workflow_status(project, workflow_id, status, _json.encode(gate).decode()):
            return False
        row = await pulse.store.get_workflow(project, workflow_id)
        if row is not None and pulse.workflows is not None:
            pulse.workflows.rules.put(project, workflow_rules.decode(row))  # the others at their next reload
        return True

    async def gate_target(project: str, kind: str, target_id: str, gate: ApprovalGate) -> None:
        """Put an existing trigger or workflow on hold for ``gate`` (a manual approval request)."""
        if kind == "trigger":
            trigger = await load_trigger(project, target_id)
            if trigger is None:
                return
            trigger = msgspec.structs.replace(trigger, status="pending_approval", approval=gate,
                                              updated=max(now_ms(), trigger.updated + 1))
            await save_trigger(project, trigger)
        else:
            await save_workflow_gate(project, target_id, "pending_approval", gate)

    async def apply(row: Approval) -> dict[str, Any]:
        """Make the target follow the stored decision; says what happened to it."""
        kind, target_id = row.target_kind, row.target_id
        if not kind:
            return {"applied": False, "reason": "the approval names no trigger or workflow"}
        new_status = "active" if row.status == APPROVED else "rejected"
        if kind == "workflow":
            stored = await pulse.store.get_workflow(row.project, target_id)
            if stored is None:
                return {"kind": kind, "id": target_id, "applied": False, "reason": "the workflow no longer exists"}
            held = workflow_rules.approval_of(stored)
            if held is None or held.approval_id != row.approval_id:
                newer = held.approval_id if held is not None else None
                return {"kind": kind, "id": target_id, "applied": False, "status": stored.status,
                        "reason": f"the workflow is gated by another approval ({newer})" if newer else
                        "the workflow is not gated by this approval"}
            if stored.status == new_status and held.decision == row.decision:
                return {"kind": kind, "id": target_id, "applied": True, "status": new_status}
            decided = msgspec.structs.replace(held, decision=row.decision,
                                              conditions=msgspec.json.decode(row.conditions), decided=row.decided_ms)
            if not await save_workflow_gate(row.project, target_id, new_status, decided):
                return {"kind": kind, "id": target_id, "applied": False, "reason": "the workflow no longer exists"}
            return {"kind": kind, "id": target_id, "applied": True, "status": new_status}
        trigger = await load_trigger(row.project, target_id)
        if trigger is None:
            return {"kind": kind, "id": target_id, "applied": False, "reason": "the trigger no longer exists"}
        gate = trigger.approval
        if gate is None or gate.approval_id != row.approval_id:
            newer = gate.approval_id if gate is not None else None
            return {"kind": kind, "id": target_id, "applied": False, "status": trigger.status,
                    "reason": f"the trigger is gated by another approval ({newer})" if newer else
                    "the trigger is not gated by this approval"}
        if trigger.status == new_status and gate.decision == row.decision:
            return {"kind": kind, "id": target_id, "applied": True, "status": new_status}
        decided = msgspec.structs.replace(gate, decision=row.decision, conditions=msgspec.json.decode(row.conditions),
                                          decided=row.decided_ms)
        trigger = msgspec.structs.replace(trigger, status=new_status, approval=decided,
                                          updated=max(now_ms(), trigger.updated + 1))
        await save_trigger(row.project, trigger)
        return {"kind": kind, "id": target_id, "applied": True, "status": new_status}

    async def target_view(row: Approval) -> dict[str, Any] | None:
        if not row.target_kind:
            return None
        out: dict[str, Any] = {"kind": row.target_kind, "id": row.target_id}
        if row.target_kind == "trigger":
            trigger = await load_trigger(row.project, row.target_id)
            out["status"] = None if trigger is None else public_status(trigger, now_ms())
        else:
            workflow = await pulse.store.get_workflow(row.project, row.target_id)
            out["status"] = None if workflow is None else workflow.status
        return out

    def view(row: Approval) -> dict[str, Any]:
        body = msgspec.json.decode(row.request)
        return {
            "approvalId": row.approval_id,
            "status": row.status,
            "decision": row.decision,
            "conditions": msgspec.json.decode(row.conditions),
            "approver": row.approver,
            "approvalDate": None if row.decided_ms is None else iso_ms(row.decided_ms),
            "requested": iso_ms(row.created_ms),
            "reason": row.reason,
            "requestType": body.get("requestType"),
            "description": body.get("description"),
            "impact": body.get("impact"),
            "automation": body.get("automation"),
            "justification": body.get("justification"),
            "priority": body.get("priority"),
        }

    @app.post(f"{BASE}/approval")
    async def request_approval() -> Response:
        granted = await access()
        project = granted.project.id
        body = await json_object(MAX_BODY)
        unknown = sorted(set(body) - REQUEST_KEYS)
        if unknown:
            raise InvalidInput(f"$.{unknown[0]}", f"unknown key; an approval request has {', '.join(sorted(REQUEST_KEYS))}")
        request_type = _text(body, "requestType", 200, "behavioral_automation")
        if not request_type:
            raise InvalidInput("$.requestType", "must be a non-empty string")
        description = _text(body, "description", MAX_TEXT) or ""
        justification = _text(body, "justification", MAX_TEXT)
        impact = parse_impact(body.get("impact"))
        automation = body.get("automation", {})
        if not isinstance(automation, dict):
            raise InvalidInput("$.automation", "must be an object")
        if len(_json.encode(automation)) > MAX_AUTOMATION_BYTES:
            raise InvalidInput("$.automation", f"at most {MAX_AUTOMATION_BYTES} bytes of JSON")
        if "triggerId" in body and "workflowId" in body:
            raise InvalidInput("$.workflowId", "name a triggerId or a workflowId, not both")
        kind, target_id = "", ""
        for key, target_kind in (("triggerId", "trigger"), ("workflowId", "workflow")):
            if key in body:
                value = body[key]
                if not isinstance(value, str) or not 1 <= len(value) <= MAX_ID:
                    raise InvalidInput(f"$.{key}", f"must be a string of 1 to {MAX_ID} characters")
                kind, target_id = target_kind, value
        if kind == "trigger":
            trigger = await load_trigger(project, target_id)
            if trigger is None:
                raise InvalidInput("$.triggerId", f"no trigger {target_id!r} in this project", status=404, code="not_found")
            if trigger.status == "pending_approval" and trigger.approval is not None:
                raise InvalidInput("$.triggerId", f"the trigger waits for approval {trigger.approval.approval_id} already",
                                   status=409, code="pending_approval")
        elif kind == "workflow" and await pulse.store.get_workflow(project, target_id) is None:
            raise InvalidInput("$.workflowId", f"no workflow {target_id!r} in this project", status=404, code="not_found")
        history = await pulse.store.list_approvals(project, HISTORY)
        stored = {"requestType": request_type, "description": description, "impact": impact or {},
                  "automation": automation, "justification": justification, "priority": priority_of(impact)}
        row = await new_approval(pulse, project, kind=kind, target_id=target_id, reason=f"requested: {request_type}",
                                 request_body=stored)
        if kind:
            await gate_target(project, kind, target_id, ApprovalGate(approval_id=row.approval_id, reason=row.reason))
        estimated, reviewers = _estimate(history, row.created_ms)
        return json_response({
            "approvalId": row.approval_id,
            "status": PENDING,
            "estimatedResponse": estimated,
            "reviewers": reviewers,
            "priority": stored["priority"],
            **({"target": {"kind": kind, "id": target_id, "status": "pending_approval"}} if kind else {}),
        }, 201)

    @app.get(f"{BASE}/approval/<approval_id>")
    async def get_approval(approval_id: str) -> Response:
        granted = await access()
        row = None if len(approval_id) > MAX_ID else await pulse.store.get_approval(granted.project.id, approval_id)
        if row is None:
            return not_found(approval_id)
        held = pulse.triggers.limits.held_back.get(row.approval_id)
        return json_response({**view(row), "target": await target_view(row),
                              "heldBack": {"limit": 0, "device": 0, "expired": 0, **(held or {}),
                                           "scope": "firings its conditions held back on this node since it started"}})

    @app.get(f"{BASE}/approvals")
    async def list_approvals() -> Response:
        granted = await access()
        raw = request.args.get("limit", str(DEFAULT_LIST))
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIST:
            raise InvalidInput("limit", f"an integer from 1 to {MAX_LIST}, got {raw!r}")
        rows = await pulse.store.list_approvals(granted.project.id, int(raw))
        return json_response({"approvals": [view(r) for r in rows], "count": len(rows)})

    @app.post(f"{BASE}/approval/<approval_id>/decision")
    async def decide(approval_id: str) -> Response:
        granted = await access()
        project = granted.project.id
        row = None if len(approval_id) > MAX_ID else await pulse.store.get_approval(project, approval_id)
        if row is None:
            return not_found(approval_id)
        body = await json_object(MAX_BODY)
        unknown = sorted(set(body) - DECISION_KEYS)
        if unknown:
            raise InvalidInput(f"$.{unknown[0]}", "unknown key; a decision has decision, conditions, approver")
        decision = body.get("decision")
        if decision not in DECISIONS:
            raise InvalidInput("$.decision", f"one of {', '.join(DECISIONS)}")
        approver = body.get("approver")
        if not isinstance(approver, str) or not approver.strip() or len(approver) > 200:
            raise InvalidInput("$.approver", "required: who decides, a string of 1 to 200 characters")
        now = now_ms()
        conditions = parse_conditions(body.get("conditions"), decision, now)
        taken = await pulse.store.decide_approval(Decision(
            project=project, approval_id=approval_id, status=REJECTED if decision == "rejected" else APPROVED,
            decision=decision, conditions=_json.encode(conditions).decode(), approver=approver, decided_ms=now,
        ))  # fmt: skip
        current = await pulse.store.get_approval(project, approval_id)
        assert current is not None  # approvals are never deleted
        target = await apply(current)  # also after a 409: a decision stored before a crash reaches its target
        if not taken:
            reason = f"approval {approval_id} was decided already ({current.decision} by {current.approver})"
            return json_response({"success": False, "error": {"code": "already_decided", "reason": reason},
                                  **view(current), "target": target}, 409)
        return json_response({**view(current), "target": target})

    @app.get(f"{BASE}/settings")
    async def get_settings() -> Response:
        granted = await access()
        stored = await pulse.store.reach_threshold(granted.project.id)
        return json_response({"projectId": granted.project.id,
                              "expectedReachThreshold": DEFAULT_REACH_THRESHOLD if stored is None else stored,
                              "isDefault": stored is None, "defaultThreshold": DEFAULT_REACH_THRESHOLD,
                              "gatedStatuses": list(GATED_STATUSES)})

    @app.put(f"{BASE}/settings")
    async def put_settings() -> Response:
        granted = await access()
        body = await json_object(MAX_BODY)
        unknown = sorted(set(body) - {"expectedReachThreshold"})
        if unknown:
            raise InvalidInput(f"$.{unknown[0]}", "unknown key; settings have expectedReachThreshold")
        if "expectedReachThreshold" not in body:
            raise InvalidInput("$.expectedReachThreshold", "required")
        threshold = parse_threshold(body["expectedReachThreshold"], "$.expectedReachThreshold")
        await pulse.store.set_reach_threshold(granted.project.id, threshold, now_ms())
        return json_response({"projectId": granted.project.id, "expectedReachThreshold": threshold, "isDefault": False,
                              "defaultThreshold": DEFAULT_REACH_THRESHOLD, "gatedStatuses": list(GATED_STATUSES)})
