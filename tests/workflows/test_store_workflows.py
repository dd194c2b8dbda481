"""The Store's workflow methods, on every backend: definitions (project-scoped, status set by the
approval gate), durable scheduled actions deduplicated by id, leased claims that never overlap,
expired leases, fenced ends. Time is passed in (``now_ms``), so leases expire without waiting."""

from __future__ import annotations

import trio_asyncio  # noqa: F401 (first: before anything imports asyncpg)

# isort: split
import msgspec
import trio

from storage.base import Store
from storage.trigger_records import Execution, SessionMark
from storage.workflow_records import DONE, RUNNING, SCHEDULED, ActionClaim, NewAction, WorkflowRow
from tests.storage.conftest import StoreOpener

T0 = 1_800_000_000_000
LEASE = 30_000


def workflow(workflow_id: str = "workflow_1", project: str = "prj_a", status: str = "active") -> WorkflowRow:
    return WorkflowRow(project=project, workflow_id=workflow_id, status=status, created_ms=T0, updated_ms=T0,
                       body=msgspec.json.encode({"workflowId": workflow_id}).decode())


def action(n: int, due: int = T0, workflow_id: str = "workflow_1") -> NewAction:
    return NewAction(id=f"wfa_{workflow_id}_{n}", project="prj_a", workflow_id=workflow_id, session_id=f"s-{n}",
                     user_id=None, action_index=0, action_type="offer", variant="", due_at=due, created_at=T0,
                     detail=msgspec.json.encode({"n": n}).decode())


def claim(owner: str, now: int, limit: int = 10) -> ActionClaim:
    return ActionClaim(owner=owner, now_ms=now, lease_ms=LEASE, limit=limit)


async def test_workflows_are_project_scoped_and_their_status_is_set_apart(store: Store) -> None:
    await store.save_workflow(workflow("workflow_1", "prj_a"))
    await store.save_workflow(workflow("workflow_2", "prj_b", status="pending_approval"))
    assert [w.workflow_id for w in await store.list_workflows("prj_a")] == ["workflow_1"]
    assert {w.workflow_id for w in await store.list_workflows(None)} == {"workflow_1", "workflow_2"}
    assert await store.get_workflow("prj_b", "workflow_1") is None
    assert await store.get_workflow("prj_a", "workflow_1") == workflow("workflow_1", "prj_a")
    assert not await store.set_workflow_status("prj_a", "workflow_2", "active")  # another project's
    assert await store.set_workflow_status("prj_b", "workflow_2", "active")
    found = await store.get_workflow("prj_b", "workflow_2")
    assert found is not None and found.status == "active" and found.body == workflow("workflow_2").body



async def test_the_approval_travels_with_the_status(store: Store) -> None:
    pending = '{"approvalId": "approval_1", "reason": "impact.riskLevel is high"}'
    await store.save_workflow(msgspec.structs.replace(workflow(status="pending_approval"), approval=pending))
    found = await store.get_workflow("prj_a", "workflow_1")
    assert found is not None and found.approval == pending
    decided = ('{"approvalId": "approval_1", "reason": "impact.riskLevel is high", "decision":'
               ' "approved_with_conditions", "conditions": ["limit_to_1_users_per_hour"], "decided": 1}')
    assert await store.set_workflow_status("prj_a", "workflow_1", "active", decided)
    found = await store.get_workflow("prj_a", "workflow_1")
    assert found is not None and (found.status, found.approval) == ("active", decided)
    assert await store.set_workflow_status("prj_a", "workflow_1", "paused")  # no approval given: kept
    listed = await store.list_workflows("prj_a")
    assert [(w.status, w.approval) for w in listed] == [("paused", decided)]
    assert (await store.list_workflows(None))[0].approval == decided
    await store.save_workflow(workflow("workflow_2"))
    found = await store.get_workflow("prj_a", "workflow_2")
    assert found is not None and found.approval is None  # never gated

