"""ActorSystem with folding actors (``receive_all``): the mailbox is drained and folded at once, a
parked actor folds an ask in the asker's task, and the idle TTL is kept by one sweeper, not by a
cancel scope per wait. All timing runs on the autojump clock, at exact virtual times."""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

import msgspec
import pytest
import trio
import trio.testing
from trio.testing import MockClock

from actors.projection import ApplyEvents, GetView
from actors.runtime import HOT_WINDOW_S, ActorCrashed, ActorKey, ActorStore, ActorSystem, SystemClosed
from actors.session import SessionActor, SessionSummary, SessionView
from storage.base import Snapshot
from tests.actors.memory_store import MemoryStore, make_event

KEY: ActorKey = ("fold", "p1", "a")
OTHER: ActorKey = ("fold", "p1", "b")


class Controls:
    """Shared by every FoldActor of a test."""

    def __init__(self) -> None:
        self.gate: trio.Event | None = None  # activate() waits for it when set
        self.activations = 0
        self.folds: list[list[Any]] = []  # every receive_all call's messages
        self.tasks: list[trio.lowlevel.Task] = []  # the task each fold ran in


class FoldActor:
    """Sums the numbers it is sent; "boom" raises. Replies: (key id, total after the message)."""

    def __init__(self, key: ActorKey, store: ActorStore, controls: Controls) -> None:
        self.key = key
        self.store = store
        self.controls = controls
        self.total = 0

    async def activate(self) -> None:
        self.controls.activations += 1
        if self.controls.gate is not None:
            await self.controls.gate.wait()
        snap = await self.store.load_snapshot(self.key[1], self.key[0], self.key[2])
        if snap is not None:
            self.total = msgspec.msgpack.decode(snap.state, type=int)

    async def receive(self, msg: Any) -> Any:
        raise AssertionError("a folding actor is never sent receive()")

    def receive_all(self, msgs: list[Any]) -> list[Any]:
        self.controls.folds.append(list(msgs))
        self.controls.tasks.append(trio.lowlevel.current_task())
        replies = []
        for msg in msgs:
            if msg == "boom":
                raise RuntimeError("boom")
            self.total += msg
            replies.append((self.key[2], self.total))
        return replies

    def snapshot(self) -> Snapshot:
        return Snapshot(state=msgspec.msgpack.encode(self.total), upto_seq=0)


async def start(nursery: trio.Nursery, **options: Any) -> tuple[ActorSystem, MemoryStore, Controls]:
    store = MemoryStore()
    controls = Controls()
    system = ActorSystem(store, {"fold": lambda key, st: FoldActor(key, st, controls)}, **options)
    await nursery.start(system.run)
    return system, store, controls


async def ask_later(nursery: trio.Nursery, system: ActorSystem, key: ActorKey, msg: Any, results: list[Any]) -> None:
    """Start an ask; its reply (or error) lands at the next index of ``results``."""
    index = len(results)
    results.append(None)

    async def run() -> None:
        try:
            results[index] = await system.ask(key, msg, timeout=1000)
        except Exception as exc:
            results[index] = exc

    nursery.start_soon(run)
    await trio.testing.wait_all_tasks_blocked()


# draining the mailbox ----------------------------------------------------------------------------
async def test_messages_queued_while_busy_are_folded_in_one_call(
    autojump_clock: MockClock, nursery: trio.Nursery
) -> None:
    system, _, controls = await start(nursery)
    controls.gate = trio.Event()
    results: list[Any] = []
    for n in (1, 2, 3):  # the first one spawns the actor, which waits in activate()
        await ask_later(nursery, system, KEY, n, results)
    assert system.stats().mailbox_depth_max == 3 and controls.folds == []
    controls.gate.set()
    await trio.testing.wait_all_tasks_blocked()
    assert controls.folds == [[1, 2, 3]]  # one wake-up, one fold
    assert results == [("a", 1), ("a", 3), ("a", 6)]  # and every ask its own reply
    assert system.stats().messages_handled == 3


