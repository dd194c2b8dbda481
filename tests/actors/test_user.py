"""UserActor: sessions and devices of one user, device identification, bounds, replay."""

from __future__ import annotations

from typing import Any

import msgspec
import trio
from trio.testing import MockClock

from actors.projection import ApplyEvents, GetView
from actors.runtime import ActorKey, ActorSystem
from actors.session import session_factory
from actors.user import DEVICES_KEPT, SESSIONS_KEPT, UserActor, UserSummary, UserView, user_factory
from protocol.record import Event
from tests.actors.memory_store import MemoryStore, make_event

KEY: ActorKey = ("user", "p1", "u1")


def ev(name: str, ts: int, session: str | None, **kw: Any) -> Event:
    payload = kw.pop("payload", None)
    return make_event(name, ts=ts, session=session, user="u1", payload=payload, **kw)


async def fresh_actor(store: MemoryStore | None = None) -> UserActor:
    actor = UserActor(KEY, store or MemoryStore())
    await actor.activate()
    return actor


async def apply(actor: UserActor, *events: Event) -> UserView:
    summary = await actor.receive(ApplyEvents(events=list(events)))
    assert isinstance(summary, UserSummary)
    view = await actor.receive(GetView())
    assert isinstance(view, UserView)
    return view


async def test_sessions_and_devices_across_devices() -> None:
    actor = await fresh_actor()
    view = await apply(
        actor,
        ev("page_view", 1_000, "s-phone", device_type="mobile",
           payload={"sessionContext": {"deviceId": "phone-1"}, "eventData": {"url": "/product/123"}}),
        ev("click", 1_500, "s-phone", payload={"eventData": {"url": "/not-a-page"}}),
        ev("page_view", 2_000, "s-desk", payload={"deviceType": "desktop", "metadata": {"page": "/comparison"}}),
        ev("click", 2_500, "s-desk"),
        ev("api-call", 3_000, None),  # no session, no device: counted for the user
    )  # fmt: skip
    assert (view.user_id, view.event_count, view.first_seen, view.last_activity) == ("u1", 5, 1_000, 3_000)
    assert [(s.session_id, s.device_id, s.device_type, s.first_seen, s.last_seen, s.event_count, s.current_page)
            for s in view.sessions] == [
        ("s-desk", "desktop", "desktop", 2_000, 2_500, 2, "/comparison"),
        ("s-phone", "phone-1", "mobile", 1_000, 1_500, 2, "/product/123"),
    ]  # fmt: skip
    assert [(d.device_id, d.device_type, d.last_activity, d.last_session_id, d.current_page)
            for d in view.devices] == [
        ("unknown", None, 3_000, None, None),
        ("desktop", "desktop", 2_500, "s-desk", "/comparison"),
        ("phone-1", "mobile", 1_500, "s-phone", "/product/123"),
    ]  # fmt: skip


async def test_device_id_sources_and_inheritance() -> None:
    actor = await fresh_actor()
    view = await apply(
        actor,
        ev("a", 1, "s1", payload={"deviceId": "top-level"}),
        ev("b", 2, "s1"),  # inherits its session's device
        ev("c", 3, "s2", payload={"metadata": {"deviceId": "from-meta"}}),
        ev("d", 4, "s3", payload={"deviceId": 42, "metadata": {"deviceId": ""}}),  # unusable ids
    )
    devices = {d.device_id: d for d in view.devices}
    assert set(devices) == {"top-level", "from-meta", "unknown"}
    assert devices["top-level"].last_activity == 2
    sessions = {s.session_id: s.device_id for s in view.sessions}
    assert sessions == {"s1": "top-level", "s2": "from-meta", "s3": "unknown"}


async def test_session_learns_its_device_id_later() -> None:
    actor = await fresh_actor()
    await apply(actor, ev("a", 1, "s1", device_type="tablet"))
    view = await apply(actor, ev("b", 2, "s1", payload={"deviceId": "tab-9"}), ev("c", 3, "s1"))
    assert [(s.device_id, s.device_type) for s in view.sessions] == [("tab-9", "tablet")]
    assert view.devices[0].device_id == "tab-9"
    assert view.devices[0].last_activity == 3


async def test_current_page_is_the_latest_page_view_by_time() -> None:
    actor = await fresh_actor()
    await apply(actor, ev("page_view", 2_000, "s1", payload={"url": "/new"}))
    view = await apply(actor, ev("page_view", 1_000, "s1", payload={"url": "/old"}))  # late
    assert view.sessions[0].current_page == "/new"
    assert view.devices[0].current_page == "/new"
    assert view.sessions[0].first_seen == 1_000


async def test_sessions_and_devices_are_bounded() -> None:
    actor = await fresh_actor()
    view = await apply(actor, *(ev("a", 1_000 + i, f"s{i}") for i in range(SESSIONS_KEPT + 5)))
    assert len(view.sessions) == SESSIONS_KEPT
    assert view.sessions[0].session_id == f"s{SESSIONS_KEPT + 4}"
    assert view.sessions[-1].session_id == "s5"
    assert view.event_count == SESSIONS_KEPT + 5
    view = await apply(
        actor, *(ev("a", 10_000 + i, "sx", payload={"deviceId": f"d{i}"}) for i in range(DEVICES_KEPT + 3))
    )
    assert len(view.devices) == DEVICES_KEPT
    assert view.devices[0].device_id == f"d{DEVICES_KEPT + 2}"


async def test_view_is_camel_case() -> None:
    actor = await fresh_actor()
    view = await apply(actor, ev("page_view", 1, "s1", payload={"url": "/x"}))
    encoded = msgspec.json.decode(msgspec.json.encode(view))
    assert set(encoded) == {"userId", "sessions", "devices", "eventCount", "firstSeen", "lastActivity"}
    assert set(encoded["sessions"][0]) == {
        "sessionId", "deviceType", "deviceId", "firstSeen", "lastSeen", "eventCount", "currentPage",
    }  # fmt: skip
    assert set(encoded["devices"][0]) == {
        "deviceId",
        "deviceType",
        "lastActivity",
        "lastSessionId",
        "currentPage",
    }


async def test_skip_rule_and_snapshot_round_trip() -> None:
    store = MemoryStore()
    e1, e2 = store.add(ev("a", 1, "s1"), ev("b", 2, "s2"))
    actor = await fresh_actor(store)
    view = await apply(actor, e1, e2)  # already replayed
    assert view.event_count == 2
    snapshot = actor.snapshot()
    assert snapshot is not None
    await store.save_snapshot("p1", "user", "u1", snapshot)
    store.add(ev("c", 3, "s1"))
    again = await fresh_actor(store)
    assert again.view().event_count == 3
    assert {s.session_id: s.event_count for s in again.view().sessions} == {"s1": 2, "s2": 1}


async def test_session_and_user_actors_side_by_side(autojump_clock: MockClock, nursery: trio.Nursery) -> None:
    store = MemoryStore()
    system = ActorSystem(store, {"session": session_factory, "user": user_factory})
    await nursery.start(system.run)
    events = store.add(ev("page_view", 1, "s1", payload={"url": "/a"}), ev("click", 2, "s1"))
    batch = ApplyEvents(events=events)
    session, user = await system.ask_many([(("session", "p1", "s1"), batch), (KEY, batch)], timeout=1)
    assert session.event_count == 2 and session.user_id == "u1"
    assert user.event_count == 2 and user.sessions == 1
    view = await system.ask(KEY, GetView(), timeout=1)
    assert view.event_count == 2 and view.sessions[0].current_page == "/a"
    assert system.stats().live_actors == {"session": 1, "user": 1}
