"""The Store's approval, settings, sync-cursor and receiver-health methods on every backend."""

from __future__ import annotations

from storage.approval_records import Approval, CursorAdvance, Decision
from storage.base import Store
from storage.webhook_records import Claim, NewDelivery, Outcome, Webhook
from tests.storage.conftest import StoreOpener


def approval(approval_id: str, created: int, project: str = "p1") -> Approval:
    return Approval(project=project, approval_id=approval_id, status="pending", decision=None, target_kind="trigger",
                    target_id="t1", reason="requiresApproval is true", request='{"a": 1}', conditions="[]",
                    approver=None, created_ms=created, decided_ms=None)


async def test_an_approval_is_decided_once(store: Store) -> None:
    await store.create_approval(approval("a1", 10))
    await store.create_approval(approval("a2", 20))
    await store.create_approval(approval("a9", 5, project="p2"))
    assert [a.approval_id for a in await store.list_approvals("p1", 10)] == ["a2", "a1"]
    assert await store.get_approval("p2", "a1") is None  # another project's
    first = Decision(project="p1", approval_id="a1", status="approved", decision="approved_with_conditions",
                     conditions='["only_device_mobile"]', approver="ann", decided_ms=30)
    assert await store.decide_approval(first) is True
    second = Decision(project="p1", approval_id="a1", status="rejected", decision="rejected", conditions="[]",
                      approver="bob", decided_ms=40)
    assert await store.decide_approval(second) is False
    assert await store.decide_approval(Decision(project="p2", approval_id="a2", status="rejected", decision="rejected",
                                                conditions="[]", approver="x", decided_ms=1)) is False
    got = await store.get_approval("p1", "a1")
    assert got is not None
    assert (got.status, got.decision, got.conditions, got.approver, got.decided_ms) == (
        "approved", "approved_with_conditions", '["only_device_mobile"]', "ann", 30)


async def test_the_reach_threshold_survives_a_restart(open_store: StoreOpener) -> None:
    async with open_store() as store:
        assert await store.reach_threshold("p1") is None
        await store.set_reach_threshold("p1", 500, 1)
        await store.set_reach_threshold("p1", 700, 2)
    async with open_store() as store:
        assert await store.reach_threshold("p1") == 700 and await store.reach_threshold("p2") is None


async def test_the_sync_cursor_moves_by_compare_and_set(store: Store) -> None:
    assert await store.sync_cursors("p1") == []
    assert await store.advance_sync_cursor(CursorAdvance(project="p1", webhook_id="w1", expected_seq=0, after_seq=10,
                                                         synced_ms=1, sent=10))
    # a second sync that read the cursor at 0 too loses
    assert not await store.advance_sync_cursor(CursorAdvance(project="p1", webhook_id="w1", expected_seq=0,
                                                             after_seq=12, synced_ms=2, sent=12))
    assert await store.advance_sync_cursor(CursorAdvance(project="p1", webhook_id="w1", expected_seq=10, after_seq=15,
                                                         synced_ms=3, sent=5))
    (cursor,) = await store.sync_cursors("p1")
    assert (cursor.webhook_id, cursor.after_seq, cursor.synced_ms, cursor.events_sent) == ("w1", 15, 3, 15)


async def test_receiver_health_counts_real_delivery_outcomes(store: Store) -> None:
    for hook_id in ("w1", "w2"):
        await store.create_webhook(Webhook(id=hook_id, project="p1", url="http://127.0.0.1:9/x", events=("e",),
                                           secret="whsec_AAAA", created_at=1))
    rows = [NewDelivery(id=f"d{i}", webhook_id="w1" if i < 3 else "w2", project="p1", kind="e", dedup_key=f"k{i}",
                        body=b"{}", created_at=100 + i) for i in range(5)]
    assert await store.record_deliveries(rows) == 5
    claimed = await store.claim_deliveries(Claim(owner="n1", now_ms=200, lease_ms=10_000, limit=10, per_webhook=10))
    assert len(claimed) == 5
    outcomes = {"d0": ("delivered", None, 200), "d1": ("pending", "HTTP 500", 500), "d2": ("dead", "refused", None),
                "d3": ("delivered", None, 204)}  # d4 stays leased: in flight
    for delivery_id, (status, error, http) in outcomes.items():
        assert await store.finish_delivery(Outcome(id=delivery_id, owner="n1", status=status, next_attempt_at=10_000,
                                                   error=error, http_status=http, now_ms=300))
    health = {h.webhook_id: h for h in await store.receiver_health("p1", 0)}
    w1, w2 = health["w1"], health["w2"]
    assert (w1.delivered, w1.dead, w1.retrying, w1.in_flight) == (1, 1, 1, 0)
    assert w1.last_delivered_ms == 300 and w1.last_error in ("HTTP 500", "refused")
    assert (w2.delivered, w2.dead, w2.retrying, w2.in_flight, w2.last_error) == (1, 0, 0, 1, None)
    assert await store.receiver_health("p1", 10_000) != []  # the newest success is known beyond the window
    assert {h.delivered for h in await store.receiver_health("p1", 10_000)} == {0}
    assert await store.receiver_health("p2", 0) == []
