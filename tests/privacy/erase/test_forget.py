"""ActorSystem.forget: an erased key's actor stops without saving its snapshot, even while it was
already retiring (and would have saved one), and the next ask starts from what the store holds."""

from __future__ import annotations

import trio
import trio.testing

from tests.actors.test_runtime import KEY, OTHER, ask_in_background, start


async def test_forget_stops_the_actor_without_a_snapshot() -> None:
    async with trio.open_nursery() as nursery:
        system, store, _ = await start(nursery)
        assert await system.ask(KEY, "x", timeout=5) == ("a", 1)
        assert await system.ask(OTHER, "x", timeout=5) == ("b", 1)
        assert await system.forget(KEY, timeout=5)
        assert not await system.forget(KEY, timeout=5)  # nothing left to stop
        assert store.snapshots == {}
        assert await system.ask(KEY, "x", timeout=5) == ("a", 1)  # afresh: nothing was saved
        assert await system.ask(OTHER, "x", timeout=5) == ("b", 2)  # the other key untouched
        nursery.cancel_scope.cancel()


async def test_forget_reaches_an_actor_that_was_already_retiring() -> None:
    async with trio.open_nursery() as nursery:
        system, store, probe = await start(nursery)
        results: list[object] = []
        await ask_in_background(nursery, system, KEY, "block", results)
        await probe.entered.wait()
        system.retire_where(lambda key: key == KEY, save=True)  # it would save once the message is done
        forgetting = trio.Event()

        async def forget() -> None:
            assert await system.forget(KEY, timeout=5)
            forgetting.set()

        nursery.start_soon(forget)
        await trio.testing.wait_all_tasks_blocked()
        assert not forgetting.is_set()  # it waits for the activation to finish
        probe.gate.set()
        await forgetting.wait()
        assert results == [("a", 1)] and store.snapshots == {}
        nursery.cancel_scope.cancel()
