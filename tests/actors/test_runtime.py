"""ActorSystem: spawning, mailboxes, ask deadlines, supervision, passivation and drain.

All timing runs on the autojump clock, so every deadline is asserted at its exact virtual time.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

import msgspec
import pytest
import trio
import trio.testing
from trio.testing import MockClock

from actors.runtime import (
    ActorCrashed,
    ActorKey,
    ActorStore,
    ActorSystem,
    AskTimeout,
    MailboxFull,
    SystemClosed,
)
from storage.base import Snapshot
from tests.actors.memory_store import MemoryStore

KEY: ActorKey = ("probe", "p1", "a")
OTHER: ActorKey = ("probe", "p1", "b")


class Probe:
    """Controls shared by every ProbeActor of a test."""

    def __init__(self) -> None:
        self.gate = trio.Event()  # "block" waits for it
        self.entered = trio.Event()  # set when a "block" message is being handled
        self.activations = 0
        self.fail_activations = 0


class ProbeActor:
    """Counts handled messages; "boom" raises, "block" waits for the gate, "hang" never returns."""

    def __init__(self, key: ActorKey, store: ActorStore, probe: Probe) -> None:
        self.key = key
        self.store = store
        self.probe = probe
        self.count = 0

    async def activate(self) -> None:
        self.probe.activations += 1
        if self.probe.fail_activations:
            self.probe.fail_activations -= 1
            raise RuntimeError("activation failed")
        snap = await self.store.load_snapshot(self.key[1], self.key[0], self.key[2])
        if snap is not None:
            self.count = msgspec.msgpack.decode(snap.state, type=int)

    async def receive(self, msg: Any) -> Any:
        if msg == "boom":
            raise RuntimeError("boom")
        if msg == "block":
            self.probe.entered.set()
            await self.probe.gate.wait()
        if msg == "hang":
            await trio.sleep_forever()
        self.count += 1
        return (self.key[2], self.count)

    def snapshot(self) -> Snapshot:
        return Snapshot(state=msgspec.msgpack.encode(self.count), upto_seq=0)


async def start(nursery: trio.Nursery, **options: Any) -> tuple[ActorSystem, MemoryStore, Probe]:
    store = MemoryStore()
    probe = Probe()
    system = ActorSystem(store, {"probe": lambda key, st: ProbeActor(key, st, probe)}, **options)
    await nursery.start(system.run)
    return system, store, probe


async def ask_in_background(
    nursery: trio.Nursery, system: ActorSystem, key: ActorKey, msg: Any, results: list[Any]
) -> None:
    """Start an ask; its reply (or error) lands at the next index of ``results`` (submission order)."""
    index = len(results)
    results.append(None)

    async def run() -> None:
        try:
            results[index] = await system.ask(key, msg, timeout=1000)
        except Exception as exc:
            results[index] = exc

    nursery.start_soon(run)
    await trio.testing.wait_all_tasks_blocked()


# spawning and asking -----------------------------------------------------------------------------
async def test_spawn_on_demand_one_actor_per_key(autojump_clock: MockClock, nursery: trio.Nursery) -> None:
    system, _, probe = await start(nursery)
    assert system.stats().live_total == 0
    assert await system.ask(KEY, "x", timeout=1) == ("a", 1)
    assert await system.ask(KEY, "x", timeout=1) == ("a", 2)
    assert await system.ask(OTHER, "x", timeout=1) == ("b", 1)
    stats = system.stats()
    assert stats.live_actors == {"probe": 2}
    assert stats.live_total == 2
    assert stats.messages_handled == 3
    assert probe.activations == 2


async def test_concurrent_first_asks_spawn_one_actor(
    autojump_clock: MockClock, nursery: trio.Nursery
) -> None:
    system, _, probe = await start(nursery)
    replies: list[Any] = []

    async def one() -> None:
        replies.append(await system.ask(KEY, "x", timeout=1))

    async with trio.open_nursery() as inner:
        for _ in range(5):
            inner.start_soon(one)
    assert sorted(replies) == [("a", n) for n in range(1, 6)]
    assert probe.activations == 1


async def test_not_running_and_unknown_kind(autojump_clock: MockClock, nursery: trio.Nursery) -> None:
    system = ActorSystem(MemoryStore(), {})
    with pytest.raises(SystemClosed):
        await system.ask(KEY, "x", timeout=1)
    await nursery.start(system.run)
    with pytest.raises(ValueError, match="no actor factory for kind 'probe'"):
        await system.ask(KEY, "x", timeout=1)


async def test_mailbox_full_at_exact_timeout(autojump_clock: MockClock, nursery: trio.Nursery) -> None:
    system, _, probe = await start(nursery, mailbox_size=2)
    results: list[Any] = []
    await ask_in_background(nursery, system, KEY, "block", results)
    assert probe.entered.is_set()
    await ask_in_background(nursery, system, KEY, "x", results)
    await ask_in_background(nursery, system, KEY, "x", results)
    assert system.stats().mailbox_depth_total == 2
    assert system.stats().mailbox_depth_max == 2
    begin = trio.current_time()
    with pytest.raises(MailboxFull) as caught:
        await system.ask(KEY, "x", timeout=3)
    assert trio.current_time() == begin + 3
    assert caught.value.key == KEY
    assert caught.value.retry_after_s >= 1
    probe.gate.set()
    await trio.testing.wait_all_tasks_blocked()
    assert results == [("a", 1), ("a", 2), ("a", 3)]


async def test_blocked_sender_gets_in_when_room_frees(
    autojump_clock: MockClock, nursery: trio.Nursery
) -> None:
    system, _, probe = await start(nursery, mailbox_size=1)
    results: list[Any] = []
    await ask_in_background(nursery, system, KEY, "block", results)
    await ask_in_background(nursery, system, KEY, "x", results)

    async def release() -> None:
        await trio.sleep(2)
        probe.gate.set()

    nursery.start_soon(release)
    begin = trio.current_time()
    assert await system.ask(KEY, "x", timeout=5) == ("a", 3)
    assert trio.current_time() == begin + 2


async def test_ask_timeout_at_exact_time(autojump_clock: MockClock, nursery: trio.Nursery) -> None:
    system, _, _ = await start(nursery)
    begin = trio.current_time()
    with pytest.raises(AskTimeout) as caught:
        await system.ask(KEY, "hang", timeout=2)
    assert trio.current_time() == begin + 2
    assert caught.value.key == KEY


async def test_receive_timeout_is_a_crash(autojump_clock: MockClock, nursery: trio.Nursery) -> None:
    system, _, _ = await start(nursery, receive_timeout=5)
    begin = trio.current_time()
    with pytest.raises(ActorCrashed) as caught:
        await system.ask(KEY, "hang", timeout=60)
    assert trio.current_time() == begin + 5
    assert isinstance(caught.value.__cause__, trio.TooSlowError)
    assert await system.ask(KEY, "x", timeout=1) == ("a", 1)


async def test_ask_many_replies_in_order(autojump_clock: MockClock, nursery: trio.Nursery) -> None:
    system, _, _ = await start(nursery)
    replies = await system.ask_many([(KEY, "x"), (OTHER, "x"), (KEY, "x")], timeout=1)
    assert replies == [("a", 1), ("b", 1), ("a", 2)]
    assert await system.ask_many([], timeout=1) == []


async def test_ask_many_errors(autojump_clock: MockClock, nursery: trio.Nursery) -> None:
    system, _, _ = await start(nursery)
    replies = await system.ask_many([(KEY, "x"), (OTHER, "boom")], timeout=1, return_exceptions=True)
    assert replies[0] == ("a", 1)
    assert isinstance(replies[1], ActorCrashed)
    with pytest.raises(ActorCrashed):
        await system.ask_many([(OTHER, "boom"), (KEY, "x")], timeout=1)
    # the healthy request still ran to completion before the error was raised
    assert await system.ask(KEY, "x", timeout=1) == ("a", 3)


async def test_ask_many_full_mailbox_and_timeout(autojump_clock: MockClock, nursery: trio.Nursery) -> None:
    system, _, probe = await start(nursery, mailbox_size=1)
    results: list[Any] = []
    await ask_in_background(nursery, system, KEY, "block", results)
    await ask_in_background(nursery, system, KEY, "x", results)
    begin = trio.current_time()
    replies = await system.ask_many(
        [(OTHER, "x"), (KEY, "x"), (OTHER, "hang")], timeout=4, return_exceptions=True
    )
    assert trio.current_time() == begin + 4
    assert replies[0] == ("b", 1)
    assert isinstance(replies[1], MailboxFull)
    assert isinstance(replies[2], AskTimeout)
    probe.gate.set()


# supervision -------------------------------------------------------------------------------------
async def test_crash_restarts_and_later_asks_work(
    autojump_clock: MockClock, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    system, store, probe = await start(nursery)
    assert await system.ask(KEY, "x", timeout=1) == ("a", 1)
    with caplog.at_level(logging.ERROR, logger="pulse.actors"):
        with pytest.raises(ActorCrashed) as caught:
            await system.ask(KEY, "boom", timeout=1)
    assert isinstance(caught.value.__cause__, RuntimeError)
    assert caught.value.key == KEY
    assert any(repr(KEY) in record.getMessage() for record in caplog.records)
    # the instance was discarded: the new one starts from the (empty) snapshot
    assert await system.ask(KEY, "x", timeout=1) == ("a", 1)
    stats = system.stats()
    assert (stats.crashes, stats.restarts, stats.stopped) == (1, 1, 0)
    assert probe.activations == 2
    assert store.loads == 2


async def test_restart_limit_stops_then_cools_down(autojump_clock: MockClock, nursery: trio.Nursery) -> None:
    system, _, probe = await start(nursery, max_restarts=1, restart_window=10)
    results: list[Any] = []
    await ask_in_background(nursery, system, KEY, "block", results)
    for msg in ("boom", "boom", "x"):
        await ask_in_background(nursery, system, KEY, msg, results)
    probe.gate.set()
    await trio.testing.wait_all_tasks_blocked()
    assert results[0] == ("a", 1)
    assert isinstance(results[1], ActorCrashed) and isinstance(results[1].__cause__, RuntimeError)
    assert isinstance(results[2], ActorCrashed)
    # queued behind the stop: failed, not lost silently
    assert isinstance(results[3], ActorCrashed) and "stopped" in str(results[3])
    stats = system.stats()
    assert (stats.crashes, stats.restarts, stats.stopped, stats.live_total) == (2, 1, 1, 0)
    stopped_at = trio.current_time()
    with pytest.raises(ActorCrashed, match="cooling down"):
        await system.ask(KEY, "x", timeout=1)
    await trio.sleep_until(stopped_at + 9.5)
    with pytest.raises(ActorCrashed):
        await system.ask(KEY, "x", timeout=1)
    await trio.sleep_until(stopped_at + 10)
    assert await system.ask(KEY, "x", timeout=1) == ("a", 1)
    assert system.stats().stopped == 0


async def test_crashes_outside_the_window_do_not_stop(
    autojump_clock: MockClock, nursery: trio.Nursery
) -> None:
    system, _, _ = await start(nursery, max_restarts=1, restart_window=10)
    for _ in range(3):
        with pytest.raises(ActorCrashed):
            await system.ask(KEY, "boom", timeout=1)
        await trio.sleep(10.5)
    assert system.stats().stopped == 0
    assert await system.ask(KEY, "x", timeout=1) == ("a", 1)


async def test_activation_failure_counts_as_crash(autojump_clock: MockClock, nursery: trio.Nursery) -> None:
    system, _, probe = await start(nursery, max_restarts=2)
    probe.fail_activations = 1
    assert await system.ask(KEY, "x", timeout=1) == ("a", 1)
    assert (system.stats().crashes, system.stats().restarts) == (1, 1)
    probe.fail_activations = 5
    with pytest.raises(ActorCrashed):
        await system.ask(OTHER, "x", timeout=1)
    assert system.stats().stopped == 1
    assert probe.activations == 2 + 3


# passivation and drain ---------------------------------------------------------------------------
async def test_passivation_after_exact_idle_ttl(autojump_clock: MockClock, nursery: trio.Nursery) -> None:
    system, store, probe = await start(nursery, idle_ttl=60)
    assert await system.ask(KEY, "x", timeout=1) == ("a", 1)
    assert await system.ask(KEY, "x", timeout=1) == ("a", 2)
    last = trio.current_time()
    await trio.sleep_until(last + 59.5)
    assert system.stats().live_total == 1 and store.saves == []
    await trio.sleep_until(last + 60)
    await trio.testing.wait_all_tasks_blocked()
    assert [(p, k, key) for p, k, key, _ in store.saves] == [("p1", "probe", "a")]
    assert store.save_times == [last + 60]
    stats = system.stats()
    assert (stats.live_total, stats.passivations) == (0, 1)
    # reactivation starts from the snapshot
    assert await system.ask(KEY, "x", timeout=1) == ("a", 3)
    assert probe.activations == 2


async def test_ask_racing_passivation_waits_for_the_snapshot(
    autojump_clock: MockClock, nursery: trio.Nursery
) -> None:
    system, store, probe = await start(nursery, idle_ttl=60)
    store.save_delay = 5
    await system.ask(KEY, "x", timeout=1)
    await system.ask(KEY, "x", timeout=1)
    last = trio.current_time()
    await trio.sleep_until(last + 61)  # the old activation is saving its snapshot until last + 65
    assert store.saves == [] and system.stats().live_total == 0
    # the new activation waits for that snapshot, so it continues from 2, not from scratch
    assert await system.ask(KEY, "x", timeout=10) == ("a", 3)
    assert trio.current_time() == last + 65
    assert probe.activations == 2


async def test_sender_blocked_when_the_mailbox_closes_is_rerouted(
    autojump_clock: MockClock, nursery: trio.Nursery
) -> None:
    system, _, probe = await start(nursery, mailbox_size=1)
    results: list[Any] = []
    await ask_in_background(nursery, system, KEY, "block", results)
    await ask_in_background(nursery, system, KEY, "x", results)  # queued
    await ask_in_background(nursery, system, KEY, "x", results)  # blocked: the mailbox is full
    async with trio.open_nursery() as inner:
        inner.start_soon(partial(system.drain, deadline=30))
        await trio.testing.wait_all_tasks_blocked()
        # the blocked sender was re-routed and refused; the queued message is still handled
        assert isinstance(results[2], SystemClosed)
        probe.gate.set()
    await trio.testing.wait_all_tasks_blocked()
    assert results[:2] == [("a", 1), ("a", 2)]


async def test_idle_timer_restarts_with_each_message(
    autojump_clock: MockClock, nursery: trio.Nursery
) -> None:
    system, store, _ = await start(nursery, idle_ttl=60)
    begin = trio.current_time()
    await system.ask(KEY, "x", timeout=1)
    await trio.sleep_until(begin + 50)
    await system.ask(KEY, "x", timeout=1)
    await trio.sleep_until(begin + 109)
    assert store.saves == []
    await trio.sleep_until(begin + 111)
    assert store.save_times == [begin + 110]


async def test_drain_handles_queued_messages_and_saves_snapshots(
    autojump_clock: MockClock, nursery: trio.Nursery
) -> None:
    system, store, probe = await start(nursery)
    await system.ask(OTHER, "x", timeout=1)
    results: list[Any] = []
    await ask_in_background(nursery, system, KEY, "block", results)
    await ask_in_background(nursery, system, KEY, "x", results)
    await ask_in_background(nursery, system, KEY, "x", results)

    async def release() -> None:
        await trio.sleep(1)
        probe.gate.set()

    nursery.start_soon(release)
    begin = trio.current_time()
    await system.drain(deadline=30)
    assert trio.current_time() == begin + 1
    await trio.testing.wait_all_tasks_blocked()  # let the askers pick up their replies
    assert results == [("a", 1), ("a", 2), ("a", 3)]
    saved = {key: msgspec.msgpack.decode(snap.state) for _, _, key, snap in store.saves}
    assert saved == {"a": 3, "b": 1}
    assert system.stats().live_total == 0
    assert system.stats().passivations == 0
    with pytest.raises(SystemClosed):
        await system.ask(KEY, "x", timeout=1)


async def test_drain_is_bounded_by_its_deadline(autojump_clock: MockClock, nursery: trio.Nursery) -> None:
    system, _, _ = await start(nursery)
    results: list[Any] = []
    await ask_in_background(nursery, system, KEY, "hang", results)
    begin = trio.current_time()
    await system.drain(deadline=7)
    assert trio.current_time() == begin + 7


async def test_wait_for_room_times_out_then_succeeds_when_the_actor_catches_up(
    autojump_clock: MockClock, nursery: trio.Nursery
) -> None:
    system, _, probe = await start(nursery, mailbox_size=1)
    results: list[Any] = []
    assert await system.wait_for_room([KEY], timeout=1)  # no live actor: nothing to wait for
    await ask_in_background(nursery, system, KEY, "block", results)
    await ask_in_background(nursery, system, KEY, "x", results)  # fills the one-slot mailbox
    begin = trio.current_time()
    assert not await system.wait_for_room([OTHER, KEY], timeout=2)
    assert trio.current_time() == begin + 2

    async def release() -> None:
        await trio.sleep(1)
        probe.gate.set()

    nursery.start_soon(release)
    begin = trio.current_time()
    assert await system.wait_for_room([KEY], timeout=5)
    assert trio.current_time() == begin + 1
