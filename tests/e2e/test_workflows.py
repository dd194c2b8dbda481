"""Automation workflows against a real server (docs/automation.md "Workflows"): the seed's create
answer, 400s naming the field, a "0s" and a "2s" action reaching the session's stream and a real
webhook receiver, a delayed action scheduled before kill -9 running once after the restart, and two
nodes on one PostgreSQL never both running an action."""

from __future__ import annotations

import copy
import pathlib
import signal
import time
from typing import Any

import httpx
import msgspec
import pytest
import trio

from tests.e2e.server_process import ServerProcess
from tests.e2e.sse_client import SSEClient
from tests.e2e.test_webhooks import SECRET, client_of, receiving, register, verify, wait_for
from tests.services.postgres import postgres_dsn, postgres_server  # noqa: F401 (fixtures)

BASE = "/api/v1/behavioral/automation/workflows"

SEED: dict[str, Any] = {
    "workflowName": "High Intent Mobile Conversion",
    "triggers": [{"type": "behavioral_threshold",
                  "conditions": {"engagementScore": {"min": 0.8}, "intentScore": {"min": 0.7}, "deviceType": "mobile"}}],
    "actions": [
        {"type": "personalized_offer", "delay": "0s",
         "parameters": {"offerType": "mobile_optimized", "discount": "persona_based", "urgency": "medium"}},
        {"type": "follow_up_sequence", "delay": "2h", "parameters": {"channel": "email",
                                                                     "sequence": "mobile_conversion_series"}},
    ],
    "optimization": {"abTest": True, "variants": ["offer_a", "offer_b", "control"], "trafficSplit": [40, 40, 20]},
}
# Conditions our test sessions meet: a mobile device that reports a long time on the page.
QUALIFYING = {"deviceType": "mobile", "timeOnPage": {"min": 30000}}


def workflow(delays: tuple[str, ...] = ("0s", "2s"), **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "workflowName": "Mobile follow-up",
        "triggers": [{"type": "behavioral_threshold", "conditions": QUALIFYING}],
        "actions": [{"type": f"step_{i}", "delay": d, "parameters": {"n": i}} for i, d in enumerate(delays)],
    }
    body.update(changes)
    return body


def event(session: str, time_on_page: int, device: str = "mobile") -> dict[str, Any]:
    return {"eventType": "scroll", "sessionId": session, "userId": f"user-{session}", "deviceType": device,
            "eventData": {"timeOnPage": time_on_page}}


async def create(http: httpx.AsyncClient, body: dict[str, Any]) -> str:
    answer = await http.post(BASE, json=body)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["workflowId"])


async def executions(http: httpx.AsyncClient, workflow_id: str, status: str | None = None) -> list[dict[str, Any]]:
    answer = await http.get(f"{BASE}/{workflow_id}/executions", params={"status": status} if status else {})
    assert answer.status_code == 200, answer.text
    rows: list[dict[str, Any]] = answer.json()["executions"]
    return rows


