"""Redis going away (stopped, crashed, hung) never takes a node down; everything comes back."""

from __future__ import annotations

import pytest
import trio

from storage.redis_bus import DEREGISTER_TIMEOUT_S, BusUnavailable, NodeUnreachable
from tests.bus.conftest import WAIT_S, Recorder, make_bus, running, wait_until
from tests.services import service_unavailable
from tests.services.redis import REDIS_URL_ENV, RedisServer


@pytest.fixture
def private_redis(redis_server: RedisServer) -> RedisServer:
    if not redis_server.restartable:
        service_unavailable(f"needs a private redis server ({REDIS_URL_ENV} cannot be restarted)")
    return redis_server


@pytest.mark.parametrize("kill", [False, True], ids=["stopped", "killed"])
async def test_redis_restart(private_redis: RedisServer, kill: bool) -> None:
    async with running() as nodes:
        a = await nodes.start(make_bus(private_redis.url, "a"))
        b = await nodes.start(make_bus(private_redis.url, "b"))
        b.set_handler(_echo)
        got_a, got_b = Recorder(a), Recorder(b)
        seen_by_a: list[tuple[str, ...]] = []
        a.on_membership_change(seen_by_a.append)
        await wait_until(lambda: a.live_nodes() == ("a", "b") == b.live_nodes())
        await a.publish("ch", b"before")
        await got_b.wait_for(1)

        private_redis.stop(kill=kill)
        await wait_until(lambda: not a.connected and not b.connected)
        assert a.last_error and b.last_error
        assert a.live_nodes() == ("a",) and b.live_nodes() == ("b",)
        assert seen_by_a[-1] == ("a",)
        with pytest.raises(BusUnavailable, match="not connected"):
            await a.publish("ch", b"lost")
        with pytest.raises(BusUnavailable):
            await a.read_since("ch", "0", limit=10)
        with trio.fail_after(WAIT_S), pytest.raises(NodeUnreachable):
            await a.call("b", b"x", timeout=3 * WAIT_S)  # at once, not at the timeout
        assert a.stats()["publish_refused"] == 1

        private_redis.start()  # empty: streams, scripts and membership are gone
        await wait_until(lambda: a.connected and b.connected)
        assert a.last_error is None
        await wait_until(lambda: a.live_nodes() == ("a", "b") == b.live_nodes())
        assert seen_by_a[-1] == ("a", "b")
        await a.publish("ch", b"after")
        await b.publish("ch", b"after too")
        await got_a.wait_for(3)
        await got_b.wait_for(3)
        assert got_a.entries == got_b.entries  # one order for every node, whoever published
        assert sorted(got_a.payloads()) == [b"after", b"after too", b"before"]
        assert await a.call("b", b"x", timeout=2) == b"echo:x"
        assert a.stats()["reconnects"] >= 1


async def test_starts_while_redis_is_down_and_connects_later(private_redis: RedisServer) -> None:
    private_redis.stop()
    async with running() as nodes:
        with trio.fail_after(WAIT_S):
            a = await nodes.start(make_bus(private_redis.url, "a"))
        assert not a.connected
        assert a.last_error is not None
        private_redis.start()
        await wait_until(lambda: a.connected)
        got = Recorder(a)
        await a.publish("ch", b"hello")
        await got.wait_for(1)


async def test_hung_redis_is_noticed_and_survived(private_redis: RedisServer) -> None:
    async with running() as nodes:
        a = await nodes.start(make_bus(private_redis.url, "a"))
        got = Recorder(a)
        private_redis.pause()  # sockets stay open; nothing answers
        try:
            await wait_until(lambda: not a.connected, within=5)
            with pytest.raises(BusUnavailable):
                await a.publish("ch", b"x")
        finally:
            private_redis.resume()
        await wait_until(lambda: a.connected)
        await a.publish("ch", b"back")
        await got.wait_for(1)
        assert got.payloads() == [b"back"]


async def test_stopping_a_bus_is_bounded_when_redis_hangs(private_redis: RedisServer) -> None:
    async with running() as nodes:
        await nodes.start(make_bus(private_redis.url, "a"))
        private_redis.pause()
        try:
            started = trio.current_time()
            with trio.fail_after(WAIT_S):
                await nodes.stop("a")  # deregistering cannot reach Redis: it gives up in time
        finally:
            private_redis.resume()
        # it did try (a hung Redis accepts the connection), for as long as its deadline allowed
        assert trio.current_time() - started >= DEREGISTER_TIMEOUT_S


async def _echo(payload: bytes) -> bytes:
    return b"echo:" + payload


async def test_starts_in_bounded_time_while_redis_hangs(private_redis: RedisServer) -> None:
    private_redis.pause()  # accepts connections (the kernel does), answers nothing
    try:
        async with running() as nodes:
            with trio.fail_after(WAIT_S):  # one setup deadline (SETUP_TIMEOUT_S), not forever
                a = await nodes.start(make_bus(private_redis.url, "a"))
            assert not a.connected
            assert a.last_error and "setup" in a.last_error
            private_redis.resume()
            await wait_until(lambda: a.connected)
    finally:
        private_redis.resume()
