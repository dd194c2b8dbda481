"""Trigger evaluation in the SessionActor: against the state after each event, once per session
(or per cooldown), across activation replays and restarts, A/B control exposures, conversions."""

from __future__ import annotations

from typing import Any

from msgspec import UNSET

from actors.automation.abtest import assign
from actors.automation.definition import ABTest, TriggerDef, Variant, parse_trigger
from actors.automation.engine import CONVERTED, ELIGIBLE, EXPOSED, FIRED
from actors.automation.index import TriggerIndex
from actors.projection import ApplyEvents
from actors.session import SessionActor, SessionSummary
from protocol.record import Event
from storage.trigger_records import SessionMark
from tests.actors.memory_store import MemoryStore, make_event

PROJECT = "p1"


class TriggerMemoryStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.marks: list[SessionMark] = []

    async def trigger_session_marks(self, project: str, session_id: str) -> list[SessionMark]:
        return [m for m in self.marks if m.project == project and m.session_id == session_id]


def definition(trigger_id: str = "t1", **changes: Any) -> TriggerDef:
    body: dict[str, Any] = {
        "name": "exit offer",
        "conditions": {"eventType": "exit_intent",
                       "filters": [{"field": "timeOnPage", "operator": "greater_than", "value": 30000}]},
        "actions": [{"type": "show_exit_offer", "parameters": {"offer": "beta_access", "urgency": "high"}}],
    }
    body.update(changes)
    return parse_trigger(body, trigger_id, 0)


def index_of(*definitions: TriggerDef) -> TriggerIndex:
    index = TriggerIndex()
    for d in definitions:
        index.put(d, PROJECT)
    return index


async def actor_with(index: TriggerIndex, store: MemoryStore | None = None, session: str = "s1") -> SessionActor:
    actor = SessionActor(("session", PROJECT, session), store or TriggerMemoryStore(), triggers=index)
    await actor.activate()
    return actor


async def send(actor: SessionActor, store: MemoryStore, *events: Event) -> SessionSummary:
    store.add(*events)
    reply = await actor.receive(ApplyEvents(events=list(events)))
    assert isinstance(reply, SessionSummary)
    return reply


def page(ts: int, url: str = "/pricing", session: str = "s1") -> Event:
    return make_event("page_view", ts=ts, session=session, payload={"eventData": {"url": url}})


def exit_intent(ts: int, session: str = "s1", **data: Any) -> Event:
    return make_event("exit_intent", ts=ts, session=session, payload={"eventData": data})


async def test_fires_against_the_live_time_on_page_after_the_event() -> None:
    store = TriggerMemoryStore()
    actor = await actor_with(index_of(definition()), store)
    await send(actor, store, page(1_000))
    early = await send(actor, store, exit_intent(20_000))  # 19 s on the page: no
    assert early.fired is UNSET and [a.kind for a in early.trigger_activity or ()] == [ELIGIBLE]
    late = await send(actor, store, exit_intent(40_000))  # 39 s: yes
    assert late.fired is not None and len(late.fired) == 1
    fired = late.fired[0]
    assert fired.trigger_id == "t1" and fired.executed and fired.urgency == "high"
    assert fired.personalization["offer"] == "beta_access"
    assert [(r.field, r.actual, r.passed) for r in fired.reasons] == [("timeOnPage", 39_000, True)]
    assert [a.kind for a in late.trigger_activity or ()] == [EXPOSED, FIRED]
    again = await send(actor, store, exit_intent(50_000))  # once per session
    assert again.fired is UNSET and again.trigger_activity is UNSET


async def test_a_reported_time_on_page_counts_over_the_live_one() -> None:
    store = TriggerMemoryStore()
    actor = await actor_with(index_of(definition()), store)
    reply = await send(actor, store, exit_intent(1_000, timeOnPage=45_000))
    assert reply.fired and reply.fired[0].reasons[0].actual == 45_000


