"""Store-level deletion and retention, on SQLite and PostgreSQL: exact counts, aggregates equal to
those of the remaining events, anonymization, client ids, snapshots and the status records."""

from __future__ import annotations

import itertools

import msgspec

from protocol.record import SOURCE_EVENTS, Event
from storage.base import Snapshot, Store
from storage.deletion_records import (
    COMPLETED,
    PROCESSING,
    DeletionOptions,
    DeletionRecord,
    Removed,
    hashed_id,
    strip_identity,
)
from storage.trigger_records import Execution, SessionMark
from storage.webhook_records import NewDelivery, Webhook
from storage.workflow_records import NewAction
from tests.storage.conftest import *  # noqa: F403 (the sqlite+postgres store fixtures)
from tests.storage.conftest import StoreOpener

T0 = 1_700_000_000_000  # a Tuesday, 22:13 UTC: the events below straddle a day boundary
_ids = itertools.count(1)


def event(project: str, name: str, ts: int, **fields: object) -> Event:
    n = next(_ids)
    body = {"n": n, "userId": fields.get("user_id"), "metadata": {"email": "a@b.example", "plan": "pro"}}
    return Event(
        id=f"evt_{n}", project=project, name=name, source=SOURCE_EVENTS, timestamp=ts, received_at=ts,
        payload=msgspec.Raw(msgspec.json.encode(body)), **fields,  # type: ignore[arg-type]
    )  # fmt: skip


def journey(project: str) -> list[Event]:
    """u1 on sessions s1 and s2 (with anonymous events before login), u2 on s3 and once on s1."""
    out: list[Event] = []
    for i in range(40):
        ts = T0 + i * 97_000  # ~1.6 minutes apart: several minutes and two days
        service = ("checkout", None, "search")[i % 3]
        status = (200, 500, None, 404)[i % 4]
        rt = None if i % 5 == 0 else float(10 + i)
        common = {"service_name": service, "status_code": status, "response_time_ms": rt}
        name = ("page_view", "click", "purchase")[i % 3]
        if i % 4 == 0:
            out.append(event(project, name, ts, user_id="u1", session_id="s1", client_id=f"c{i}", **common))
        elif i % 4 == 1:
            out.append(event(project, name, ts, session_id="s1" if i < 20 else "s2", **common))  # anonymous
        elif i % 4 == 2:
            out.append(event(project, name, ts, user_id="u1", session_id="s2", **common))
        else:
            out.append(event(project, name, ts, user_id="u2", session_id="s3", **common))
    out.append(event(project, "click", T0 + 5_000, user_id="u2", session_id="s1", service_name="checkout"))
    out.append(event(project, "login", T0 + 6_000, user_id="u1", **{}))  # no session
    return out


def copy_to(project: str, events: list[Event]) -> list[Event]:
    return [msgspec.structs.replace(e, project=project, id=f"cp_{e.id}", seq=0, client_id=None) for e in events]


async def statistics(store: Store, project: str) -> object:
    return (
        await store.service_stats(project, top=50),
        await store.service_stats(project, since_ms=T0 + 60_000, until_ms=T0 + 3_000_000, top=50),
        await store.top_events(project, limit=50),
        await store.per_day(project),
        await store.minute_series(project, since_ms=T0 - 60_000, until_ms=T0 + 5_000_000),
        await store.count_events(project),
        await store.service_names(project, name_unknown=True),
    )


