"""GET /api/events: the events query, up to MAX_LIMIT events in one answer, streamed.

Seed 004's own analysis examples ask for ``limit=10000`` and ``limit=50000`` and parse the answer as
one JSON document, so a large limit is honoured (not cut to a page) while memory stays bounded: the
first page (MAX_PAGE events, with the match count) is read before answering, so a bad parameter is
a 400 and an unavailable store a 503. When that page is the whole answer it goes out in one piece,
exactly as before; otherwise the body streams (chunked transfer encoding), one chunk per page read
from the store newest first (``Store.query_events_descending``, a keyset scan without counts), and
only one page is held at a time, whatever the limit.

The streamed body is byte for byte the document a single answer would be: ``{"events":[`` then the
events, then the rest of ``EventsQueryResponse`` (total, filtered, services, timeRange, nextCursor),
encoded from the same struct. A failure after the first byte cannot change the status any more:
the error ends the connection without the final chunk, so a client never parses a cut-off
document as a complete one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Final

import msgspec
import trio
from quart import Response

from protocol.normalize import iso_ms
from protocol.record import Event
from protocol.tracking import EventsQueryResponse, TimeRange
from protocol.views import stored_event
from server.params import decode_cursor, encode_cursor, int_param
from server.queries import DEFAULT_LIMIT, event_filter
from storage.base import MAX_PAGE, Cursor, EventFilter, Store

MAX_LIMIT: Final = 100_000  # events in one answer; more is a 400 naming it (page with nextCursor)
SLICE_EVENTS: Final = 250  # events encoded between two checkpoints, so other requests get their turn

_json: Final = msgspec.json.Encoder()
_EMPTY_EVENTS: Final = b'{"events":[]'  # how the encoded tail starts: the streamed events replace it

_Tail = Callable[["Cursor | None"], EventsQueryResponse]


class _Listing:
    """What the answer says besides its events, gathered while they are read."""

    def __init__(self, since: int | None, until: int | None) -> None:
        self.since, self.until = since, until
        self.newest: int | None = None
        self.oldest: int | None = None
        self.sent = 0

    def saw(self, events: list[Event]) -> None:
        if events:
            if self.newest is None:
                self.newest = events[0].timestamp
            self.oldest = events[-1].timestamp
            self.sent += len(events)

    def time_range(self) -> TimeRange:
        low = self.since if self.since is not None else self.oldest
        high = self.until if self.until is not None else self.newest
        out = TimeRange()
        if low is not None:
            out.from_ = iso_ms(low)
        if high is not None:
            out.to = iso_ms(high)
        return out


async def events_response(store: Store, project: str, query: dict[str, str]) -> Response:
    flt = event_filter(project, query)
    limit = int_param(query, "limit", DEFAULT_LIMIT, low=1, high=MAX_LIMIT)
    cursor = decode_cursor(query.get("cursor"))
    page = await store.query_events(flt, limit=min(limit, MAX_PAGE), cursor=cursor)
    total = await store.count_events(project)
    services = await store.service_names(project, name_unknown=True)
    listing = _Listing(flt.since_ms, flt.until_ms)
    listing.saw(page.events)

    def tail(next_cursor: Cursor | None) -> EventsQueryResponse:
        return EventsQueryResponse(
            events=[],
            total=total,
            filtered=page.filtered,
            services=services,
            timeRange=listing.time_range(),
            nextCursor=encode_cursor(next_cursor) if next_cursor else None,
        )

    if limit <= MAX_PAGE or page.next_cursor is None:  # one page is the whole answer
        answer = tail(page.next_cursor)
        answer.events = [stored_event(e) for e in page.events]
        return Response(_json.encode(answer), mimetype="application/json")
    response = Response(_stream(store, flt, limit, page.events, listing, tail), mimetype="application/json")
    response.timeout = None  # Quart's RESPONSE_TIMEOUT (60 s) would cut a long answer short, silently
    return response


async def _stream(
    store: Store, flt: EventFilter, limit: int, first: list[Event], listing: _Listing, tail: _Tail
) -> AsyncIterator[bytes]:
    """``first`` is a full page with more after it; the pages after it until ``limit`` or the end."""
    yield b'{"events":[' + await _encode(first)
    before = Cursor(first[-1].timestamp, first[-1].seq)
    exhausted = False
    while listing.sent < limit:
        want = min(MAX_PAGE, limit - listing.sent)
        page = await store.query_events_descending(flt, limit=want, before=before)
        if page:
            listing.saw(page)
            yield b"," + await _encode(page)
            before = Cursor(page[-1].timestamp, page[-1].seq)
        if len(page) < want:
            exhausted = True
            break
    # nextCursor: the limit was reached and at least one more event matches
    more = not exhausted and bool(await store.query_events_descending(flt, limit=1, before=before))
    rest = _json.encode(tail(before if more else None))
    yield b"]" + rest[len(_EMPTY_EVENTS):]


async def _encode(events: list[Event]) -> bytes:
    """The events as the members of a JSON array (comma-separated), a slice between checkpoints."""
    parts = []
    for at in range(0, len(events), SLICE_EVENTS):
        parts.append(_json.encode([stored_event(e) for e in events[at : at + SLICE_EVENTS]])[1:-1])  # no [ ]
        await trio.lowlevel.checkpoint()
    return b",".join(parts)
