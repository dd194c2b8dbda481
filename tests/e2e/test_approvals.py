"""Approval gates against a real server (docs/automation.md "Approval gates"): a gated trigger is
held and fires nothing on a qualifying session, an approval makes it fire, conditions are
enforced when it would fire, a rejection keeps it silent, and a decision is taken once; workflows
are gated on create and their approval conditions are enforced the same way."""

from __future__ import annotations

from typing import Any

import httpx

from tests.e2e.server_process import ServerProcess
from tests.e2e.test_triggers import BASE, exit_event, now_ms, seed_trigger
from tests.e2e.test_workflows import BASE as WORKFLOWS
from tests.e2e.test_workflows import event as workflow_event
from tests.e2e.test_workflows import workflow

HITL = "/api/v1/behavioral/hitl"
EVENTS = "/api/v1/behavioral/events"


async def create_gated(client: httpx.AsyncClient, **changes: Any) -> tuple[str, str]:
    answer = await client.post(BASE, json=seed_trigger(**changes))
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["status"] == "pending_approval", body
    assert body["approval"]["status"] == "pending" and body["approvalId"] == body["approval"]["approvalId"]
    return str(body["triggerId"]), str(body["approvalId"])


async def fired(client: httpx.AsyncClient, session: str, at: int) -> list[dict[str, Any]]:
    """Two events of a qualifying session (the second meets the conditions): what fired on it."""
    first = await client.post(EVENTS, json=exit_event(session, 1000, at))
    second = await client.post(EVENTS, json=exit_event(session, 45000, at + 1000))
    assert first.status_code == 200 and second.status_code == 200, second.text
    return list(first.json()["triggers"]) + list(second.json()["triggers"])


async def decide(client: httpx.AsyncClient, approval_id: str, **body: Any) -> httpx.Response:
    return await client.post(f"{HITL}/approval/{approval_id}/decision", json={"approver": "reviewer_ann", **body})


async def test_a_high_risk_trigger_is_held_until_approved(server: ServerProcess, client: httpx.AsyncClient) -> None:
    trigger_id, approval_id = await create_gated(client, impact={"riskLevel": "high", "expectedUsers": 10})
    at = now_ms() - 60_000
    assert await fired(client, "held-1", at) == []  # pending: a qualifying session gets nothing
    pending = (await client.get(f"{HITL}/approval/{approval_id}")).json()
    assert pending["status"] == "pending" and pending["decision"] is None and pending["approvalDate"] is None
    assert pending["reason"] == "impact.riskLevel is high" and pending["priority"] == "high"
    assert pending["target"] == {"kind": "trigger", "id": trigger_id, "status": "pending_approval"}
    # only a decision lifts the gate
    sneak = await client.put(f"{BASE}/{trigger_id}", json={"status": "active"})
    assert sneak.status_code == 409 and sneak.json()["error"]["field"] == "$.status"
    unpaused = await client.put(f"{BASE}/{trigger_id}", json={"schedule": {"active": True}})
    assert unpaused.status_code == 200 and unpaused.json()["status"] == "pending_approval"
    executed = (await client.post(f"{BASE}/{trigger_id}/execute", json={"sessionId": "held-x", "context": {}})).json()
    assert executed["triggered"] is False and "pending_approval" in executed["reason"]

    answer = await decide(client, approval_id, decision="approved")
    assert answer.status_code == 200, answer.text
    decided = answer.json()
    assert decided["status"] == "approved" and decided["decision"] == "approved" and decided["approver"] == "reviewer_ann"
    assert decided["target"] == {"kind": "trigger", "id": trigger_id, "applied": True, "status": "active"}
    assert (await client.get(f"{BASE}/{trigger_id}")).json()["status"] == "active"
    assert await fired(client, "after-1", at) == [{"triggerId": trigger_id, "executed": True,
                                                   "result": "automation_triggered"}]
    # the session seen while pending did not fire then; it is an ordinary session now
    seed = (await client.get(f"{HITL}/approval/{approval_id}")).json()
    assert seed["status"] == "approved" and seed["approvalDate"].endswith("Z") and seed["conditions"] == []
    again = await decide(client, approval_id, decision="rejected")
    assert again.status_code == 409 and again.json()["error"]["code"] == "already_decided"
    assert (await client.get(f"{BASE}/{trigger_id}")).json()["status"] == "active"  # the first decision stands


