"""The Store's webhook methods, on every backend: durable pending rows, leased claims that never
overlap, fenced outcomes, lease expiry, dead letters and replay. Time is passed in (``now_ms``), so
leases expire without waiting."""

from __future__ import annotations

import trio_asyncio  # first: before anything imports asyncpg

# isort: split
import contextlib
from collections.abc import AsyncIterator

import trio

from storage.base import Store
from storage.postgres import PostgresStore
from storage.webhook_records import DEAD, DELIVERED, DELIVERING, PENDING, Claim, NewDelivery, Outcome, Webhook
from tests.storage.conftest import StoreOpener

T0 = 1_800_000_000_000
LEASE = 30_000


def hook(hook_id: str = "wh_1", project: str = "prj_a") -> Webhook:
    return Webhook(id=hook_id, project=project, url="http://127.0.0.1:9/x", events=("purchase",),
                   secret="whsec_" + "A" * 32, created_at=T0)


def row(n: int, hook_id: str = "wh_1", *, key: str | None = None, at: int = T0) -> NewDelivery:
    return NewDelivery(id=f"msg_{hook_id}_{n}", webhook_id=hook_id, project="prj_a", kind="purchase",
                       dedup_key=key or f"k{n}", body=b'{"n":%d}' % n, created_at=at)


def claim(owner: str, now: int, limit: int = 10, per: int = 10, exclude: tuple[str, ...] = ()) -> Claim:
    return Claim(owner=owner, now_ms=now, lease_ms=LEASE, limit=limit, per_webhook=per, exclude=exclude)


def outcome(delivery_id: str, owner: str, status: str, now: int, due: int | None = None) -> Outcome:
    return Outcome(id=delivery_id, owner=owner, status=status, next_attempt_at=due or now, error="HTTP 500",
                   http_status=500, now_ms=now)


async def test_webhooks_are_project_scoped_and_deleted_with_their_deliveries(store: Store) -> None:
    await store.create_webhook(hook("wh_1", "prj_a"))
    await store.create_webhook(hook("wh_2", "prj_b"))
    assert [h.id for h in await store.list_webhooks("prj_a")] == ["wh_1"]
    assert {h.id for h in await store.list_webhooks(None)} == {"wh_1", "wh_2"}
    assert (await store.list_webhooks("prj_a"))[0] == hook("wh_1", "prj_a")
    await store.record_deliveries([row(1)])
    assert not await store.delete_webhook("prj_b", "wh_1")  # another project's
    assert await store.delete_webhook("prj_a", "wh_1")
    assert await store.list_webhooks("prj_a") == []
    assert await store.get_delivery("prj_a", "msg_wh_1_1") is None


async def test_recorded_deliveries_survive_a_restart_and_dedup_by_key(open_store: StoreOpener) -> None:
    async with open_store() as store:
        await store.create_webhook(hook())
        assert await store.record_deliveries([row(1), row(2), row(3, key="k1")]) == 2  # k1 twice: one row
        assert await store.record_deliveries([row(4, key="k2")]) == 0
    async with open_store() as store:
        depth = await store.webhook_queue_depth()
        assert (depth.pending, depth.delivering, depth.dead) == (2, 0, 0)
        claimed = await store.claim_deliveries(claim("node-a", T0))
        assert [d.id for d in claimed] == ["msg_wh_1_1", "msg_wh_1_2"]
        assert all(d.status == DELIVERING and d.attempts == 1 and d.lease_owner == "node-a" for d in claimed)
        assert claimed[0].body == b'{"n":1}'


async def test_a_lease_excludes_other_claims_until_it_expires(store: Store) -> None:
    await store.create_webhook(hook())
    await store.record_deliveries([row(1)])
    first = await store.claim_deliveries(claim("node-a", T0))
    assert len(first) == 1
    assert await store.claim_deliveries(claim("node-b", T0 + LEASE - 1)) == []  # leased
    again = await store.claim_deliveries(claim("node-b", T0 + LEASE))  # node-a died: the lease expired
    assert [(d.id, d.lease_owner, d.attempts) for d in again] == [("msg_wh_1_1", "node-b", 2)]
    # node-a's late outcome is fenced off; node-b's counts
    assert not await store.finish_delivery(outcome("msg_wh_1_1", "node-a", DELIVERED, T0 + LEASE + 5))
    assert await store.finish_delivery(outcome("msg_wh_1_1", "node-b", DELIVERED, T0 + LEASE + 6))
    done = await store.get_delivery("prj_a", "msg_wh_1_1")
    assert done is not None and (done.status, done.finished_at, done.lease_owner) == (DELIVERED, T0 + LEASE + 6, None)
    assert await store.claim_deliveries(claim("node-c", T0 + 10 * LEASE)) == []


