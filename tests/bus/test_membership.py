"""Membership by heartbeat, and key ownership by rendezvous hashing over the live nodes."""

from __future__ import annotations

import trio

from storage.membership import STALE_AFTER_TTLS, owner_of
from tests.bus.conftest import (
    HEARTBEAT_S,
    WAIT_S,
    make_bus,
    redis_client,
    register_fake_node,
    running,
    wait_until,
)

KEYS = [f"session:{i}" for i in range(2000)]


def test_rendezvous_moves_only_the_departed_nodes_keys() -> None:
    nodes = ["n1", "n2", "n3", "n4"]
    before = {key: owner_of(key, nodes) for key in KEYS}
    assert before == {key: owner_of(key, reversed(nodes)) for key in KEYS}  # order does not matter
    shares = {node: sum(1 for owner in before.values() if owner == node) for node in nodes}
    assert all(len(KEYS) * 0.18 < share < len(KEYS) * 0.32 for share in shares.values()), shares

    after = {key: owner_of(key, ["n1", "n2", "n4"]) for key in KEYS}
    moved = {key for key in KEYS if before[key] != after[key]}
    assert moved == {key for key in KEYS if before[key] == "n3"}

    joined = {key: owner_of(key, [*nodes, "n5"]) for key in KEYS}
    assert all(joined[key] in (before[key], "n5") for key in KEYS)  # a newcomer only takes keys


async def test_nodes_see_each_other_join_and_leave(redis_url: str) -> None:
    ttl_s = 6 * WAIT_S  # so long that a leave seen within WAIT_S cannot be the TTL expiring
    async with running() as nodes:
        a = await nodes.start(make_bus(redis_url, "a", node_ttl_s=ttl_s))
        changes: list[tuple[str, ...]] = []
        a.on_membership_change(changes.append)
        assert a.live_nodes() == ("a",)
        await nodes.start(make_bus(redis_url, "b", node_ttl_s=ttl_s))
        c = await nodes.start(make_bus(redis_url, "c", node_ttl_s=ttl_s))
        await wait_until(lambda: a.live_nodes() == ("a", "b", "c") == c.live_nodes())
        assert changes[-1] == ("a", "b", "c")

        # a node that stops cleanly leaves at once (it says so), not after the TTL
        with trio.fail_after(WAIT_S):
            await nodes.stop("c")
            await wait_until(lambda: all(bus.live_nodes() == ("a", "b") for bus in nodes.buses.values()))
        assert changes[-1] == ("a", "b")


async def test_a_node_that_stops_heartbeating_is_gone_after_the_ttl(redis_url: str) -> None:
    ttl_s = 1.0
    async with running() as nodes:
        a = await nodes.start(make_bus(redis_url, "a", node_ttl_s=ttl_s))
        # a node that crashed: registered by one heartbeat, never again (and never deregistered)
        async with redis_client(redis_url) as client:
            registered_at = trio.current_time()
            await register_fake_node(client, "crashed")
        await wait_until(lambda: a.live_nodes() == ("a", "crashed"))
        # gone by the TTL, long before its entry would be dropped from the set as stale
        await wait_until(lambda: a.live_nodes() == ("a",), within=STALE_AFTER_TTLS * ttl_s)
        assert trio.current_time() - registered_at >= ttl_s - HEARTBEAT_S  # not before the TTL


async def test_owner_is_the_same_on_every_node_and_moves_only_the_leavers_keys(redis_url: str) -> None:
    async with running() as nodes:
        buses = [await nodes.start(make_bus(redis_url, name)) for name in ("a", "b", "c")]
        await wait_until(lambda: all(bus.live_nodes() == ("a", "b", "c") for bus in buses))
        owners = {key: buses[0].owner(key) for key in KEYS}
        assert all(bus.owner(key) == owners[key] for bus in buses for key in KEYS)
        assert set(owners.values()) == {"a", "b", "c"}

        await nodes.stop("c")
        await wait_until(lambda: all(bus.live_nodes() == ("a", "b") for bus in buses[:2]))
        for key in KEYS:
            now = buses[0].owner(key)
            assert now == buses[1].owner(key)
            assert now == owners[key] if owners[key] != "c" else now in ("a", "b")


async def test_without_redis_a_node_is_alone() -> None:
    bus = make_bus("redis://127.0.0.1:1/0", "lonely")  # nothing listens on port 1
    assert bus.live_nodes() == ("lonely",)
    assert bus.owner("anything") == "lonely"
    async with running() as nodes:
        with trio.fail_after(5):
            await nodes.start(bus)  # started after the first (failed) attempt
        assert not bus.connected
        assert bus.last_error and "connection" in bus.last_error.lower()
        assert bus.live_nodes() == ("lonely",)
