"""The store reads behind the seed clients' requests (issue 12, item 7), on every backend: the
newest-first scan of large listings, the "unknown" service, per-bucket service series, and the
server lifetimes behind the health's uptime."""

from __future__ import annotations

import pytest

from storage.base import (
    UNKNOWN_SERVICE,
    Cursor,
    EventFilter,
    Lifetime,
    LifetimeHistory,
    SeriesRow,
    Store,
)

from .conftest import StoreOpener
from .test_store import DAY, MINUTE, T0, expected_page, make_event, project_id, seeded_events

HOUR = 60 * MINUTE


@pytest.mark.parametrize(
    ("fields", "limit"),
    [
        ({}, 1000),
        ({}, 97),
        ({"service_name": "pay"}, 47),
        ({"session_id": "s2"}, 10),
        ({"correlation_id": "c1", "since_ms": T0 + DAY // 2}, 13),
        ({"name_contains": "page", "until_ms": T0 + 2 * DAY}, 50),
    ],
    ids=lambda v: ",".join(v) or "none" if isinstance(v, dict) else str(v),
)
async def test_descending_scan_visits_every_event_once_newest_first(
    store: Store, fields: dict[str, object], limit: int
) -> None:
    """The large listings' scan: query_events' matches and order (ties by seq), page after page."""
    project = await project_id(store)
    events = await seeded_events(store, project, 2500, seed=3, distinct_stamps=40)
    noise = (await store.create_project("noise")).id
    await store.append([make_event(noise, service_name="pay", session_id="s2") for _ in range(5)])
    flt = EventFilter(project=project, **fields)  # type: ignore[arg-type]
    want = expected_page(events, flt)
    seen: list[str] = []
    before: Cursor | None = None
    for _ in range(len(want) // limit + 2):
        page = await store.query_events_descending(flt, limit=limit, before=before)
        seen += [e.id for e in page]
        if len(page) < limit:
            break
        before = Cursor(page[-1].timestamp, page[-1].seq)
    assert seen == want
    by_id = {e.id: e for e in events}
    assert page == [by_id[i] for i in want[len(want) - len(page) :]]  # whole events read back


async def test_unknown_names_the_events_without_a_service(store: Store) -> None:
    project = await project_id(store)
    await store.append([
        make_event(project, name="a", service_name=None, status_code=500, response_time_ms=10.0),
        make_event(project, name="a", service_name=None),
        make_event(project, name="b", service_name=UNKNOWN_SERVICE, status_code=200, response_time_ms=30.0),
        make_event(project, name="a", service_name=UNKNOWN_SERVICE),  # the same name under both keys
        make_event(project, name="c", service_name="pay"),
    ])  # fmt: skip
    # without name_unknown (suggestions, anomalies): the two groups as stored
    plain = {a.service_name: a.event_count for a in await store.service_stats(project)}
    assert plain == {None: 2, UNKNOWN_SERVICE: 2, "pay": 1}
    assert await store.service_names(project) == ["pay", UNKNOWN_SERVICE]
    # with it: one "unknown" service, its names merged (a: 3 events, b: 1), never None
    named = await store.service_stats(project, name_unknown=True)
    assert [(a.service_name, a.event_count, a.unique_events) for a in named] == [(UNKNOWN_SERVICE, 4, 2), ("pay", 1, 1)]
    unknown = named[0]
    assert [(e.name, e.count) for e in unknown.top_events] == [("a", 3), ("b", 1)]
    assert (unknown.with_status, unknown.errors, unknown.with_response_time, unknown.response_time_sum) == (2, 1, 2, 40.0)
    ranged = await store.service_stats(project, since_ms=T0, until_ms=T0 + DAY, name_unknown=True)
    assert ranged == named
    only = await store.service_stats(project, service_name=UNKNOWN_SERVICE, name_unknown=True)
    assert only == [unknown]
    assert await store.service_stats(project, since_ms=T0, until_ms=T0 + DAY, service_name=UNKNOWN_SERVICE,
                                     name_unknown=True) == [unknown]  # fmt: skip
    # the event filter selects both, and counts both
    page = await store.query_events(EventFilter(project=project, service_name=UNKNOWN_SERVICE), limit=10, cursor=None)
    assert (len(page.events), page.filtered) == (4, 4)
    timed = EventFilter(project=project, service_name=UNKNOWN_SERVICE, since_ms=T0)
    assert (await store.query_events(timed, limit=10, cursor=None)).filtered == 4
    assert len(await store.query_events_descending(timed, limit=10, before=None)) == 4


async def test_service_names_add_unknown_only_for_events_without_a_service(store: Store) -> None:
    project = await project_id(store)
    await store.append([make_event(project, service_name="web"), make_event(project, service_name="api")])
    assert await store.service_names(project, name_unknown=True) == ["api", "web"]
    await store.append([make_event(project, service_name=None)])
    assert await store.service_names(project, name_unknown=True) == ["api", UNKNOWN_SERVICE, "web"]
    assert await store.service_names(project) == ["api", "web"]


async def test_service_series_buckets_from_the_first_minute(store: Store) -> None:
    project = await project_id(store)
    other = (await store.create_project("elsewhere")).id
    spec = [
        # service, status, rt, ts
        ("pay", 200, 100.0, T0 + 10),
        ("pay", 500, 300.0, T0 + 59 * MINUTE),  # same hour bucket
        ("pay", None, None, T0 + HOUR + 1),
        ("pay", 404, 20.0, T0 + 3 * HOUR + 5 * MINUTE),
        ("auth", 401, 5.5, T0 + 10),  # another service: not in the series
        (None, 500, 7.0, T0 + 2 * HOUR),  # no service: only with ""
        ("pay", 200, 1.0, T0 - 1),  # the minute before the range
        ("pay", 200, 1.0, T0 + 5 * HOUR),  # after it
    ]
    await store.append([make_event(project, service_name=svc, status_code=st, response_time_ms=rt, ts=ts)
                        for svc, st, rt, ts in spec])  # fmt: skip
    await store.append([make_event(other, service_name="pay", ts=T0 + 10)])
    rows = await store.service_series(project, ["pay"], since_ms=T0, until_ms=T0 + 4 * HOUR - 1, bucket_minutes=60)
    assert rows == [
        SeriesRow(0, 2, 2, 1, 2, 400.0),
        SeriesRow(1, 1, 0, 0, 0, 0.0),
        SeriesRow(3, 1, 1, 1, 1, 20.0),
    ]
    both = await store.service_series(project, ["pay", ""], since_ms=T0, until_ms=T0 + 4 * HOUR - 1, bucket_minutes=120)
    assert both == [SeriesRow(0, 3, 2, 1, 2, 400.0), SeriesRow(1, 2, 2, 2, 2, 27.0)]
    # buckets start at the range's first minute, not at the hour
    shifted = await store.service_series(project, ["pay"], since_ms=T0 + 30 * MINUTE, until_ms=T0 + 2 * HOUR,
                                         bucket_minutes=60)  # fmt: skip
    assert [(r.bucket, r.count) for r in shifted] == [(0, 2)]  # minutes 30..89: the events at 59 and 60
    assert await store.service_series(project, ["nothing"], since_ms=T0, until_ms=T0 + DAY, bucket_minutes=60) == []


async def test_lifetimes_round_trip_and_survive_a_restart(open_store: StoreOpener) -> None:
    first = Lifetime(id="a", node="n1", started_ms=1_000, last_seen_ms=1_000, stopped_ms=None)
    async with open_store() as store:
        assert await store.lifetimes(0) == LifetimeHistory(None, [])
        await store.record_lifetime(first)
        await store.record_lifetime(Lifetime(id="a", node="n1", started_ms=1_000, last_seen_ms=6_000, stopped_ms=None))
        await store.record_lifetime(Lifetime(id="b", node="n2", started_ms=9_000, last_seen_ms=9_500, stopped_ms=9_500))
    async with open_store() as store:
        history = await store.lifetimes(0)
        assert history == LifetimeHistory(1_000, [
            Lifetime(id="a", node="n1", started_ms=1_000, last_seen_ms=6_000, stopped_ms=None),
            Lifetime(id="b", node="n2", started_ms=9_000, last_seen_ms=9_500, stopped_ms=9_500),
        ])  # fmt: skip
        # only those alive at or after the time asked for; the first start stays the first ever
        assert await store.lifetimes(7_000) == LifetimeHistory(1_000, [history.lifetimes[1]])
        assert await store.lifetimes(10_000) == LifetimeHistory(1_000, [])
