"""The Store's trigger methods on every backend (SQLite, PostgreSQL): definitions, merged session
marks, executions, the performance counts, and that they survive a restart."""

from __future__ import annotations

from storage.base import Store
from storage.trigger_records import Execution, SessionMark, TriggerRow
from tests.storage.conftest import StoreOpener


def trigger(trigger_id: str, project: str = "p1", created: int = 1) -> TriggerRow:
    return TriggerRow(project, trigger_id, "active", "exit_intent", created, created, '{"x": 1}')


def execution(eid: str, trigger_id: str = "t1", at: int = 1, session: str = "s1", variant: str = "") -> Execution:
    return Execution("p1", eid, trigger_id, session, None, variant, at, "event", True, '{"reasons": []}')


async def test_definitions_round_trip(store: Store) -> None:
    await store.save_trigger(trigger("t2", created=2))
    await store.save_trigger(trigger("t1", created=1))
    await store.save_trigger(trigger("t9", project="p2"))
    assert [r.trigger_id for r in await store.list_triggers("p1")] == ["t1", "t2"]
    assert {r.trigger_id for r in await store.list_triggers(None)} == {"t1", "t2", "t9"}
    changed = TriggerRow("p1", "t1", "paused", "click", 1, 5, '{"y": 2}')
    await store.save_trigger(changed)
    assert await store.get_trigger("p1", "t1") == changed
    assert await store.get_trigger("p2", "t1") is None  # another project's
    await store.record_trigger_activity([SessionMark("p1", "t1", "s1", eligible_ms=1)], [execution("e1")])
    assert await store.delete_trigger("p1", "t1") is True
    assert await store.delete_trigger("p1", "t1") is False
    assert await store.trigger_executions("p1", "t1", 10) == []  # what was recorded about it goes too
    assert await store.trigger_session_marks("p1", "s1") == []


async def test_marks_merge_and_counts(store: Store) -> None:
    await store.record_trigger_activity(
        [SessionMark("p1", "t1", "s1", eligible_ms=10),
         SessionMark("p1", "t1", "s2", "b", eligible_ms=10, exposed_ms=10, fired_ms=10, fires=1, last_fired_ms=10,
                     engagement=0.5),
         SessionMark("p1", "t1", "s3", "a", eligible_ms=10, exposed_ms=10)],
        [execution("e1", session="s2", variant="b")],
    )
    # later: s1 fires (first time kept, fires add up), s2 fires again and converts, s3 converts
    await store.record_trigger_activity(
        [SessionMark("p1", "t1", "s1", "a", exposed_ms=20, fired_ms=20, fires=1, last_fired_ms=20, engagement=0.7),
         SessionMark("p1", "t1", "s2", "", fired_ms=30, fires=1, last_fired_ms=30, converted_ms=40, engagement=0.9),
         SessionMark("p1", "t1", "s3", converted_ms=50)],
        [execution("e2", at=2, session="s1", variant="a"), execution("e1", at=99)],  # e1 again: ignored
    )
    (s2,) = await store.trigger_session_marks("p1", "s2")
    assert (s2.variant, s2.fired_ms, s2.fires, s2.last_fired_ms, s2.converted_ms, s2.engagement) == ("b", 10, 2, 30, 40, 0.5)
    counts = {c.variant: c for c in await store.trigger_counts("p1", "t1")}
    assert (counts["a"].eligible, counts["a"].exposed, counts["a"].fired) == (2, 2, 1)
    assert (counts["a"].exposed_converted, counts["a"].fired_converted) == (1, 0)
    assert counts["a"].engagement_mean == 0.7 and counts["a"].engagement_samples == 1
    assert (counts["b"].fired, counts["b"].fired_converted, counts["b"].engagement_mean) == (1, 1, 0.5)
    recent = await store.trigger_executions("p1", "t1", 10)
    assert [e.execution_id for e in recent] == ["e2", "e1"] and recent[1].executed_ms == 1
    assert [e.execution_id for e in await store.trigger_executions("p1", "t1", 1)] == ["e2"]


async def test_survives_a_restart(open_store: StoreOpener) -> None:
    async with open_store() as first:
        await first.save_trigger(trigger("t1"))
        await first.record_trigger_activity([SessionMark("p1", "t1", "s1", fired_ms=5, fires=1)], [execution("e1")])
    async with open_store() as second:
        assert [r.trigger_id for r in await second.list_triggers("p1")] == ["t1"]
        assert [m.fired_ms for m in await second.trigger_session_marks("p1", "s1")] == [5]
        assert [e.execution_id for e in await second.trigger_executions("p1", "t1", 5)] == ["e1"]
