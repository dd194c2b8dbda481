"""A Redis blip shorter than the grace changes nothing in the cluster; a longer outage behaves as
without a grace, and a node that was alone meanwhile makes the others treat what they hold as stale.
Against a real Redis that loses its connections, is stopped and restarted, or stays down."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from storage.redis_bus import RedisBus
from tests.bus.conftest import Recorder, make_bus, redis_client, running, wait_until
from tests.services import service_unavailable
from tests.services.redis import RedisServer

# Heartbeats every 0.1 s, dropped after 3 s without one (the server's TTL): the grace is bounded by it
HEARTBEAT_S = 0.1
NODE_TTL_S = 3.0


@pytest.fixture
def private_redis(redis_server: RedisServer) -> Iterator[RedisServer]:
    if not redis_server.restartable:
        service_unavailable("needs a private redis server (PULSE_TEST_REDIS_URL cannot be restarted)")
    yield redis_server
    redis_server.resume()


def graceful_bus(url: str, node_id: str, grace_s: float) -> RedisBus:
    return make_bus(url, node_id, heartbeat_s=HEARTBEAT_S, node_ttl_s=NODE_TTL_S, link_grace_s=grace_s)


class Watch:
    """What a bus told its callbacks: membership changes, link changes, absences."""

    def __init__(self, bus: RedisBus) -> None:
        self.memberships: list[tuple[str, ...]] = []
        self.links: list[bool] = []
        self.absences = 0
        bus.on_membership_change(self.memberships.append)
        bus.on_link_change(self.links.append)
        bus.on_absence(self._absent)

    def _absent(self) -> None:
        self.absences += 1


async def kill_connections(url: str, names: tuple[str, ...]) -> None:
    """Close the given Pulse nodes' Redis connections from the server side (a network blip)."""
    async with redis_client(url) as client:
        for info in await client.client_list():
            name = str(info.get("name") or "")
            if any(name == f"pulse:{node}" or name.startswith(f"pulse:{node}:") for node in names):
                await client.client_kill(identifier=int(info["id"]))


async def test_a_blip_shorter_than_the_grace_changes_no_membership(redis_url: str) -> None:
    async with running() as nodes:
        a = await nodes.start(graceful_bus(redis_url, "a", grace_s=3.0))
        b = await nodes.start(graceful_bus(redis_url, "b", grace_s=3.0))
        await wait_until(lambda: a.live_nodes() == ("a", "b") == b.live_nodes())
        watches = {bus.node_id: Watch(bus) for bus in (a, b)}
        got = Recorder(b)

        await kill_connections(redis_url, ("a", "b"))
        await wait_until(lambda: a.stats()["reconnects"] == 1 == b.stats()["reconnects"])
        await wait_until(lambda: a.connected and b.connected)

        for bus in (a, b):
            watch = watches[bus.node_id]
            assert watch.links == [False, True]  # it did lose Redis...
            assert watch.memberships == []  # ... and nobody saw the membership change
            assert watch.absences == 0  # nothing it holds is stale
            assert bus.live_nodes() == ("a", "b")
            stats = bus.stats()
            assert stats["outages_within_grace"] == 1 and stats["alone"] is False
        await a.publish("ch", b"after the blip")
        await got.wait_for(1)


async def test_membership_is_kept_while_redis_restarts_within_the_grace(private_redis: RedisServer) -> None:
    """A Redis that restarts with its data (persistence on): while it is down, each node keeps the
    membership it knew (and so the owner of every key); when it is back nothing has changed."""
    async with running() as nodes:
        a = await nodes.start(graceful_bus(private_redis.url, "a", grace_s=10.0))
        b = await nodes.start(graceful_bus(private_redis.url, "b", grace_s=10.0))
        await wait_until(lambda: a.live_nodes() == ("a", "b") == b.live_nodes())
        watch = Watch(a)
        owners = {key: a.owner(key) for key in (f"session-{i}" for i in range(50))}
        assert set(owners.values()) == {"a", "b"}
        async with redis_client(private_redis.url) as client:
            await client.save()  # what a Redis with persistence has when it stops

        private_redis.stop()
        await wait_until(lambda: not a.connected and not b.connected)
        assert a.live_nodes() == ("a", "b") and a.stats()["alone"] is False  # within the grace
        assert {key: a.owner(key) for key in owners} == owners
        private_redis.start()
        await wait_until(lambda: a.connected and b.connected)

        assert watch.memberships == [] and watch.absences == 0
        assert watch.links == [False, True]
        assert a.live_nodes() == ("a", "b") == b.live_nodes()


async def test_an_outage_longer_than_the_grace_leaves_a_node_alone_until_redis_returns(
    private_redis: RedisServer,
) -> None:
    async with running() as nodes:
        a = await nodes.start(graceful_bus(private_redis.url, "a", grace_s=0.3))
        b = await nodes.start(graceful_bus(private_redis.url, "b", grace_s=0.3))
        await wait_until(lambda: a.live_nodes() == ("a", "b") == b.live_nodes())
        watch = Watch(a)
        private_redis.stop()
        await wait_until(lambda: a.stats()["alone"])  # the grace is over: as without one
        assert a.live_nodes() == ("a",)
        assert watch.memberships == [("a",)]
        private_redis.start()  # empty
        await wait_until(lambda: a.live_nodes() == ("a", "b") == b.live_nodes())
        assert watch.memberships[-1] == ("a", "b")
        assert a.stats()["alone"] is False


async def test_a_node_that_was_alone_makes_the_others_rebuild(redis_url: str) -> None:
    """b never lost Redis; a did, for longer than its grace (none), and served every key alone
    meanwhile: when a is back, b hears of it (its actors for keys a served may be stale)."""
    async with running() as nodes:
        a = await nodes.start(graceful_bus(redis_url, "a", grace_s=0.0))
        b = await nodes.start(graceful_bus(redis_url, "b", grace_s=3.0))
        await wait_until(lambda: a.live_nodes() == ("a", "b") == b.live_nodes())
        watch_a, watch_b = Watch(a), Watch(b)

        await kill_connections(redis_url, ("a",))
        await wait_until(lambda: a.stats()["reconnects"] == 1 and a.connected)
        assert watch_a.memberships[0] == ("a",)  # alone at once: no grace
        await wait_until(lambda: watch_b.absences == 1)
        assert b.stats()["solo_periods_seen"] == 1
        assert watch_b.links == []  # b itself never lost its link
        assert watch_a.absences == 0  # a rebuilds because it was alone, not because of itself
        assert a.stats()["solo_periods_seen"] == 0
