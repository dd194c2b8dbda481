"""Request/reply between nodes: round trip, unknown or silent nodes, timeouts, remote errors."""

from __future__ import annotations

import pytest
import trio

from storage.redis_bus import NodeUnreachable, RemoteError
from storage.redis_rpc import MAX_IN_FLIGHT, REQUEST_QUEUE
from tests.bus.conftest import WAIT_S, make_bus, redis_client, register_fake_node, running, wait_until


async def echo(payload: bytes) -> bytes:
    return b"echo:" + payload


async def test_call_round_trip(redis_url: str) -> None:
    async with running() as nodes:
        a = await nodes.start(make_bus(redis_url, "a"))
        b = await nodes.start(make_bus(redis_url, "b"))
        a.set_handler(echo)
        b.set_handler(echo)
        await wait_until(lambda: "b" in a.live_nodes())
        assert await a.call("b", b"hello", timeout=2) == b"echo:hello"
        assert await b.call("a", b"\x00" * 10_000, timeout=2) == b"echo:" + b"\x00" * 10_000
        assert await a.call("a", b"self", timeout=2) == b"echo:self"  # no Redis hop for itself
        assert b.stats()["rpc_handled"] == 1


async def test_requests_are_handled_concurrently(redis_url: str) -> None:
    calls_at_once = 50
    handling = 0
    all_in = trio.Event()

    async def rendezvous(payload: bytes) -> bytes:
        # no handler returns until every request is in a handler: handled one at a time, they
        # would wait for each other until the deadline below
        nonlocal handling
        handling += 1
        if handling == calls_at_once:
            all_in.set()
        await all_in.wait()
        return payload

    async with running() as nodes:
        a = await nodes.start(make_bus(redis_url, "a"))
        b = await nodes.start(make_bus(redis_url, "b"))
        b.set_handler(rendezvous)
        await wait_until(lambda: "b" in a.live_nodes())
        replies: list[bytes] = []

        async def one(i: int) -> None:
            replies.append(await a.call("b", b"%d" % i, timeout=3 * WAIT_S))

        with trio.fail_after(WAIT_S):
            async with trio.open_nursery() as calls:
                for i in range(calls_at_once):
                    calls.start_soon(one, i)
        assert sorted(replies) == sorted(b"%d" % i for i in range(calls_at_once))


async def test_call_to_an_unknown_node_fails_at_once(redis_url: str) -> None:
    async with running() as nodes:
        a = await nodes.start(make_bus(redis_url, "a"))
        # at once: long before the call's own timeout
        with trio.fail_after(WAIT_S), pytest.raises(NodeUnreachable, match="not live"):
            await a.call("nobody", b"x", timeout=3 * WAIT_S)


async def test_call_to_a_live_node_that_does_not_listen_fails_at_once(redis_url: str) -> None:
    async with running() as nodes:
        a = await nodes.start(make_bus(redis_url, "a"))
        async with redis_client(redis_url) as client:  # registered, but no process behind it
            await register_fake_node(client, "ghost", ahead_s=60)
        await wait_until(lambda: "ghost" in a.live_nodes())
        with trio.fail_after(WAIT_S), pytest.raises(NodeUnreachable, match="not listening"):
            await a.call("ghost", b"x", timeout=3 * WAIT_S)  # at once, not at the timeout


async def test_call_times_out_and_the_target_stops_working_on_it(redis_url: str) -> None:
    cancelled = trio.Event()

    async def stuck(payload: bytes) -> bytes:
        try:
            await trio.sleep_forever()
        finally:
            cancelled.set()
        raise AssertionError("unreachable")

    async with running() as nodes:
        a = await nodes.start(make_bus(redis_url, "a"))
        b = await nodes.start(make_bus(redis_url, "b"))
        b.set_handler(stuck)
        await wait_until(lambda: "b" in a.live_nodes())
        started = trio.current_time()
        with trio.fail_after(WAIT_S), pytest.raises(NodeUnreachable, match="did not answer within 0.3 s"):
            await a.call("b", b"x", timeout=0.3)
        assert trio.current_time() - started >= 0.3  # not before its timeout
        with trio.fail_after(WAIT_S):
            await cancelled.wait()  # the target gave up too (rpc_expired: at the caller's deadline)
        assert a.stats()["rpc_timeouts"] == 1
        assert b.stats()["rpc_expired"] == 1


async def test_a_handler_error_comes_back_as_remote_error(redis_url: str) -> None:
    async def broken(payload: bytes) -> bytes:
        raise ValueError(f"cannot handle {payload!r}")

    async with running() as nodes:
        a = await nodes.start(make_bus(redis_url, "a"))
        b = await nodes.start(make_bus(redis_url, "b"))
        b.set_handler(broken)
        a.set_handler(broken)
        await wait_until(lambda: "b" in a.live_nodes())
        with pytest.raises(RemoteError, match=r"ValueError: cannot handle b'x'"):
            await a.call("b", b"x", timeout=2)
        with pytest.raises(RemoteError, match=r"ValueError: cannot handle b'y'"):
            await a.call("a", b"y", timeout=2)
        # the node is fine afterwards
        b.set_handler(echo)
        assert await a.call("b", b"z", timeout=2) == b"echo:z"


async def test_requests_beyond_the_limits_are_refused_as_busy(redis_url: str) -> None:
    gate = trio.Event()

    async def gated(payload: bytes) -> bytes:
        await gate.wait()
        return payload

    async with running() as nodes:
        a = await nodes.start(make_bus(redis_url, "a"))
        b = await nodes.start(make_bus(redis_url, "b"))
        b.set_handler(gated)
        await wait_until(lambda: "b" in a.live_nodes())
        capacity = MAX_IN_FLIGHT + REQUEST_QUEUE  # handled at once + waiting for a slot
        total = capacity + 100
        outcomes: list[str] = []

        async def one(i: int) -> None:
            try:
                await a.call("b", b"%d" % i, timeout=10)
                outcomes.append("ok")
            except RemoteError as exc:
                assert "busy" in str(exc)
                outcomes.append("busy")

        async with trio.open_nursery() as calls:
            for i in range(total):
                calls.start_soon(one, i)
            await wait_until(lambda: b.stats()["rpc_refused_busy"] == total - capacity - 1)
            gate.set()
        # everything within the limits was handled (the dispatcher holds one more, waiting for a slot)
        assert outcomes.count("ok") == capacity + 1
        assert outcomes.count("busy") == total - capacity - 1
