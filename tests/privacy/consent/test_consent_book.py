"""The consent records on both backends and the ConsentBook over them (actors/privacy/consent.py):
the audit trail, the pipeline stage's verdicts and flags, and the incremental reload."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import msgspec
import trio

from actors.privacy.consent import GPC_FLAGS, ConsentBook
from protocol.privacy import (
    ANALYTICS,
    DROP_CONSENT,
    FLAG_GPC,
    FLAG_NO_ADVERTISING,
    FLAG_NO_MARKETING,
    FLAG_NO_PERSONALIZATION,
)
from protocol.record import Event
from storage.base import Store
from storage.consent_records import ALL_GRANTED, CATEGORY_BITS, NONE_GRANTED, ConsentRow
from tests.storage.conftest import *  # noqa: F403 (the sqlite+postgres store fixtures)

WAIT_S = 10.0


def row(user: str, granted: int, *, project: str = "prj_a", status: str = "granted", at: int = 1) -> ConsentRow:
    return ConsentRow(project=project, user_id=user, consent_id=f"consent_{user}_{at}", status=status, granted=granted,
                      consent_type="behavioral_tracking", consent_source="cookie_banner", consent_date=at,
                      recorded_ms=at)  # fmt: skip


def ev(user: str | None, session: str | None = "s", project: str = "prj_a") -> Event:
    return Event(id="", project=project, name="page_view", source="behavioral", timestamp=1, received_at=1,
                 payload=msgspec.Raw(b"{}"), user_id=user, session_id=session)


async def until(done: Callable[[], bool]) -> None:
    """Poll ``done`` until it holds, for at most WAIT_S (another node's reload has no event to wait on)."""
    with trio.fail_after(WAIT_S):
        while True:
            if done():
                return
            await trio.sleep(0.02)


def granted_but(category: str) -> int:
    return ALL_GRANTED & ~CATEGORY_BITS[category]


async def test_the_trail_is_append_only_newest_first_and_per_project(store: Store) -> None:
    first = await store.record_consent(row("u1", ALL_GRANTED, at=1))
    second = await store.record_consent(row("u1", NONE_GRANTED, status="denied", at=2))
    other = await store.record_consent(row("u1", ALL_GRANTED, project="prj_b", at=3))
    assert 0 < first.id < second.id < other.id  # monotonic in commit order
    trail = await store.consent_trail("prj_a", "u1", 10)
    assert [r.consent_id for r in trail] == [second.consent_id, first.consent_id]
    assert trail[0] == second and trail[0].consent_source == "cookie_banner"
    assert [r.id for r in await store.consent_trail("prj_a", "u1", 1)] == [second.id]
    assert await store.consent_trail("prj_a", "nobody", 10) == []
    assert [r.project for r in await store.consent_trail("prj_b", "u1", 10)] == ["prj_b"]
    upto, current = await store.consent_snapshot()
    assert upto == other.id
    assert sorted((c.project, c.user_id, c.granted) for c in current) == [("prj_a", "u1", 0), ("prj_b", "u1", 15)]
    changes = await store.consent_changes(first.id, 10)
    assert [c.id for c in changes] == [second.id, other.id]


async def test_the_gate_drops_stamps_and_counts(store: Store) -> None:
    defaults = {"prj_a": "granted"}
    book = ConsentBook(store, lambda project: defaults.get(project, "granted"))
    drops: Counter[str] = Counter()
    async with trio.open_nursery() as nursery:
        await nursery.start(book.run)
        plain = [ev("u1"), ev(None)]
        assert book.gate(plain, False, drops) is None and [e.flags for e in plain] == [0, 0]  # nothing recorded
        await book.record(row("u1", granted_but(ANALYTICS)))
        await book.record(row("u2", granted_but("marketing")))
        await book.record(row("u3", granted_but("personalization")))
        await book.record(row("s4", NONE_GRANTED, status="withdrawn"))  # an anonymous session's consent
        events = [ev("u1"), ev("u2"), ev("u3"), ev(None, "s4"), ev("u5")]
        verdicts = book.gate(events, False, drops)
        assert verdicts is not None
        assert [v.category if v else None for v in verdicts] == [ANALYTICS, None, None, ANALYTICS, None]
        assert verdicts[0] is not None and verdicts[0].reason == DROP_CONSENT
        assert [e.flags for e in events[1:3]] == [FLAG_NO_MARKETING, FLAG_NO_PERSONALIZATION]
        assert events[4].flags == 0
        assert drops == Counter(consent_analytics=2, consent_marketing=1, consent_personalization=1)
        gpc = [ev("u5"), ev("u3")]
        assert book.gate(gpc, True, drops) is None
        assert gpc[0].flags == GPC_FLAGS and gpc[1].flags == GPC_FLAGS | FLAG_NO_PERSONALIZATION
        assert FLAG_GPC & gpc[0].flags and FLAG_NO_ADVERTISING & gpc[0].flags
        # the project's default applies to subjects without a record
        defaults["prj_a"] = "denied"
        late = book.gate([ev("u5"), ev("u2")], False, drops)
        assert late is not None and late[0] is not None and late[1] is None
        assert book.gate([ev("u5", project="prj_b")], False, drops) is None  # another project: its own default
        nursery.cancel_scope.cancel()


async def test_a_change_recorded_elsewhere_is_applied_at_the_next_reload(store: Store) -> None:
    here = ConsentBook(store, lambda _: "granted")
    there = ConsentBook(store, lambda _: "granted")  # another node over the same database
    await there.record(row("u0", NONE_GRANTED, status="denied", at=1))
    async with trio.open_nursery() as nursery:
        await nursery.start(here.run)
        assert here.mask("prj_a", "u0") == NONE_GRANTED  # loaded at start
        await nursery.start(there.run)
        await here.record(row("u1", NONE_GRANTED, status="denied", at=2))
        assert here.mask("prj_a", "u1") == NONE_GRANTED  # here at once
        await until(lambda: there.mask("prj_a", "u1") == NONE_GRANTED)
        # both change one user: the later record wins on both nodes, whatever the reload order
        await there.record(row("u1", granted_but("advertising"), at=3))
        await here.record(row("u1", ALL_GRANTED, at=4))
        assert here.mask("prj_a", "u1") == ALL_GRANTED
        reloads = here.reloads
        await until(lambda: there.mask("prj_a", "u1") == ALL_GRANTED and here.reloads >= reloads + 2)
        assert here.mask("prj_a", "u1") == ALL_GRANTED  # its reload read record 3 and kept record 4
        assert here.subjects() == there.subjects() == 2
        nursery.cancel_scope.cancel()


async def test_suppression_denies_everything_until_a_new_grant(store: Store) -> None:
    book = ConsentBook(store, lambda _: "granted")
    async with trio.open_nursery() as nursery:
        await nursery.start(book.run)
        denial = await book.suppress("prj_a", "u9", "deletion_1")
        assert book.mask("prj_a", "u9") == NONE_GRANTED
        assert (denial.consent_source, denial.consent_type, denial.status) == ("deletion", "data_deletion", "denied")
        assert denial.consent_id.endswith("_deletion_1")
        with trio.fail_after(WAIT_S):
            await book.wait_propagated()  # a bounded wait for the other nodes' reloads
        verdicts = book.gate([ev("u9")], False, Counter())
        assert verdicts is not None and verdicts[0] is not None
        await book.record(row("u9", ALL_GRANTED, at=5))
        assert book.gate([ev("u9")], False, Counter()) is None
        trail = await store.consent_trail("prj_a", "u9", 10)
        assert [r.consent_source for r in trail] == ["cookie_banner", "deletion"]
        nursery.cancel_scope.cancel()
