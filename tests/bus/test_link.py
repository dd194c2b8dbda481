"""The connection layer under the bus: the subscription's fast path, scripts Redis forgot, errors."""

from __future__ import annotations

import contextlib

import trio

from storage.redis_link import Backoff, LinkLost, LuaScript, describe, open_link, sole_exception
from tests.bus.conftest import Recorder, make_bus, redis_client, running


async def test_the_subscription_drains_the_push_buffer_directly(redis_url: str) -> None:
    # the fast path relies on a private attribute of coredis's connection: an upgrade that
    # renames it must fail here, not silently double the cost of receiving
    async with open_link(redis_url, client_name="test") as link:
        assert link.subscription.batched
        await link.subscription.subscribe(channels=["test:ch"])
        for i in range(600):  # more than one batch between checkpoints
            await link.commands.publish("test:ch", b"%d" % i)
        received = []
        with trio.fail_after(5):
            async with contextlib.aclosing(link.subscription.messages()) as messages:
                async for message in messages:
                    received.append(message[2])
                    if len(received) == 600:
                        break
        assert received == [b"%d" % i for i in range(600)]


async def test_a_script_redis_forgot_is_loaded_again(redis_url: str) -> None:
    script = LuaScript("answer", "return 42")
    async with redis_client(redis_url) as client:
        assert await script.run(client, [], []) == 42  # never loaded: NOSCRIPT, load, run
        await client.script_flush()
        assert await script.run(client, [], []) == 42


async def test_publishing_survives_a_script_flush(redis_url: str) -> None:
    async with running() as nodes:
        bus = await nodes.start(make_bus(redis_url, "a"))
        got = Recorder(bus)
        async with redis_client(redis_url) as client:
            await client.script_flush()  # as after a Redis restart the bus has not noticed yet
        await bus.publish("ch", b"still delivered")
        await got.wait_for(1)
        assert bus.stats()["publish_failures"] == 0
        assert await bus.read_since("ch", "0", limit=10) == [(got.entries[0][1], b"still delivered")]


def test_backoff_is_capped_and_jittered() -> None:
    backoff = Backoff(0.05, 2.0)
    delays = [backoff.next_delay() for _ in range(20)]
    assert all(0.025 <= delay <= 2.0 for delay in delays)
    assert max(delays[-5:]) > 1.0
    backoff.reset()
    assert backoff.next_delay() <= 0.05


def test_errors_are_described_from_inside_groups() -> None:
    group = ExceptionGroup("outer", [ExceptionGroup("inner", [LinkLost("pub/sub connection closed")])])
    assert isinstance(sole_exception(group), LinkLost)
    assert describe(group) == "LinkLost: pub/sub connection closed"
    assert sole_exception(ExceptionGroup("two", [ValueError(), KeyError()])) is None