async def test_approved_with_a_user_limit_lets_one_session_fire_per_hour(client: httpx.AsyncClient) -> None:
    trigger_id, approval_id = await create_gated(client, requiresApproval=True)
    bad = await decide(client, approval_id, decision="approved_with_conditions",
                       conditions=["limit_to_1_users_per_hour", "monitor_satisfaction_score"])
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "$.conditions[1]"
    assert "monitor_satisfaction_score" in bad.json()["error"]["reason"]
    assert (await client.get(f"{HITL}/approval/{approval_id}")).json()["status"] == "pending"  # nothing was taken
    answer = await decide(client, approval_id, decision="approved_with_conditions",
                          conditions=["limit_to_1_users_per_hour"])
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "approved" and answer.json()["conditions"] == ["limit_to_1_users_per_hour"]
    at = now_ms() - 60_000
    assert [t["triggerId"] for t in await fired(client, "limited-1", at)] == [trigger_id]
    assert await fired(client, "limited-2", at) == []  # a second user within the hour: held back
    status = (await client.get(f"{HITL}/approval/{approval_id}")).json()
    assert status["decision"] == "approved_with_conditions" and status["target"]["status"] == "active"
    assert (status["heldBack"]["limit"], status["heldBack"]["device"]) == (1, 0)  # the second session, counted


async def test_a_rejected_trigger_stays_silent(client: httpx.AsyncClient) -> None:
    trigger_id, approval_id = await create_gated(client, impact={"riskLevel": "medium", "expectedUsers": 50_000})
    answer = await decide(client, approval_id, decision="rejected")
    assert answer.status_code == 200 and answer.json()["status"] == "rejected"
    assert answer.json()["target"]["status"] == "rejected"
    assert await fired(client, "rejected-1", now_ms() - 60_000) == []
    assert (await client.get(f"{BASE}/{trigger_id}")).json()["status"] == "rejected"


async def test_the_seed_request_gates_a_named_trigger_and_the_threshold_is_per_project(
    client: httpx.AsyncClient,
) -> None:
    active = await client.post(BASE, json=seed_trigger(impact={"riskLevel": "medium", "expectedUsers": 500}))
    assert active.json()["status"] == "active"  # 500 <= the default threshold
    trigger_id = active.json()["triggerId"]
    seed_body = {
        "requestType": "behavioral_automation", "description": "High-impact behavioral trigger activation",
        "impact": {"expectedUsers": 50000, "revenueImpact": 25000, "riskLevel": "medium"},
        "automation": {"triggerType": "exit_intent", "actions": ["show_discount_offer"], "personalization": "high"},
        "justification": "Exit intent trigger shows 65% conversion improvement in A/B tests",
    }
    answer = await client.post(f"{HITL}/approval", json={**seed_body, "triggerId": trigger_id})
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["status"] == "pending" and body["priority"] == "medium" and body["approvalId"].startswith("approval_")
    assert body["reviewers"] == [] and body["estimatedResponse"] is None  # no decision yet to learn from
    assert (await client.get(f"{BASE}/{trigger_id}")).json()["status"] == "pending_approval"
    assert await fired(client, "named-1", now_ms() - 60_000) == []
    await decide(client, body["approvalId"], decision="approved")
    later = (await client.post(f"{HITL}/approval", json=seed_body)).json()  # gates nothing: a plain request
    assert later["reviewers"] == ["reviewer_ann"] and later["estimatedResponse"].endswith("Z")
    # the threshold
    assert (await client.get(f"{HITL}/settings")).json()["expectedReachThreshold"] == 10_000
    assert (await client.put(f"{HITL}/settings", json={"expectedReachThreshold": 100})).status_code == 200
    gated = await client.post(BASE, json=seed_trigger(impact={"expectedUsers": 500}))
    assert gated.json()["status"] == "pending_approval" and "exceeds the project's threshold 100" in (
        gated.json()["approval"]["reason"])
    for path, payload, field in [
        ("/approval", {**seed_body, "impact": {"riskLevel": "extreme"}}, "$.impact.riskLevel"),
        ("/approval", {**seed_body, "triggerId": "trigger_nope"}, "$.triggerId"),
        ("/approval", {**seed_body, "colour": 1}, "$.colour"),
        (f"/approval/{later['approvalId']}/decision", {"decision": "maybe", "approver": "x"}, "$.decision"),
        (f"/approval/{later['approvalId']}/decision", {"decision": "approved"}, "$.approver"),
    ]:
        bad = await client.post(f"{HITL}{path}", json=payload)
        assert bad.status_code in (400, 404) and bad.json()["error"]["field"] == field, (path, bad.text)
    assert (await client.put(f"{HITL}/settings", json={"expectedReachThreshold": -1})).status_code == 400
    assert (await client.get(f"{HITL}/approval/approval_nope")).status_code == 404