async def test_retries_are_due_at_their_time_and_dead_letters_replay(store: Store) -> None:
    await store.create_webhook(hook())
    await store.record_deliveries([row(1), row(2)])
    a, b = await store.claim_deliveries(claim("n", T0))
    assert await store.finish_delivery(outcome(a.id, "n", PENDING, T0 + 10, due=T0 + 1500))
    assert await store.finish_delivery(outcome(b.id, "n", DEAD, T0 + 10))
    assert await store.claim_deliveries(claim("n", T0 + 1499)) == []
    assert [d.id for d in await store.claim_deliveries(claim("n", T0 + 1500))] == [a.id]
    dead = await store.list_deliveries("prj_a", "wh_1", DEAD, 10)
    assert [(d.id, d.last_error, d.last_status) for d in dead] == [(b.id, "HTTP 500", 500)]
    assert await store.replay_deliveries("prj_b", "wh_1", None, T0 + 2000) == 0  # another project's
    assert await store.replay_deliveries("prj_a", "wh_1", b.id, T0 + 2000) == 1
    replayed = await store.get_delivery("prj_a", b.id)
    assert replayed is not None and (replayed.status, replayed.retry_from, replayed.finished_at) == (PENDING, T0 + 2000, None)
    assert [d.id for d in await store.claim_deliveries(claim("n", T0 + 2000))] == [b.id]


async def test_claims_bound_each_receiver_and_skip_excluded_ones(store: Store) -> None:
    await store.create_webhook(hook("wh_1"))
    await store.create_webhook(hook("wh_2"))
    await store.record_deliveries([row(i, "wh_1") for i in range(5)] + [row(i, "wh_2") for i in range(5)])
    claimed = await store.claim_deliveries(claim("n", T0, limit=10, per=2))
    assert sorted(d.webhook_id for d in claimed) == ["wh_1", "wh_1", "wh_2", "wh_2"]
    claimed = await store.claim_deliveries(claim("n", T0, limit=10, per=2, exclude=("wh_1",)))
    assert [d.webhook_id for d in claimed] == ["wh_2", "wh_2"]
    assert len(await store.claim_deliveries(claim("n", T0, limit=1, per=5))) == 1


async def test_disabling_a_webhook_kills_its_open_deliveries(store: Store) -> None:
    await store.create_webhook(hook())
    await store.record_deliveries([row(1), row(2)])
    await store.disable_webhook("wh_1", "disabled: 410 Gone", T0 + 5)
    (listed,) = await store.list_webhooks("prj_a")
    assert listed.disabled_reason == "disabled: 410 Gone"
    depth = await store.webhook_queue_depth()
    assert (depth.pending, depth.dead) == (0, 2)
    assert await store.claim_deliveries(claim("n", T0 + 10)) == []


async def test_delivered_rows_are_pruned_after_their_time(store: Store) -> None:
    await store.create_webhook(hook())
    await store.record_deliveries([row(1), row(2)])
    a, b = await store.claim_deliveries(claim("n", T0))
    await store.finish_delivery(outcome(a.id, "n", DELIVERED, T0 + 1))
    await store.finish_delivery(outcome(b.id, "n", DELIVERED, T0 + 100))
    assert await store.prune_deliveries(T0 + 50) == 1
    assert await store.get_delivery("prj_a", a.id) is None
    assert await store.get_delivery("prj_a", b.id) is not None


@contextlib.asynccontextmanager
async def running(dsn: str) -> AsyncIterator[PostgresStore]:
    store = PostgresStore(dsn)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        try:
            yield store
        finally:
            nursery.cancel_scope.cancel()


async def test_two_postgres_nodes_claiming_at_once_never_get_the_same_row(postgres_dsn: str) -> None:
    rows = 400
    async with trio_asyncio.open_loop(), running(postgres_dsn) as a, running(postgres_dsn) as b:
        await a.create_webhook(hook())
        for start in range(0, rows, 100):
            await a.record_deliveries([row(i) for i in range(start, start + 100)])
        got: dict[str, list[str]] = {"a": [], "b": []}

        async def drain(name: str, store: PostgresStore) -> None:
            while True:
                claimed = await store.claim_deliveries(claim(name, T0 + 1, limit=7, per=7))
                if not claimed:
                    return
                got[name] += [d.id for d in claimed]

        async with trio.open_nursery() as nursery:
            for _ in range(3):  # several concurrent claimers per node too
                nursery.start_soon(drain, "a", a)
                nursery.start_soon(drain, "b", b)
        everything = got["a"] + got["b"]
        assert len(everything) == len(set(everything)) == rows
        assert got["a"] and got["b"]  # both nodes took part