async def test_deleting_a_user_removes_exactly_their_data_and_their_share_of_the_aggregates(store: Store) -> None:
    events = journey("prj_a")
    await store.append(events)
    await store.append(journey("prj_other"))  # another project with the same user ids
    await store.save_snapshot("prj_a", "user", "u1", Snapshot(b"{}", 1))
    await store.save_snapshot("prj_a", "session", "s2", Snapshot(b"{}", 1))
    await store.save_snapshot("prj_a", "session", "s3", Snapshot(b"{}", 1))
    other_before = await statistics(store, "prj_other")

    removed = await store.delete_user_data("prj_a", "u1", anonymize_only=False)

    doomed = [e for e in events if e.user_id == "u1" or (e.user_id is None and e.session_id in ("s1", "s2"))]
    kept = [e for e in events if e not in doomed]
    # s2 is gone whole; s1 keeps u2's event (another person's data in a shared session)
    assert removed == Removed(events=len(doomed), sessions=1, profiles=1)
    left = await store.events_after("prj_a", 0, limit=10_000)
    assert sorted(e.id for e in left) == sorted(e.id for e in kept)
    await store.append(copy_to("prj_ref", kept))
    assert await statistics(store, "prj_a") == await statistics(store, "prj_ref")
    assert await statistics(store, "prj_other") == other_before
    assert await store.load_snapshot("prj_a", "user", "u1") is None
    assert await store.load_snapshot("prj_a", "session", "s2") is None
    assert await store.load_snapshot("prj_a", "session", "s3") is not None
    # the deleted events' client ids are free again (their dedup rows went with them)
    again = await store.append([event("prj_a", "click", T0, user_id="u9", client_id="c0")])
    assert not again[0].duplicate
    # a second request finds nothing
    assert await store.delete_user_data("prj_a", "u1", anonymize_only=False) == Removed(0, 0, 0)


async def test_without_cascade_only_the_users_own_events_go(store: Store) -> None:
    events = journey("prj_a")
    await store.append(events)
    removed = await store.delete_user_data("prj_a", "u1", anonymize_only=False, cascade=False)
    own = [e for e in events if e.user_id == "u1"]
    assert removed == Removed(events=len(own), sessions=0, profiles=1)  # s1 and s2 keep anonymous events
    left = await store.events_after("prj_a", 0, limit=10_000)
    assert not any(e.user_id == "u1" for e in left) and len(left) == len(events) - len(own)


async def test_anonymizing_keeps_counts_and_strips_identity(store: Store) -> None:
    events = journey("prj_a")
    await store.append(events)
    before = await statistics(store, "prj_a")
    await store.save_snapshot("prj_a", "user", "u1", Snapshot(b"{}", 1))

    removed = await store.delete_user_data("prj_a", "u1", anonymize_only=True, salt="pepper")

    touched = [e for e in events if e.user_id == "u1" or (e.user_id is None and e.session_id in ("s1", "s2"))]
    assert removed == Removed(events=len(touched), sessions=2, profiles=1)
    assert await statistics(store, "prj_a") == before
    left = {e.id: e for e in await store.events_after("prj_a", 0, limit=10_000)}
    assert len(left) == len(events)
    for original in touched:
        now = left[original.id]
        assert now.user_id is None
        assert now.session_id == (None if original.session_id is None else hashed_id("pepper", original.session_id))
        body = msgspec.json.decode(bytes(now.payload))
        assert "userId" not in body and body["metadata"] == {"plan": "pro"}
    assert left[events[3].id].user_id == "u2"  # untouched
    assert await store.load_snapshot("prj_a", "user", "u1") is None


def test_strip_identity_removes_identity_fields_at_any_depth() -> None:
    raw = b'{"userId":"u","a":{"User_Agent":"x","ip":"1.2.3.4","contact":"me@x.org","ok":1},"l":["z@y.io",2]}'
    assert msgspec.json.decode(strip_identity(raw)) == {"a": {"ok": 1}, "l": [2]}
    assert strip_identity(b"not json") == b"{}"


async def test_retention_removes_expired_and_too_old_events(store: Store) -> None:
    now = T0 + 100 * 86_400_000
    expired = event("prj_a", "click", now - 1_000, user_id="u1", expires_at=now - 1)
    future = event("prj_a", "click", now - 1_000, user_id="u1", expires_at=now + 86_400_000)
    old_a = event("prj_a", "click", now - 40 * 86_400_000, user_id="u1")
    old_b = event("prj_b", "click", now - 40 * 86_400_000, user_id="u1")
    recent_b = event("prj_b", "view", now - 10 * 86_400_000, user_id="u1")
    await store.append([expired, future, old_a, old_b, recent_b])

    removed = await store.delete_expired(now, {"prj_b": 30})

    assert removed == {"prj_a": 1, "prj_b": 1}
    assert {e.id for e in await store.events_after("prj_a", 0, limit=100)} == {future.id, old_a.id}
    assert {e.id for e in await store.events_after("prj_b", 0, limit=100)} == {recent_b.id}
    assert await store.count_events("prj_b") == 1
    assert [s.event_count for s in await store.service_stats("prj_a")] == [2]
    assert await store.delete_expired(now, {"prj_b": 30}) == {}