async def test_a_crash_in_a_drained_fold_fails_every_message_of_it_and_restarts(
    autojump_clock: MockClock, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    system, _, controls = await start(nursery)
    controls.gate = trio.Event()
    results: list[Any] = []
    for msg in (1, "boom", 2):
        await ask_later(nursery, system, KEY, msg, results)
    with caplog.at_level(logging.ERROR, logger="pulse.actors"):
        controls.gate.set()
        await trio.testing.wait_all_tasks_blocked()
    assert all(isinstance(r, ActorCrashed) and isinstance(r.__cause__, RuntimeError) for r in results)
    assert (system.stats().crashes, system.stats().restarts) == (1, 1)
    controls.gate = None
    assert await system.ask(KEY, 5, timeout=1) == ("a", 5)  # a fresh activation
    assert controls.activations == 2


# folding in the asker's task ---------------------------------------------------------------------
async def test_a_parked_actor_folds_an_ask_in_the_askers_task(
    autojump_clock: MockClock, nursery: trio.Nursery
) -> None:
    system, _, controls = await start(nursery)
    assert await system.ask(KEY, 1, timeout=1) == ("a", 1)  # activation: through the mailbox
    await trio.sleep(1)  # the actor task parks on its empty mailbox, and the actor cools down
    me = trio.lowlevel.current_task()
    assert await system.ask_many([(KEY, 2), (KEY, 3)], timeout=1) == [("a", 3), ("a", 6)]
    assert controls.folds == [[1], [2], [3]]
    # 2 was folded right here; 3 came while the actor was hot (it had just folded): its mailbox
    assert [task is me for task in controls.tasks] == [False, True, False]
    assert system.stats().messages_handled == 3
    await trio.sleep(HOT_WINDOW_S)
    assert await system.ask(KEY, 4, timeout=1) == ("a", 10)
    assert controls.tasks[-1] is me


async def test_a_stream_of_asks_to_a_hot_actor_is_folded_together(
    autojump_clock: MockClock, nursery: trio.Nursery
) -> None:
    system, _, controls = await start(nursery)
    assert await system.ask(KEY, 1, timeout=1) == ("a", 1)
    await trio.sleep(1)
    results: list[Any] = []
    async with trio.open_nursery() as inner:  # a burst: many askers in one scheduling round
        for n in (1, 1, 1, 1):
            inner.start_soon(partial(ask_and_keep, system, KEY, n, results))
    assert sorted(results) == [("a", 2), ("a", 3), ("a", 4), ("a", 5)]
    assert len(controls.folds) == 3 and sorted(map(len, controls.folds[1:])) == [1, 3]


async def ask_and_keep(system: ActorSystem, key: ActorKey, msg: Any, results: list[Any]) -> None:
    results.append(await system.ask(key, msg, timeout=1))


async def test_a_crash_in_the_askers_task_is_the_actors_crash(
    autojump_clock: MockClock, nursery: trio.Nursery
) -> None:
    system, _, controls = await start(nursery, max_restarts=1, restart_window=10)
    assert await system.ask(KEY, 1, timeout=1) == ("a", 1)
    await trio.sleep(1)
    with pytest.raises(ActorCrashed) as caught:
        await system.ask(KEY, "boom", timeout=1)
    assert controls.tasks[-1] is trio.lowlevel.current_task()
    assert isinstance(caught.value.__cause__, RuntimeError)
    assert await system.ask(KEY, 2, timeout=1) == ("a", 2)  # restarted from the (empty) snapshot
    assert controls.activations == 2
    await trio.sleep(1)
    with pytest.raises(ActorCrashed):
        await system.ask(KEY, "boom", timeout=1)  # the second crash in the window stops it
    with pytest.raises(ActorCrashed, match="cooling down"):
        await system.ask(KEY, 1, timeout=1)


async def test_no_fold_in_the_askers_task_while_draining(autojump_clock: MockClock, nursery: trio.Nursery) -> None:
    system, store, _ = await start(nursery)
    assert await system.ask(KEY, 4, timeout=1) == ("a", 4)
    await trio.testing.wait_all_tasks_blocked()
    await system.drain(deadline=5)
    with pytest.raises(SystemClosed):
        await system.ask(KEY, 1, timeout=1)
    assert [msgspec.msgpack.decode(snap.state) for *_, snap in store.saves] == [4]


# idle TTL: one sweeper -----------------------------------------------------------------------------
async def test_folds_in_the_askers_task_restart_the_idle_timer(
    autojump_clock: MockClock, nursery: trio.Nursery
) -> None:
    system, store, _ = await start(nursery, idle_ttl=60)
    begin = trio.current_time()
    await system.ask(KEY, 1, timeout=1)
    await trio.sleep_until(begin + 50)
    await system.ask(KEY, 1, timeout=1)  # folded right here: the actor task never wakes
    await trio.sleep_until(begin + 109)
    assert store.saves == [] and system.stats().live_total == 1
    await trio.sleep_until(begin + 111)
    assert store.save_times == [begin + 110]
    assert system.stats().passivations == 1


async def test_every_actor_passivates_at_its_own_time(autojump_clock: MockClock, nursery: trio.Nursery) -> None:
    system, store, _ = await start(nursery, idle_ttl=60)
    begin = trio.current_time()
    await system.ask(KEY, 1, timeout=1)
    await trio.sleep_until(begin + 25)
    await system.ask(OTHER, 1, timeout=1)
    await trio.sleep_until(begin + 30)
    await system.ask(KEY, 1, timeout=1)
    await trio.sleep_until(begin + 200)
    assert [(key, t - begin) for (_, _, key, _), t in zip(store.saves, store.save_times, strict=True)] == [
        ("b", 85),
        ("a", 90),
    ]
    assert system.stats().passivations == 2


async def test_an_actor_busy_past_the_ttl_is_not_passivated(autojump_clock: MockClock, nursery: trio.Nursery) -> None:
    """The TTL counts from when the actor parks on its empty mailbox, not from its last message."""
    store = MemoryStore()
    gate = trio.Event()

    class Slow(FoldActor):
        async def receive(self, msg: Any) -> Any:
            await gate.wait()
            return msg

        receive_all = None  # type: ignore[assignment]  # the async path: the actor task waits in it

    system = ActorSystem(store, {"fold": lambda key, st: Slow(key, st, Controls())}, idle_ttl=10, receive_timeout=100)
    await nursery.start(system.run)
    begin = trio.current_time()
    results: list[Any] = []
    await ask_later(nursery, system, KEY, "x", results)
    await trio.sleep_until(begin + 40)
    assert system.stats().live_total == 1 and store.saves == []
    gate.set()
    await trio.sleep_until(begin + 49)
    assert results == ["x"] and store.saves == []
    await trio.sleep_until(begin + 51)
    assert store.save_times == [begin + 50]


# projection actors: one fold per drained run -------------------------------------------------------
async def test_a_drained_run_of_batches_is_applied_once_and_each_ask_gets_its_steps(
    autojump_clock: MockClock, nursery: trio.Nursery
) -> None:
    gate = trio.Event()

    class GatedSession(SessionActor):
        async def activate(self) -> None:
            await gate.wait()
            await super().activate()

    system = ActorSystem(MemoryStore(), {"session": GatedSession})
    await nursery.start(system.run)
    key: ActorKey = ("session", "p1", "s1")
    first = [make_event("page_view", ts=1_000, payload={"eventData": {"url": "/a"}})]
    second = [make_event("click", ts=2_000), make_event("scroll", ts=2_500, payload={"scrollDepth": 0.5})]
    for seq, event in enumerate(first + second, start=1):
        event.seq = seq
    replies: dict[str, Any] = {}

    async def ask(name: str, msg: Any) -> None:
        replies[name] = await system.ask(key, msg, timeout=10)

    async with trio.open_nursery() as inner:  # all three wait in the mailbox of the activating actor
        for name, msg in (("one", ApplyEvents(first, steps=True)), ("two", ApplyEvents(second, steps=True)),
                          ("view", GetView())):  # fmt: skip
            inner.start_soon(ask, name, msg)
            await trio.testing.wait_all_tasks_blocked()
        assert system.stats().mailbox_depth_max == 3
        gate.set()
    one, two, view = replies["one"], replies["two"], replies["view"]
    assert isinstance(one, SessionSummary) and isinstance(two, SessionSummary) and isinstance(view, SessionView)
    assert one.event_count == two.event_count == view.event_count == 3  # the summary after the run
    assert one.steps is not None and set(one.steps) == {1}  # the per-event insights of its own events
    assert two.steps is not None and set(two.steps) == {2, 3}
    assert one.insights == two.insights and one.insights is not None
    assert (view.current_page, view.scroll_depth) == ("/a", 0.5)


async def test_receive_all_keeps_message_order_around_views() -> None:
    actor = SessionActor(("session", "p1", "s1"), MemoryStore())
    await actor.activate()
    events = [make_event("click", ts=1_000 + i) for i in range(4)]
    for seq, event in enumerate(events, start=1):
        event.seq = seq
    replies = actor.receive_all([
        ApplyEvents(events=events[:1]), ApplyEvents(events=events[1:2]), GetView(),
        ApplyEvents(events=events[2:]), ApplyEvents(events=events[:1]),  # a re-delivery: skipped
    ])  # fmt: skip
    assert [r.event_count for r in replies] == [2, 2, 2, 4, 4]
    assert replies[0] is replies[1]  # one summary for a run without per-event steps
    with pytest.raises(TypeError, match="cannot handle a 'str' message"):
        actor.receive_all(["nonsense"])


async def test_actors_retired_early_do_not_pile_up_in_the_sweepers_heap(
    autojump_clock: MockClock, nursery: trio.Nursery
) -> None:
    store = MemoryStore()
    system = ActorSystem(store, {"session": SessionActor}, idle_ttl=300)
    await nursery.start(system.run)
    for i in range(3000):  # reads of sessions nobody has seen: each actor retires at once
        view = await system.ask(("session", "p1", f"nobody{i}"), GetView(), timeout=1)
        assert view.event_count == 0
    assert system.stats().live_total == 0
    assert len(system._due) <= 1024 + 1
