"""SSE resumes of one project read the stored log at most REPLAYS_PER_PROJECT at a time; the rest
wait their turn, and one that waits too long ends its stream (the browser reconnects, nothing is
skipped). Virtual time: the wait's deadline is exact. Each resume is its own task, as each stream is."""

from __future__ import annotations

import trio
import trio.testing

from server.sse import REPLAY_SLOT_WAIT_S, REPLAYS_PER_PROJECT, take_replay_slot


async def test_a_resume_waits_for_a_free_slot_and_gives_up_at_its_deadline(autojump_clock: trio.testing.MockClock) -> None:
    slots: dict[str, trio.CapacityLimiter] = {}
    done = trio.Event()
    outcomes: dict[str, list[trio.CapacityLimiter | None]] = {"held": [], "late": [], "next": [], "other": []}

    async def resume(project: str, into: str, hold: bool) -> None:
        limiter = await take_replay_slot(slots, project)
        outcomes[into].append(limiter)
        if limiter is not None:
            if hold:
                await done.wait()
            limiter.release()

    async with trio.open_nursery() as nursery:
        for _ in range(REPLAYS_PER_PROJECT):
            nursery.start_soon(resume, "p1", "held", True)
        await trio.testing.wait_all_tasks_blocked()
        assert len(outcomes["held"]) == REPLAYS_PER_PROJECT and None not in outcomes["held"]

        await resume("p2", "other", False)  # another project has slots of its own
        assert outcomes["other"][0] is not None

        started = trio.current_time()
        await resume("p1", "late", False)  # every slot busy for the whole wait
        assert outcomes["late"] == [None]
        assert trio.current_time() - started == REPLAY_SLOT_WAIT_S

        nursery.start_soon(resume, "p1", "next", False)
        await trio.testing.wait_all_tasks_blocked()
        assert outcomes["next"] == []  # waiting its turn
        done.set()  # the replays in progress finish
    assert outcomes["next"] == [slots["p1"]]
