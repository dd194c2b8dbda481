"""The ingest pipeline: commit, then process in the actors, then fan out. One call per request.

Order matters for idempotency: the store decides which events are new (client-id dedup) before any
actor sees them, so a retried event is never counted twice in live state. The commit is a group
commit shared with concurrent requests, so it costs a few milliseconds, not one fsync per request.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections import defaultdict
from typing import Any, Final

import trio

from actors.cluster import ActorRouter
from actors.fanout import Fanout, Message
from actors.hub import KIND_BEHAVIORAL, KIND_EVENT, KIND_METRICS, Attrs
from actors.metrics import Metrics
from actors.runtime import ActorError, ActorSystem, ApplyEvents
from protocol.record import SOURCE_BEHAVIORAL, AppendOutcome, Event
from protocol.views import behavioral_message, event_message, metrics_message
from storage.base import Store

log = logging.getLogger("pulse.ingest")

PROCESS_TIMEOUT_S: Final = 5.0  # actors must take and process a batch within this
BACKPRESSURE_S: Final = 2.0  # how long a request waits for room in full actor mailboxes before 503

ActorRequests = list[tuple[tuple[str, str, str], Any]]


class Overloaded(Exception):
    """The server cannot take this request now; the edge answers 503 with Retry-After."""

    def __init__(self, reason: str, retry_after: float = 1.0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class IngestResult:
    __slots__ = ("outcomes", "processed", "elapsed_ms", "sessions")

    def __init__(self, outcomes: list[AppendOutcome], processed: bool, elapsed_ms: float, sessions: dict) -> None:
        self.outcomes = outcomes
        self.processed = processed
        self.elapsed_ms = elapsed_ms
        self.sessions = sessions  # session id -> SessionView after this request


class IngestPipeline:
    def __init__(self, store: Store, actors: ActorSystem, router: ActorRouter, fanout: Fanout, metrics: Metrics) -> None:
        self.store = store
        self.actors = actors
        self.router = router
        self.fanout = fanout
        self.metrics = metrics
        # Requests finish out of seq order, so a stream may show seq 12 before 11 is published;
        # a resume point must never pass 11 while it is on its way. The store commits one node's
        # appends in seq order (it may leave gaps: PostgreSQL's sequence skips the seqs of
        # duplicates and failed groups), so "everything <= S is published" holds for S = just
        # below the lowest append still between commit and fan-out, or the highest committed seq
        # when none is. ``_in_flight`` counts the appends in flight per lowest seq.
        self._highest = 0
        self._in_flight: dict[int, int] = {}
        self._lows: list[int] = []  # heap of the keys of _in_flight (stale entries popped lazily)

    def start_from(self, max_seq: int) -> None:
        """Everything stored before this process started counts as published (it is history)."""
        self._highest = max(self._highest, max_seq)

    def resume_floor(self) -> int:
        while self._lows and self._lows[0] not in self._in_flight:
            heapq.heappop(self._lows)
        return self._lows[0] - 1 if self._lows else self._highest

    def _begin(self, low: int, high: int) -> None:
        """An append's new events (seqs low..high) are committed and not yet published."""
        if low not in self._in_flight:
            heapq.heappush(self._lows, low)
        self._in_flight[low] = self._in_flight.get(low, 0) + 1
        self._highest = max(self._highest, high)

    def _finish(self, low: int) -> None:
        left = self._in_flight[low] - 1
        if left:
            self._in_flight[low] = left
        else:
            del self._in_flight[low]

    async def ingest(self, events: list[Event], *, started: float, rejected: int = 0) -> IngestResult:
        """Store ``events`` durably, process the new ones, publish them. ``started`` = perf_counter()
        at receipt. Raises Overloaded (nothing acknowledged) or StoreError."""
        await self._wait_for_room(events)
        # From here to the fan-out nothing may be cut short by a client that goes away: an event
        # that is committed must also reach its actors and subscribers. The store's own deadline
        # (StoreUnavailable) and PROCESS_TIMEOUT_S bound this.
        with trio.CancelScope(shield=True):
            result = await self._commit_and_process(events, started, rejected)
        return result

    async def _commit_and_process(self, events: list[Event], started: float, rejected: int) -> IngestResult:
        outcomes: list[AppendOutcome] = await self.store.append(events) if events else []
        fresh: list[Event] = []
        repeated: list[Event] = []
        for event, outcome in zip(events, outcomes, strict=True):
            event.id = outcome.id
            event.seq = outcome.seq
            (repeated if outcome.duplicate else fresh).append(event)
        processed, sessions = True, dict[str, Any]()
        if repeated and not fresh:
            # A retry. Its first attempt may have been committed after its caller gave up (a 503
            # that was in fact stored): the actors get it again, and apply each seq only once.
            processed, sessions = await self._process(repeated)
        if fresh:
            low = min(event.seq for event in fresh)
            self._begin(low, max(event.seq for event in fresh))
            try:
                processed, sessions = await self._process(fresh + repeated)
                try:
                    await self._publish(fresh, sessions)
                except Exception:  # stored and processed: a fan-out bug must not fail the request
                    log.exception("fan-out failed")
                    self.metrics.drops["fanout_error"] += len(fresh)
            finally:
                self._finish(low)
        elapsed_ms = (time.perf_counter() - started) * 1000
        duplicates = len(events) - len(fresh)
        self.metrics.count_ingest(len(fresh), duplicates, rejected, elapsed_ms)
        return IngestResult(outcomes, processed, elapsed_ms, sessions)

    async def _wait_for_room(self, events: list[Event]) -> None:
        """Push back before anything is stored: when an actor this request needs has a full
        mailbox, wait for room, and answer 503 (Overloaded) if that lasts BACKPRESSURE_S. Refusing
        before the commit means a client's retry can never store an event twice."""
        keys = {("session", e.project, e.session_id) for e in events if e.session_id}
        keys |= {("user", e.project, e.user_id) for e in events if e.user_id}
        keys = {key for key in keys if self.router.owns(key)}  # an owner elsewhere pushes back itself
        if await self.actors.wait_for_room(keys, timeout=BACKPRESSURE_S):
            return
        self.metrics.drops["backpressure_503"] += 1
        raise Overloaded("live processing is saturated; retry later", retry_after=1.0)

    async def _process(self, fresh: list[Event]) -> tuple[bool, dict[str, Any]]:
        """Tell each session and user actor its share of the batch: one message per actor."""
        if not fresh:
            return True, {}
        requests = _requests(fresh, steps=self.fanout.wanted(fresh[0].project))
        if not requests:
            return True, {}
        replies = await self.router.ask_many(requests, timeout=PROCESS_TIMEOUT_S)
        failures = [reply for reply in replies if isinstance(reply, ActorError)]
        if failures:
            # The events are durable; live state catches up when the actor is next rebuilt.
            self.metrics.processing_failures += 1
            log.warning("processing failed after commit for %d of %d actors: %s", len(failures), len(replies), failures[0])
        sessions = {
            key[2]: reply
            for (key, _), reply in zip(requests, replies, strict=True)
            if key[0] == "session" and not isinstance(reply, ActorError)
        }
        return not failures, sessions

    async def _publish(self, fresh: list[Event], sessions: dict[str, Any]) -> None:
        project = fresh[0].project
        if not self.fanout.wanted(project):
            return
        messages: list[Message] = []
        steps: dict[int, Any] = {}
        for session in sessions.values():  # per-event insights travel apart from the session
            if getattr(session, "steps", None):
                steps.update(session.steps)
                session.steps = None
        for event in fresh:
            attrs = Attrs(event.session_id, event.user_id, event.service_name, event.name)
            messages.append((KIND_EVENT, attrs, event_message(event), event.seq))
            if event.source == SOURCE_BEHAVIORAL or event.session_id:
                session = sessions.get(event.session_id) if event.session_id else None
                messages.append((KIND_BEHAVIORAL, attrs, behavioral_message(event, session, steps.get(event.seq)), event.seq))
        published: set[str] = set()
        for event in fresh:
            if event.session_id and event.session_id in sessions and event.session_id not in published:
                published.add(event.session_id)
                attrs = Attrs(event.session_id, event.user_id, event.service_name, event.name)
                messages.append((KIND_METRICS, attrs, metrics_message(sessions[event.session_id]), 0))
        await self.fanout.publish(project, messages)


def _requests(events: list[Event], *, steps: bool = False) -> ActorRequests:
    """One ApplyEvents message per session actor and per user actor the events concern."""
    by_session: dict[tuple[str, str], list[Event]] = defaultdict(list)
    by_user: dict[tuple[str, str], list[Event]] = defaultdict(list)
    for event in events:
        if event.session_id:
            by_session[(event.project, event.session_id)].append(event)
        if event.user_id:
            by_user[(event.project, event.user_id)].append(event)
    requests: ActorRequests = [
        (("session", project, sid), ApplyEvents(events=evs, steps=steps)) for (project, sid), evs in by_session.items()
    ]
    requests += [(("user", project, uid), ApplyEvents(events=evs)) for (project, uid), evs in by_user.items()]
    return requests