async def test_deletion_records_are_kept_per_project(store: Store) -> None:
    record = DeletionRecord("del_1", "prj_a", "u1", PROCESSING, DeletionOptions(anonymize_only=True),
                            Removed(), 1_000, None)  # fmt: skip
    await store.begin_deletion(record)
    assert await store.deletion("prj_a", "del_1") == record
    await store.finish_deletion("prj_a", "del_1", COMPLETED, Removed(3, 1, 1), 2_000, None)
    done = await store.deletion("prj_a", "del_1")
    assert done is not None and done.status == COMPLETED and done.removed == Removed(3, 1, 1)
    assert done.completed_ms == 2_000 and done.options.anonymize_only
    assert await store.deletion("prj_b", "del_1") is None
    assert [r.deletion_id for r in await store.user_deletions("prj_a", "u1")] == ["del_1"]
    assert await store.user_deletions("prj_b", "u1") == []


async def test_queued_automation_of_the_user_and_their_sessions_goes(store: Store) -> None:
    """Trigger marks and executions, workflow actions and webhook deliveries of u1 (or of s1) are
    removed; u2's stay."""
    await store.append(journey("prj_a"))
    marks = [SessionMark("prj_a", "t1", s, fires=1) for s in ("s1", "s3")]
    executions = [Execution("prj_a", f"x{i}", "t1", s, u, "", T0, "event", True, "{}")
                  for i, (s, u) in enumerate((("s1", "u1"), ("s3", "u2"), ("s2", None)))]  # fmt: skip
    await store.record_trigger_activity(marks, executions)
    actions = [NewAction(id=f"a{i}", project="prj_a", workflow_id="w1", session_id=s, user_id=u, action_index=0,
                         action_type="webhook", variant="", due_at=T0, created_at=T0, detail="{}")
               for i, (s, u) in enumerate((("s1", "u1"), ("s3", "u2")))]  # fmt: skip
    await store.schedule_workflow_actions(actions)
    await store.create_webhook(Webhook(id="wh1", project="prj_a", url="http://x.example/", events=("click",),
                                       secret="whsec_x", created_at=T0))  # fmt: skip

    def delivery(i: int, data: dict[str, object]) -> NewDelivery:
        body = msgspec.json.encode({"type": "click", "timestamp": "2026-01-01T00:00:00Z", "data": data})
        return NewDelivery(id=f"d{i}", webhook_id="wh1", project="prj_a", kind="click", dedup_key=f"k{i}", body=body,
                           created_at=T0)  # fmt: skip

    await store.record_deliveries([delivery(0, {"userId": "u1", "sessionId": "s1"}),
                                   delivery(1, {"userId": None, "sessionId": "s2"}),
                                   delivery(2, {"userId": "u2", "sessionId": "s3"})])  # fmt: skip

    await store.delete_user_data("prj_a", "u1", anonymize_only=False)

    assert await store.trigger_session_marks("prj_a", "s1") == []
    assert len(await store.trigger_session_marks("prj_a", "s3")) == 1
    assert [e.execution_id for e in await store.trigger_executions("prj_a", "t1", 10)] == ["x1"]
    assert [a.id for a in await store.list_workflow_actions("prj_a", "w1", 10)] == ["a1"]
    left = await store.list_deliveries("prj_a", "wh1", "pending", 10)
    assert [d.id for d in left] == ["d2"]


async def test_a_deleted_events_seq_is_never_handed_out_again(open_store: StoreOpener) -> None:
    """A stream client that saw a deleted event's seq must not skip the next event: after a restart
    the store still numbers above the deleted newest events (SQLite numbers from its own max)."""
    async with open_store() as store:
        await store.append([event("prj_a", "click", T0, user_id="u2")])
        newest = await store.append([event("prj_a", "click", T0 + i, user_id="u1") for i in range(3)])
        await store.delete_user_data("prj_a", "u1", anonymize_only=False)
    async with open_store() as store:
        (after,) = await store.append([event("prj_a", "click", T0, user_id="u3")])
        assert after.seq > newest[-1].seq