async def test_approvals_need_the_secret_key(keyed_server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=keyed_server.url, timeout=10) as http:
        public = await http.post(f"{HITL}/approval", json={"requestType": "x"},
                                 headers={"authorization": f"Bearer {keyed_server.public_key}"})
        assert public.status_code in (401, 403)
        secret = await http.post(f"{HITL}/approval", json={"requestType": "x"},
                                 headers={"authorization": f"Bearer {keyed_server.secret_key}"})
        assert secret.status_code == 201


async def test_an_approval_request_holds_a_named_workflow_until_decided(client: httpx.AsyncClient) -> None:
    workflows = "/api/v1/behavioral/automation/workflows"
    created = await client.post(workflows, json={
        "workflowName": "High Intent Mobile Conversion",
        "triggers": [{"type": "behavioral_threshold", "conditions": {"deviceType": "mobile"}}],
        "actions": [{"type": "personalized_offer", "delay": "0s", "parameters": {"offerType": "mobile_optimized"}}],
    })
    assert created.status_code == 201, created.text
    workflow_id = created.json()["workflowId"]
    assert created.json()["status"] == "active"
    for decision, final in (("approved", "active"), ("rejected", "rejected")):
        asked = await client.post(f"{HITL}/approval", json={"requestType": "behavioral_automation",
                                                            "workflowId": workflow_id})
        assert asked.status_code == 201, asked.text
        approval_id = asked.json()["approvalId"]
        assert (await client.get(f"{workflows}/{workflow_id}")).json()["status"] == "pending_approval"
        seen = (await client.get(f"{HITL}/approval/{approval_id}")).json()
        assert seen["target"] == {"kind": "workflow", "id": workflow_id, "status": "pending_approval"}
        answer = await decide(client, approval_id, decision=decision)
        assert answer.status_code == 200 and answer.json()["target"]["applied"] is True, answer.text
        assert (await client.get(f"{workflows}/{workflow_id}")).json()["status"] == final
    missing = await client.post(f"{HITL}/approval", json={"workflowId": "workflow_nope"})
    assert missing.status_code == 404 and missing.json()["error"]["field"] == "$.workflowId"


async def create_gated_workflow(client: httpx.AsyncClient, **changes: Any) -> tuple[str, str]:
    answer = await client.post(WORKFLOWS, json=workflow(("0s",), **changes))
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["status"] == "pending_approval", body
    assert body["approval"]["status"] == "pending" and body["approvalId"] == body["approval"]["approvalId"]
    return str(body["workflowId"]), str(body["approvalId"])


