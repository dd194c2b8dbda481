"""The per-node trigger index: compiled by event type, changes on this node at once, other nodes'
changes by the periodic reload (virtual time)."""

from __future__ import annotations

import msgspec
import trio
from trio.testing import MockClock

from actors.automation.definition import parse_trigger
from actors.automation.index import RELOAD_S, TriggerIndex
from storage.base import StoreUnavailable
from storage.trigger_records import TriggerRow


def row(trigger_id: str, event_type: str, *, project: str = "p1", active: bool = True) -> TriggerRow:
    body = {"name": trigger_id, "conditions": {"eventType": event_type}, "actions": [{"type": "a"}],
            "schedule": {"active": active}}
    definition = parse_trigger(body, trigger_id, 1)
    return TriggerRow(project, trigger_id, definition.status, event_type.lower(), 1, 1,
                      msgspec.json.encode(definition).decode())


class RowStore:
    """What another node leaves in the shared Store."""

    def __init__(self) -> None:
        self.rows: list[TriggerRow] = []
        self.failing = False

    async def list_triggers(self, project: str | None) -> list[TriggerRow]:
        if self.failing:
            raise StoreUnavailable("down")
        return list(self.rows)


def test_index_by_project_and_event_type() -> None:
    index = TriggerIndex()
    index.replace_all([row("t1", "Exit_Intent"), row("t2", "click"), row("t3", "click", active=False),
                       row("t4", "click", project="p2")])
    assert [t.trigger_id for t in index.for_event("p1", "exit_intent")] == ["t1"]
    assert [t.trigger_id for t in index.for_event("p1", "CLICK")] == ["t2"]  # a paused trigger is not evaluated
    assert index.get("p1", "t3") is not None and index.count("p1") == 3
    assert [t.trigger_id for t in index.for_event("p2", "click")] == ["t4"]
    assert index.for_event("p3", "click") == []
    index.remove("p1", "t2")
    assert index.for_event("p1", "click") == []


async def test_reload_picks_up_other_nodes_changes(autojump_clock: MockClock) -> None:
    store = RowStore()
    store.rows = [row("t1", "click")]
    index = TriggerIndex()
    async with trio.open_nursery() as nursery:
        await nursery.start(index.run, store)
        assert [t.trigger_id for t in index.for_event("p1", "click")] == ["t1"]  # loaded before start returns
        store.rows = [row("t2", "click")]  # created and t1 deleted elsewhere
        await trio.sleep(RELOAD_S + 0.1)
        assert [t.trigger_id for t in index.for_event("p1", "click")] == ["t2"]
        compiled = index.get("p1", "t2")
        await trio.sleep(RELOAD_S)
        assert index.get("p1", "t2") is compiled  # nothing changed: nothing recompiled
        store.failing = True  # a failed reload keeps what it had, and is counted
        await trio.sleep(RELOAD_S)
        assert [t.trigger_id for t in index.for_event("p1", "click")] == ["t2"] and index.reload_failures == 1
        store.failing, store.rows = False, []
        await trio.sleep(RELOAD_S)
        assert not index.has_project("p1")
        nursery.cancel_scope.cancel()