async def test_create_answers_the_seed_shape_and_lists_gets_deletes(client: httpx.AsyncClient) -> None:
    answer = await client.post(BASE, json=SEED)
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["workflowId"].startswith("workflow_") and body["status"] == "active"
    # no session yet: no invented figures
    assert body["performance"]["triggerRate"] is None and body["performance"]["conversionRate"] is None
    assert body["performance"]["roi"] is None
    opt = body["optimization"]
    assert opt["testId"].startswith("test_")
    assert [(v["variant"], v["traffic"], v["performance"]) for v in opt["variants"]] == [
        ("offer_a", 40.0, None), ("offer_b", 40.0, None), ("control", 20.0, None)]
    workflow_id = body["workflowId"]
    listed = (await client.get(BASE)).json()
    assert [w["workflowId"] for w in listed["workflows"]] == [workflow_id] and listed["total"] == 1
    one = (await client.get(f"{BASE}/{workflow_id}")).json()
    assert one["workflowName"] == "High Intent Mobile Conversion"
    assert [(a["type"], a["delay"], a["delayMs"]) for a in one["actions"]] == [
        ("personalized_offer", "0s", 0), ("follow_up_sequence", "2h", 7_200_000)]
    assert one["triggers"][0]["conditions"]["engagementScore"] == {"min": 0.8}
    deleted = await client.delete(f"{BASE}/{workflow_id}")
    assert deleted.json() == {"deleted": True, "workflowId": workflow_id}
    assert (await client.get(f"{BASE}/{workflow_id}")).status_code == 404
    assert (await client.delete(f"{BASE}/{workflow_id}")).status_code == 404


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"actions": [{"type": "x", "delay": "soon"}]}, "$.actions[0].delay"),
        ({"triggers": [{"type": "behavioral_threshold", "conditions": {"engagementScore": {"minimum": 0.8}}}]},
         "$.triggers[0].conditions.engagementScore.minimum"),
        ({"triggers": [{"type": "behavioral_threshold", "conditions": {"shoeSize": 44}}]},
         "$.triggers[0].conditions.shoeSize"),
        ({"optimization": {"abTest": True, "variants": ["a", "b"], "trafficSplit": [60, 60]}},
         "$.optimization.trafficSplit"),
        ({"workflowName": None}, "$.workflowName"),
    ],
)
async def test_bad_input_gets_a_400_naming_the_field(client: httpx.AsyncClient, change: dict[str, Any],
                                                     field: str) -> None:
    body = copy.deepcopy(SEED)
    body.update(change)
    answer = await client.post(BASE, json=body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["field"] == field, answer.text
    assert (await client.get(BASE)).json()["total"] == 0  # nothing was created


async def test_workflows_need_the_secret_key(keyed_server: ServerProcess) -> None:
    async with client_of(keyed_server, keyed_server.public_key) as public, \
            client_of(keyed_server, keyed_server.secret_key) as secret:
        assert (await public.post(BASE, json=SEED)).status_code in (401, 403)
        assert (await public.get(BASE)).status_code in (401, 403)
        await create(secret, SEED)
        assert (await secret.get(BASE)).json()["total"] == 1


async def test_a_0s_and_a_2s_action_reach_the_stream_and_a_webhook_once(server: ServerProcess,
                                                                      client: httpx.AsyncClient) -> None:
    with receiving(lambda n: 200) as receiver:
        await register(client, receiver.url, ["workflow_action"], secret=SECRET)
        workflow_id = await create(client, workflow())
        query = "sessionId=w-1&subscriptions=conversion_triggers"
        async with SSEClient(f"{server.url}/api/v1/behavioral/stream?{query}") as sse:
            assert sse.status == 200
            miss = (await client.post("/api/v1/behavioral/events", json=event("w-1", 1000))).json()
            assert miss["triggers"] == []  # not yet qualifying
            fired_at = time.time()
            hit = (await client.post("/api/v1/behavioral/events", json=event("w-1", 45000))).json()
            assert hit["triggers"] == [{"triggerId": workflow_id, "executed": True, "result": "automation_triggered"}]
            _, first = await sse.next_of_type("trigger_notification")
            _, second = await sse.next_of_type("trigger_notification")
            second_at = time.time()
        again = (await client.post("/api/v1/behavioral/events", json=event("w-1", 50000))).json()
        assert again["triggers"] == []  # at most once per session
        other = (await client.post("/api/v1/behavioral/events", json=event("w-2", 50000, device="desktop"))).json()
        assert other["triggers"] == []
        for message, index in ((first, 0), (second, 1)):
            assert message["triggerType"] == "workflow" and message["workflowId"] == workflow_id
            assert message["action"] == f"step_{index}" and message["actions"][0]["parameters"] == {"n": index}
            assert message["sessionId"] == "w-1" and message["actionIndex"] == index
        assert second_at - fired_at >= 2.0  # the delay was kept
        done = await wait_for(lambda: _all_done(client, workflow_id, 2), "both actions done")
        assert {e["type"]: e["attempts"] for e in done} == {"step_0": 1, "step_1": 1}
        await wait_for(lambda: len(receiver.successes()) >= 2, "two workflow_action deliveries")
        await trio.sleep(1.0)  # a duplicate would arrive within this
        bodies = [msgspec.json.decode(r.body) for r in receiver.successes()]
        assert sorted(b["data"]["action"] for b in bodies) == ["step_0", "step_1"]
        assert {b["type"] for b in bodies} == {"workflow_action"}
        assert {b["data"]["actionId"] for b in bodies} == {e["actionId"] for e in done}
        for r in receiver.successes():
            verify(SECRET, r.headers, r.body)


async def _all_done(http: httpx.AsyncClient, workflow_id: str, count: int) -> list[dict[str, Any]] | None:
    rows = await executions(http, workflow_id, "done")
    return rows if len(rows) == count else None


async def test_a_delayed_action_scheduled_before_kill_9_runs_once_after_the_restart(tmp_path: pathlib.Path) -> None:
    with receiving(lambda n: 200) as receiver:
        server = ServerProcess(tmp_path / "data").start()
        try:
            async with client_of(server) as http:
                await register(http, receiver.url, ["workflow_action"], secret=SECRET)
                workflow_id = await create(http, workflow(("0s", "4s")))
                hit = (await http.post("/api/v1/behavioral/events", json=event("k-1", 45000))).json()
                assert hit["triggers"]
                await wait_for(lambda: _all_done(http, workflow_id, 1), "the 0s action")
                (waiting,) = await executions(http, workflow_id, "scheduled")
                assert waiting["type"] == "step_1"
            server.stop(signal.SIGKILL)
        finally:
            server.kill()
        restarted = ServerProcess(tmp_path / "data").start()
        try:
            async with client_of(restarted) as http:
                done = await wait_for(lambda: _all_done(http, workflow_id, 2), "the delayed action after the restart")
                await wait_for(lambda: len(receiver.successes()) >= 2, "its delivery")
                await trio.sleep(1.0)  # a second run would show within this
                done = await executions(http, workflow_id)
        finally:
            assert restarted.stop() == 0
    step1 = next(e for e in done if e["type"] == "step_1")
    assert step1["status"] == "done" and step1["attempts"] == 1 and step1["executedAt"] >= step1["dueAt"]
    assert step1["actionId"] == waiting["actionId"]
    actions = [msgspec.json.decode(r.body)["data"]["actionId"] for r in receiver.successes()]
    assert sorted(actions) == sorted(e["actionId"] for e in done)  # each action delivered once


def runs_here(metrics: str) -> tuple[float, float]:
    """(run, fenced) of this node's pulse_workflow_actions_total."""
    found = {}
    for line in metrics.splitlines():
        if line.startswith("pulse_workflow_actions_total{"):
            for outcome in ("run", "fenced"):
                if f'outcome="{outcome}"' in line:
                    found[outcome] = float(line.rsplit(" ", 1)[1])
    return found["run"], found["fenced"]


async def test_two_nodes_on_one_postgresql_run_each_action_once(
    tmp_path: pathlib.Path,
    postgres_dsn: str,  # noqa: F811 (the fixture imported above)
) -> None:
    sessions = 20
    nodes = [ServerProcess(tmp_path / f"node{i}", extra=["--database-url", postgres_dsn, "--node-id", f"wf-n{i}"])
             for i in range(2)]
    for node in nodes:
        node.start()
    try:
        async with client_of(nodes[0]) as first, client_of(nodes[1]) as second:
            workflow_id = await create(first, workflow(("1s", "2s")))

            async def second_knows_it() -> bool:  # its reload (every 2 s) brings the workflow
                answer = (await second.post("/api/v1/behavioral/events", json=event("probe", 45000))).json()
                return bool(answer["triggers"])

            await wait_for(second_knows_it, "the second node's reload")
            for i in range(sessions - 1):  # half the firings on each node; every node claims every row
                http = first if i % 2 else second
                assert (await http.post("/api/v1/behavioral/events", json=event(f"c-{i}", 45000))).json()["triggers"]
            done = await wait_for(lambda: _all_done(second, workflow_id, 2 * sessions), "every action")
            await trio.sleep(2.0)  # a second run would show within this
            split = [runs_here((await http.get("/metrics")).text) for http in (first, second)]
        assert all(e["attempts"] == 1 for e in done)
        assert sum(run for run, _ in split) == 2 * sessions, split  # each action run once, by one node
        assert all(fenced == 0 for _, fenced in split), split
        ran_on = {msgspec.json.decode(msgspec.json.encode(e["result"]))["node"] for e in done}
        assert ran_on <= {"wf-n0", "wf-n1"}
    finally:
        for node in nodes:
            assert node.stop() == 0, "".join(node.output)


async def test_a_workflow_pending_approval_fires_nothing_until_approved(client: httpx.AsyncClient) -> None:
    answer = await client.post(BASE, json=workflow(("0s",), requiresApproval=True))
    assert answer.status_code == 201 and answer.json()["status"] == "pending_approval", answer.text
    workflow_id = answer.json()["workflowId"]
    held = (await client.post("/api/v1/behavioral/events", json=event("p-1", 45000))).json()
    assert held["triggers"] == []
    # the approval gate (docs/automation.md "Approval gates") sets the status through the store
    approval = await client.post("/api/v1/behavioral/hitl/approval", json={
        "requestType": "behavioral_automation", "description": "mobile follow-up", "workflowId": workflow_id})
    assert approval.status_code == 201, approval.text
    decided = await client.post(f"/api/v1/behavioral/hitl/approval/{approval.json()['approvalId']}/decision",
                                json={"decision": "approved", "approver": "ops"})
    assert decided.status_code == 200, decided.text
    assert (await client.get(f"{BASE}/{workflow_id}")).json()["status"] == "active"
    sessions = iter(range(1000))

    async def fires() -> bool:  # within the rules' reload (2 s)
        answer = (await client.post("/api/v1/behavioral/events", json=event(f"p-{next(sessions) + 2}", 45000))).json()
        return bool(answer["triggers"])

    await wait_for(fires, "the approved workflow firing")
    assert await executions(client, workflow_id) != []
    assert all(e["sessionId"] != "p-1" for e in await executions(client, workflow_id))  # held back before