async def test_delete_removes_the_workflow_its_actions_and_its_firing_marks(store: Store) -> None:
    await store.save_workflow(workflow())
    await store.schedule_workflow_actions([action(1)])
    await store.record_trigger_activity(
        [SessionMark(project="prj_a", trigger_id="workflow_1", session_id="s-1", eligible_ms=T0, fired_ms=T0, fires=1)],
        [Execution(project="prj_a", execution_id="exe_1", trigger_id="workflow_1", session_id="s-1", user_id=None,
                   variant="", executed_ms=T0, source="event", executed=True, detail="{}")],
    )
    assert not await store.delete_workflow("prj_b", "workflow_1")
    assert await store.delete_workflow("prj_a", "workflow_1")
    assert await store.get_workflow("prj_a", "workflow_1") is None
    assert await store.list_workflow_actions("prj_a", "workflow_1", 10) == []
    assert await store.trigger_session_marks("prj_a", "s-1") == []
    assert await store.trigger_executions("prj_a", "workflow_1", 10) == []
    assert not await store.delete_workflow("prj_a", "workflow_1")


async def test_scheduled_actions_survive_a_restart_once_each(open_store: StoreOpener) -> None:
    async with open_store() as store:
        assert await store.schedule_workflow_actions([action(1), action(2, due=T0 + 60_000)]) == 2
        assert await store.schedule_workflow_actions([action(1)]) == 0  # the same firing again
    async with open_store() as store:
        listed = await store.list_workflow_actions("prj_a", "workflow_1", 10)
        assert {a.id for a in listed} == {"wfa_workflow_1_1", "wfa_workflow_1_2"}
        assert all(a.status == SCHEDULED and a.attempts == 0 for a in listed)
        assert await store.workflow_action_depth() == (2, 0)
        (due,) = await store.claim_workflow_actions(claim("n1", T0 + 1))  # only the one due
        assert due.id == "wfa_workflow_1_1" and due.status == RUNNING and due.lease_owner == "n1" and due.attempts == 1
        assert due.lease_until == T0 + 1 + LEASE
        assert msgspec.json.decode(due.detail) == {"n": 1}


async def test_a_leased_action_is_not_claimed_again_until_its_lease_expires(store: Store) -> None:
    await store.schedule_workflow_actions([action(1)])
    (first,) = await store.claim_workflow_actions(claim("n1", T0))
    assert await store.claim_workflow_actions(claim("n2", T0 + LEASE - 1)) == []
    (again,) = await store.claim_workflow_actions(claim("n2", T0 + LEASE))
    assert again.id == first.id and again.lease_owner == "n2" and again.attempts == 2
    # fencing: n1's late end is refused; n2's is stored
    assert not await store.finish_workflow_action(first.id, "n1", DONE, T0 + LEASE + 5, '{"node": "n1"}')
    assert await store.finish_workflow_action(first.id, "n2", DONE, T0 + LEASE + 6, '{"node": "n2"}')
    (done,) = await store.list_workflow_actions("prj_a", "workflow_1", 10)
    assert done.status == DONE and done.finished_at == T0 + LEASE + 6 and done.result == '{"node": "n2"}'
    assert done.due_at == T0 and done.lease_owner is None
    assert await store.claim_workflow_actions(claim("n3", T0 + 10 * LEASE)) == []  # done is never due again
    assert not await store.finish_workflow_action(first.id, "n2", DONE, T0 + LEASE + 7, "{}")  # once


async def test_a_given_back_action_is_due_at_once(store: Store) -> None:
    await store.schedule_workflow_actions([action(1, due=T0)])
    (leased,) = await store.claim_workflow_actions(claim("n1", T0 + 5))
    assert await store.finish_workflow_action(leased.id, "n1", SCHEDULED, T0 + 9, None)
    (back,) = await store.list_workflow_actions("prj_a", "workflow_1", 10)
    assert back.status == SCHEDULED and back.due_at == T0 + 9 and back.finished_at is None
    (again,) = await store.claim_workflow_actions(claim("n2", T0 + 9))
    assert again.attempts == 2


async def test_concurrent_claims_never_share_an_action(store: Store) -> None:
    await store.schedule_workflow_actions([action(n) for n in range(60)])
    got: dict[str, list[str]] = {}

    async def claimer(owner: str) -> None:
        mine: list[str] = []
        while True:
            rows = await store.claim_workflow_actions(claim(owner, T0 + 1, limit=7))
            if not rows:
                break
            mine += [r.id for r in rows]
        got[owner] = mine

    async with trio.open_nursery() as nursery:
        for i in range(4):
            nursery.start_soon(claimer, f"n{i}")
    everything = [i for ids in got.values() for i in ids]
    assert len(everything) == len(set(everything)) == 60