async def workflow_fired(client: httpx.AsyncClient, session: str) -> list[str]:
    """One qualifying event of a mobile session: the ids of what fired on it."""
    answer = await client.post(EVENTS, json=workflow_event(session, 45000))
    assert answer.status_code == 200, answer.text
    return [t["triggerId"] for t in answer.json()["triggers"]]


async def test_a_high_risk_workflow_is_created_pending_and_fires_nothing(client: httpx.AsyncClient) -> None:
    workflow_id, approval_id = await create_gated_workflow(client, impact={"riskLevel": "high", "expectedUsers": 10})
    assert await workflow_fired(client, "wf-held-1") == []  # pending: a qualifying session gets nothing
    assert (await client.get(f"{WORKFLOWS}/{workflow_id}/executions")).json()["executions"] == []
    pending = (await client.get(f"{HITL}/approval/{approval_id}")).json()
    assert pending["status"] == "pending" and pending["reason"] == "impact.riskLevel is high"
    assert pending["priority"] == "high" and pending["automation"]["actions"] == ["step_0"]
    assert pending["target"] == {"kind": "workflow", "id": workflow_id, "status": "pending_approval"}
    shown = (await client.get(f"{WORKFLOWS}/{workflow_id}")).json()
    assert shown["status"] == "pending_approval" and shown["approval"]["approvalId"] == approval_id
    # a reach over the project's threshold is gated too; a small low-risk one is not
    assert (await client.put(f"{HITL}/settings", json={"expectedReachThreshold": 100})).status_code == 200
    over = (await client.post(WORKFLOWS, json=workflow(("0s",), impact={"expectedUsers": 500}))).json()
    assert over["status"] == "pending_approval" and "exceeds the project's threshold 100" in over["approval"]["reason"]
    small = (await client.post(WORKFLOWS, json=workflow(("0s",), impact={"riskLevel": "low", "expectedUsers": 5}))).json()
    assert small["status"] == "active" and "approvalId" not in small
    bad = await client.post(WORKFLOWS, json=workflow(("0s",), impact={"riskLevel": "extreme"}))
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "$.impact.riskLevel"
    await client.delete(f"{WORKFLOWS}/{small['workflowId']}")

    answer = await decide(client, approval_id, decision="approved")
    assert answer.status_code == 200, answer.text
    assert answer.json()["target"] == {"kind": "workflow", "id": workflow_id, "applied": True, "status": "active"}
    assert await workflow_fired(client, "wf-after-1") == [workflow_id]  # this node applies the decision at once


async def test_a_workflow_approved_with_a_user_limit_fires_for_one_user_per_hour(client: httpx.AsyncClient) -> None:
    workflow_id, approval_id = await create_gated_workflow(client, requiresApproval=True)
    answer = await decide(client, approval_id, decision="approved_with_conditions",
                          conditions=["limit_to_1_users_per_hour"])
    assert answer.status_code == 200, answer.text
    assert answer.json()["target"]["status"] == "active"
    shown = (await client.get(f"{WORKFLOWS}/{workflow_id}")).json()
    assert shown["status"] == "active"
    assert shown["approval"]["decision"] == "approved_with_conditions"
    assert shown["approval"]["conditions"] == ["limit_to_1_users_per_hour"]
    assert await workflow_fired(client, "wf-limited-1") == [workflow_id]
    assert await workflow_fired(client, "wf-limited-2") == []  # a second user within the hour: held back
    assert await workflow_fired(client, "wf-limited-3") == []
    status = (await client.get(f"{HITL}/approval/{approval_id}")).json()
    assert status["decision"] == "approved_with_conditions" and status["target"]["status"] == "active"
    assert (status["heldBack"]["limit"], status["heldBack"]["device"]) == (2, 0)
    ran = (await client.get(f"{WORKFLOWS}/{workflow_id}/executions")).json()["executions"]
    assert {e["sessionId"] for e in ran} == {"wf-limited-1"}  # only the admitted session's action was scheduled