async def test_cooldown_by_event_time() -> None:
    store = TriggerMemoryStore()
    actor = await actor_with(index_of(definition(cooldownSeconds=10)), store)
    times = [100_000, 105_000, 110_000, 111_000, 121_000]
    fired = [bool((await send(actor, store, exit_intent(t, timeOnPage=40_000))).fired) for t in times]
    assert fired == [True, False, True, False, True]
    assert actor.state.triggers["t1"].fires == 3


async def test_schedule_and_paused_triggers_fire_nothing() -> None:
    store = TriggerMemoryStore()
    scheduled = definition("t1", schedule={"startDate": "2025-01-01T00:00:00Z", "endDate": "2025-01-02T00:00:00Z"})
    paused = definition("t2", schedule={"active": False})
    actor = await actor_with(index_of(scheduled, paused), store)
    jan_1_noon = 1735732800000
    before = await send(actor, store, exit_intent(jan_1_noon - 86_400_000, timeOnPage=40_000))
    assert before.fired is UNSET and before.trigger_activity is UNSET  # not even eligible outside its schedule
    inside = await send(actor, store, exit_intent(jan_1_noon, timeOnPage=40_000))
    assert [f.trigger_id for f in inside.fired or ()] == ["t1"]


async def test_the_batch_that_activates_the_actor_fires_once() -> None:
    """The ingest path commits before it asks: the activation replay applies the batch, and the
    ApplyEvents that follows must still report (once) what its events fired."""
    store = TriggerMemoryStore()
    events = store.add(page(1_000), exit_intent(40_000), exit_intent(50_000))
    actor = await actor_with(index_of(definition()), store)  # replays the 3 events
    reply = await actor.receive(ApplyEvents(events=events))
    assert [f.seq for f in reply.fired or ()] == [events[1].seq]
    assert actor.state.triggers["t1"].fired_at == 40_000


async def test_replayed_history_is_not_fired_again_after_a_crash() -> None:
    """No snapshot (a crash): the replay re-evaluates old events, but what the Store recorded wins
    and nothing old is reported; a new event does not fire a trigger that already fired."""
    store = TriggerMemoryStore()
    old = store.add(page(1_000), exit_intent(40_000))
    store.marks = [SessionMark(PROJECT, "t1", "s1", eligible_ms=40_000, exposed_ms=40_000, fired_ms=40_000, fires=1,
                               last_fired_ms=40_000)]
    actor = await actor_with(index_of(definition()), store)
    assert actor.state.triggers["t1"].fired_at == 40_000
    new = exit_intent(60_000)
    store.add(new)
    reply = await actor.receive(ApplyEvents(events=[new]))
    assert reply.fired is UNSET and reply.trigger_activity is UNSET
    assert all(e.seq < new.seq for e in old)


async def test_control_is_exposed_and_fires_nothing_and_conversions_are_marked() -> None:
    test = ABTest(test_id="abt_x", variants=[Variant(name="control", actions=[]),
                                              Variant(name="offer", actions=definition().actions)],
                  traffic_split=[50.0, 50.0], created=0)
    trigger = definition()
    trigger.ab_test = test
    index = index_of(trigger)
    sessions = {v: next(f"s{i}" for i in range(100) if assign("abt_x", f"s{i}", ["control", "offer"], [50.0, 50.0]) == v)
                for v in ("control", "offer")}
    for variant, session in sessions.items():
        store = TriggerMemoryStore()
        actor = await actor_with(index, store, session)
        reply = await send(actor, store, exit_intent(1_000, session=session, timeOnPage=40_000))
        assert reply.fired is not None and reply.fired[0].variant == variant
        assert reply.fired[0].executed is (variant == "offer")
        assert (FIRED in [a.kind for a in reply.trigger_activity or ()]) is (variant == "offer")
        second = await send(actor, store, exit_intent(2_000, session=session, timeOnPage=40_000))
        assert second.fired is UNSET  # the control's exposure is recorded once too
        bought = await send(actor, store, make_event("purchase", ts=3_000, session=session))
        assert [(a.kind, a.variant) for a in bought.trigger_activity or ()] == [(CONVERTED, variant)]
