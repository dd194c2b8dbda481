"""The ingest pipeline: commit, then process in the actors, then fan out. One call per request.

Order matters for idempotency: the store decides which events are new (client-id dedup) before any
actor sees them, so a retried event is never counted twice in live state. The commit is a group
commit shared with concurrent requests, so it costs a few milliseconds, not one fsync per request.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

import msgspec
import trio

from actors.automation import records as automation_records
from actors.automation.engine import Fired
from actors.automation.workflows import is_workflow_id
from actors.cluster import ActorRouter
from actors.fanout import Fanout, Message
from actors.hub import KIND_BEHAVIORAL, KIND_EVENT, KIND_METRICS, KIND_TRIGGER, Attrs
from actors.metrics import Metrics
from actors.privacy.consent import GPC_FLAGS, ConsentBook
from actors.projection import ApplyEvents
from actors.runtime import ActorError, ActorSystem
from protocol.privacy import Dropped
from protocol.record import SOURCE_BEHAVIORAL, AppendOutcome, Event
from protocol.views import behavioral_message, event_message, metrics_message
from storage.base import Store
from storage.trigger_records import Execution, SessionMark

log = logging.getLogger("pulse.ingest")

PROCESS_TIMEOUT_S: Final = 5.0  # actors must take and process a batch within this
BACKPRESSURE_S: Final = 2.0  # how long a request waits for room in full actor mailboxes before 503

ActorRequests = list[tuple[tuple[str, str, str], Any]]
Groups = list[tuple[tuple[str, str, str], list[Event]]]  # actor key -> its share of a request's events
FiredInSession = tuple[str, str | None, Fired]  # session id, user id, the firing


class Overloaded(Exception):
    """The server cannot take this request now; the edge answers 503 with Retry-After."""

    def __init__(self, reason: str, retry_after: float = 1.0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class IngestResult:
    __slots__ = ("outcomes", "processed", "elapsed_ms", "sessions", "fired", "dropped")

    def __init__(
        self, outcomes: list[AppendOutcome], processed: bool, elapsed_ms: float, sessions: dict,
        fired: list[FiredInSession] | None = None,
    ) -> None:  # fmt: skip
        self.outcomes = outcomes
        self.processed = processed
        self.elapsed_ms = elapsed_ms
        self.sessions = sessions  # session id -> SessionView after this request
        self.fired = fired or []  # the triggers this request's events fired (actors/automation/)
        # None when every event was stored; else one entry per event given to ingest(), in order:
        # why it was not stored (protocol/privacy.py), or None. ``outcomes`` has the others only.
        self.dropped: list[Dropped | None] | None = None


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
        # Called with each request's new events once committed and processed (the webhooks' event
        # types, server/webhooks/service.py): synchronous, never blocks; one dict get when unused.
        self.after_commit: Callable[[list[Event]], None] | None = None
        # Called with (project, data, dedup key) for each trigger firing (the trigger_fired webhooks);
        # synchronous, never blocks.
        self.on_trigger_fired: Callable[[str, dict[str, Any], str], None] | None = None
        # Called with (project, firings) when workflows fired (server/workflow_scheduler.py): stores
        # their actions durably before the request is answered.
        self.on_workflow_fired: Callable[[str, list[FiredInSession]], Awaitable[None]] | None = None
        # project -> session -> the user it is linked to (actors/identity/directory.py): a subscriber
        # on that userId hears the session's events even when they carry no userId. Only projects
        # with links have an entry.
        self.linked_users: dict[str, dict[str, str]] = {}
        # The consent stage (actors/privacy/consent.py): stamps each event's consent flags and
        # drops the events without analytics consent, before the commit. None: everything passes.
        self.consent: ConsentBook | None = None
        # Adaptive sampling (server/privacy/ingest_gate.py ``sample``), after the consent stage: one
        # entry per event (a Dropped for those sampled out), or None when every event goes on.
        self.sample: Callable[[list[Event]], list[Dropped | None] | None] | None = None

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
            return
        del self._in_flight[low]
        lows = self._lows
        while lows and lows[0] not in self._in_flight:  # keeps the heap as small as what is in flight
            heapq.heappop(lows)

    async def ingest(self, events: list[Event], *, started: float, rejected: int = 0, gpc: bool = False) -> IngestResult:
        """Store ``events`` durably, process them, publish the new ones. ``started`` = perf_counter()
        at receipt; ``gpc``: the request carried ``Sec-GPC: 1``. Raises Overloaded (nothing
        acknowledged) or StoreError. Events the consent stage drops are not stored (``dropped``).

        One cancel scope per request, and only one: the wait for room opens its own only when a
        mailbox is full, the store's and the actors' deadlines are theirs (an ask waits under one
        only when an actor could not fold the message at once). The shield is what keeps the
        promise "committed means processed and published": the request's task is cancelled when
        its client goes away or the server shuts down, and from the hand-over to the writer to
        the fan-out that must not cut it short. The store's deadline (StoreUnavailable) and
        PROCESS_TIMEOUT_S bound it."""
        dropped: list[Dropped | None] | None = None
        if events:
            consent = self.consent
            if consent is not None:
                dropped = consent.gate(events, gpc, self.metrics.drops)
                if dropped is not None:
                    events = [event for event, why in zip(events, dropped, strict=True) if why is None]
            elif gpc:
                for event in events:
                    event.flags |= GPC_FLAGS
            sample = self.sample
            if sample is not None and events:
                sampled = sample(events)
                if sampled is not None:
                    dropped = sampled if dropped is None else _merged(dropped, sampled)
                    events = [event for event, why in zip(events, sampled, strict=True) if why is None]
        groups = _groups(events)
        await self._wait_for_room(groups)
        with trio.CancelScope(shield=True):
            result = await self._commit_and_process(events, groups, started, rejected)
            if events:  # a request is one project's: its rate for the project's SSE stats
                self.metrics.count_project_ingest(events[0].project, len(result.outcomes))
        result.dropped = dropped
        return result

    async def _commit_and_process(
        self, events: list[Event], groups: Groups, started: float, rejected: int
    ) -> IngestResult:
        if not events:
            return self._done([], True, {}, started, 0, rejected)
        outcomes: list[AppendOutcome] = await self.store.append(events)
        duplicates = 0
        for event, outcome in zip(events, outcomes, strict=True):
            event.id = outcome.id
            event.seq = outcome.seq
            if outcome.duplicate:
                duplicates += 1
        # Every event goes to its actors, the duplicates too: a retry's first attempt may have been
        # committed after its caller gave up (a 503 that was in fact stored), and the actors apply
        # each seq only once.
        if duplicates == len(events):
            processed, sessions = await self._process(events, groups)
            fired = await self._triggers_fired(events[0].project, sessions)
            return self._done(outcomes, processed, sessions, started, 0, rejected, fired)
        fresh = events if not duplicates else [e for e, o in zip(events, outcomes, strict=True) if not o.duplicate]
        low = high = fresh[0].seq
        for event in fresh:
            seq = event.seq
            if seq < low:
                low = seq
            elif seq > high:
                high = seq
        self._begin(low, high)
        try:
            processed, sessions = await self._process(events, groups)
            fired = await self._triggers_fired(fresh[0].project, sessions)
            if self.after_commit is not None:
                try:
                    self.after_commit(fresh)
                except Exception:  # stored and processed: a hook's bug must not fail the request
                    log.exception("after-commit hook failed")
                    self.metrics.drops["after_commit_error"] += len(fresh)
            if self.fanout.wanted(fresh[0].project):
                try:
                    await self._publish(fresh, sessions, fired)
                except Exception:  # stored and processed: a fan-out bug must not fail the request
                    log.exception("fan-out failed")
                    self.metrics.drops["fanout_error"] += len(fresh)
        finally:
            self._finish(low)
        return self._done(outcomes, processed, sessions, started, len(fresh), rejected, fired)

    def _done(
        self, outcomes: list[AppendOutcome], processed: bool, sessions: dict[str, Any], started: float,
        fresh: int, rejected: int, fired: list[FiredInSession] | None = None,
    ) -> IngestResult:  # fmt: skip
        elapsed_ms = (time.perf_counter() - started) * 1000
        self.metrics.count_ingest(fresh, len(outcomes) - fresh, rejected, elapsed_ms)
        return IngestResult(outcomes, processed, elapsed_ms, sessions, fired)

    async def _triggers_fired(self, project: str, sessions: dict[str, Any]) -> list[FiredInSession]:
        """Record what the sessions' triggers did (durably, before the request is answered: "fired
        once per session" and the executions survive a restart), hand each firing to the webhooks,
        and return the firings for the answer and the stream."""
        marks: list[SessionMark] = []
        executions: list[Execution] = []
        fired: list[FiredInSession] = []
        for session_id, reply in sessions.items():
            activity = getattr(reply, "trigger_activity", None)
            if not activity:
                continue
            user_id = reply.user_id
            marks += automation_records.session_marks(project, session_id, activity)
            for item in reply.fired or ():
                executions.append(automation_records.execution(project, session_id, user_id, item))
                fired.append((session_id, user_id, item))
            reply.trigger_activity = reply.fired = msgspec.UNSET  # not part of the session's stream messages
        if not marks:
            return fired
        try:
            await self.store.record_trigger_activity(marks, executions)
        except Exception:  # StoreError: the events are stored; the marks are in the actors' state
            log.exception("recording trigger activity failed")
            self.metrics.drops["trigger_record_failed"] += len(marks)
        hook = self.on_trigger_fired
        if hook is not None:
            for session_id, user_id, item in fired:
                if item.executed and not is_workflow_id(item.trigger_id):  # a workflow's actions notify
                    try:
                        hook(project, automation_records.webhook_data(item, session_id, user_id), item.execution_id)
                    except Exception:  # a hook's bug must not fail the request
                        log.exception("trigger_fired hook failed")
                        self.metrics.drops["trigger_hook_error"] += 1
        schedule = self.on_workflow_fired
        if schedule is not None:
            workflows = [f for f in fired if f[2].executed and is_workflow_id(f[2].trigger_id)]
            if workflows:
                try:
                    await schedule(project, workflows)
                except Exception:  # StoreError: the events are stored; these actions are lost, counted
                    log.exception("scheduling workflow actions failed")
                    self.metrics.drops["workflow_schedule_failed"] += len(workflows)
        return fired

    async def _wait_for_room(self, groups: Groups) -> None:
        """Push back before anything is stored: when an actor this request needs has a full
        mailbox, wait for room, and answer 503 (Overloaded) if that lasts BACKPRESSURE_S. Refusing
        before the commit means a client's retry can never store an event twice."""
        owns = self.router.owns  # an owner elsewhere pushes back itself
        if await self.actors.wait_for_room([key for key, _ in groups if owns(key)], timeout=BACKPRESSURE_S):
            return
        self.metrics.drops["backpressure_503"] += 1
        raise Overloaded("live processing is saturated; retry later", retry_after=1.0)

    async def _process(self, events: list[Event], groups: Groups) -> tuple[bool, dict[str, Any]]:
        """Tell each session and user actor its share of the batch: one message per actor."""
        if not groups:
            return True, {}
        steps = self.fanout.wanted(events[0].project)
        requests: ActorRequests = [
            (key, ApplyEvents(events=evs, steps=steps and key[0] == "session")) for key, evs in groups
        ]
        replies = await self.router.ask_many(requests, timeout=PROCESS_TIMEOUT_S)
        sessions: dict[str, Any] = {}
        failures = 0
        first: ActorError | None = None
        for (key, _), reply in zip(groups, replies, strict=True):
            if isinstance(reply, ActorError):
                failures += 1
                first = first or reply
            elif key[0] == "session":
                sessions[key[2]] = reply
        if failures:
            # The events are durable; live state catches up when the actor is next rebuilt.
            self.metrics.processing_failures += 1
            log.warning("processing failed after commit for %d of %d actors: %s", failures, len(replies), first)
        return not failures, sessions

    async def _publish(self, fresh: list[Event], sessions: dict[str, Any], fired: list[FiredInSession]) -> None:
        project = fresh[0].project
        messages: list[Message] = []
        steps: dict[int, Any] = {}
        for session in sessions.values():  # per-event insights travel apart from the session
            if getattr(session, "steps", None):
                steps.update(session.steps)
                session.steps = None
        published: set[str] = set()
        metrics: list[Message] = []
        linked = self.linked_users.get(project)  # one lookup per request; None without links
        for event in fresh:
            user_id = event.user_id
            if linked is not None and not user_id and event.session_id:
                user_id = linked.get(event.session_id)
            attrs = Attrs(event.session_id, user_id, event.service_name, event.name)
            messages.append((KIND_EVENT, attrs, event_message(event), event.seq))
            session_id = event.session_id
            if event.source == SOURCE_BEHAVIORAL or session_id:
                session = sessions.get(session_id) if session_id else None
                messages.append((KIND_BEHAVIORAL, attrs, behavioral_message(event, session, steps.get(event.seq)), event.seq))
            if session_id and session_id in sessions and session_id not in published:
                published.add(session_id)
                metrics.append((KIND_METRICS, attrs, metrics_message(sessions[session_id]), 0))
        messages += metrics
        for session_id, user_id, item in fired:  # to the session's conversion_triggers subscribers
            if item.executed and not is_workflow_id(item.trigger_id):  # workflows push their actions
                heard_by = linked.get(session_id) if linked is not None and not user_id else user_id
                attrs = Attrs(session_id, heard_by, None, item.event_type)
                messages.append((KIND_TRIGGER, attrs, automation_records.notification(item, session_id, user_id), item.seq))
        await self.fanout.publish(project, messages)


def _merged(first: list[Dropped | None], then: list[Dropped | None]) -> list[Dropped | None]:
    """One entry per event from two stages: ``then`` has an entry per event ``first`` let through."""
    later = iter(then)
    return [why if why is not None else next(later) for why in first]


def _groups(events: list[Event]) -> Groups:
    """The events of each session actor and each user actor, in request order: sessions first."""
    if len(events) == 1:  # the single-event request: no grouping at all
        event = events[0]
        groups: Groups = []
        if event.session_id:
            groups.append((("session", event.project, event.session_id), events))
        if event.user_id:
            groups.append((("user", event.project, event.user_id), events))
        return groups
    by_session: dict[tuple[str, str, str], list[Event]] = {}
    by_user: dict[tuple[str, str, str], list[Event]] = {}
    for event in events:
        if event.session_id:
            key = ("session", event.project, event.session_id)
            share = by_session.get(key)
            if share is None:
                by_session[key] = [event]
            else:
                share.append(event)
        if event.user_id:
            key = ("user", event.project, event.user_id)
            share = by_user.get(key)
            if share is None:
                by_user[key] = [event]
            else:
                share.append(event)
    return [*by_session.items(), *by_user.items()]
