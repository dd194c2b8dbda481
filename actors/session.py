"""The SessionActor: live state of one session (key ``("session", project, sessionId)``).

It folds the session's events into pages visited, time on page, scroll depth and activity bounds,
and answers every ApplyEvents with a SessionView. Memory per session is bounded: only the last
PAGES_KEPT pages are kept (with a counter of the dropped ones), so a session that runs for days
costs the same as one that runs for minutes.

Pages are kept ordered by (enteredAt, seq) even when a late page view arrives after newer ones, so
the state does not depend on how the events were batched; the current page is the latest one.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Final

import msgspec

from actors.automation.engine import (
    Activity,
    Fired,
    LiveContext,
    SessionTriggers,
    TriggerMark,
    commit_pending,
    merge_marks,
)
from actors.automation.index import TriggerIndex
from actors.insights import scores
from actors.insights.insight import InsightCache, SessionInsights, StepInsight
from actors.insights.journey import SESSION_GAP_MS, JourneyEvent
from actors.insights.service import InsightService
from actors.insights.tracker import JourneyLog, JourneyTracker
from actors.payload import PAGE_VIEW_NAMES, PayloadInfo, extract
from actors.projection import ApplyEvents, GetView, ProjectionActor
from actors.runtime import ActorKey, ActorStore
from protocol.privacy import FLAG_NO_MARKETING, FLAG_NO_PERSONALIZATION
from protocol.record import Event

__all__ = ["ApplyEvents", "GetView", "PageVisit", "SessionActor", "SessionSummary", "SessionView", "PAGES_KEPT", "KIND"]

KIND: Final = "session"
STEPS_FROM_REPLAY: Final = 64  # an activating batch's per-event insights kept (the rest: the batch's)
PAGES_KEPT: Final = 100
SCROLLS_KEPT: Final = 64


# state (msgpack in snapshots) --------------------------------------------------------------------
class PageState(msgspec.Struct, array_like=True):
    url: str
    entered_at: int  # unix ms
    seq: int  # of the page-view event: orders two page views with the same timestamp
    scroll: float = 0.0  # max scroll depth seen on this page, 0..1
    last_seen: int = -1  # event time of the page's latest event within its journey (-1: entered_at)


class SessionState(msgspec.Struct, kw_only=True):
    session_id: str
    user_id: str | None = None
    device_type: str | None = None
    event_count: int = 0
    page_views: int = 0
    pages: list[PageState] = msgspec.field(default_factory=list)  # ordered by (entered_at, seq)
    pages_dropped: int = 0
    unpaged_scroll: float = 0.0  # max scroll seen before the first page view
    max_scroll: float = 0.0
    started_at: int | None = None
    last_activity: int | None = None
    last_event_type: str | None = None
    last_event_order: tuple[int, int] = (0, 0)  # (timestamp, seq) of last_event_type's event
    # The latest SCROLLS_KEPT scrolls as (timestamp, seq, depth), by order, so a page view that
    # arrives after scrolls that belong to it can take them back from the page before it.
    scrolls: list[tuple[int, int, float]] = msgspec.field(default_factory=list)
    scrolls_dropped_upto: tuple[int, int] = (0, 0)  # order of the latest scroll no longer kept
    journeys: JourneyLog = msgspec.field(default_factory=JourneyLog)  # what the insights see (tracker.py)
    # trigger id -> what it did in this session: "fired once" survives passivation (actors/automation/engine.py)
    triggers: dict[str, TriggerMark] = msgspec.field(default_factory=dict)


# view (the reply, JSON on the wire) --------------------------------------------------------------
class PageVisit(msgspec.Struct, rename="camel"):
    url: str
    entered_at: int  # unix ms
    time_on_page_ms: int


class SessionView(msgspec.Struct, kw_only=True, rename="camel"):
    session_id: str
    user_id: str | None
    device_type: str | None
    event_count: int
    page_views: int  # every page view seen, including the dropped ones
    pages: list[PageVisit]  # the last PAGES_KEPT pages, oldest first
    pages_dropped: int
    current_page: str | None
    time_on_page_ms: int  # on the current page: lastActivity - its enteredAt
    scroll_depth: float  # max depth on the current page, 0..1
    max_scroll_depth: float  # max depth over the whole session, 0..1
    started_at: int | None  # min event timestamp, unix ms
    last_activity: int | None  # max event timestamp, unix ms
    last_event_type: str | None  # name of the latest event by (timestamp, seq)
    insights: SessionInsights | None = None  # engagement, intent, patterns, predictions (docs/insights.md)


class SessionSummary(msgspec.Struct, kw_only=True, rename="camel"):
    """The session's live metrics after a batch (the ``session`` of stream messages): the view
    without its page list, so each ingest does not rebuild up to PAGES_KEPT page objects."""

    session_id: str
    user_id: str | None
    device_type: str | None
    event_count: int
    page_views: int
    current_page: str | None
    time_on_page_ms: int
    scroll_depth: float
    max_scroll_depth: float
    started_at: int | None
    last_activity: int | None
    last_event_type: str | None
    insights: SessionInsights | None = None
    steps: dict[int, StepInsight] | None = None  # per event seq, when asked for: the state after it
    # What this batch's events made the project's triggers do (actors/automation/engine.py); UNSET
    # (left out of the JSON of stream messages) unless something happened.
    fired: list[Fired] | msgspec.UnsetType = msgspec.UNSET
    trigger_activity: list[Activity] | msgspec.UnsetType = msgspec.UNSET


def _page_order(page: PageState) -> tuple[int, int]:
    return (page.entered_at, page.seq)


class SessionActor(ProjectionActor[SessionState, SessionView]):
    state_type = SessionState

    def __init__(
        self, key: ActorKey, store: ActorStore, insights: InsightService | None = None, triggers: TriggerIndex | None = None
    ) -> None:
        super().__init__(key, store)
        self.insights = insights or InsightService()
        self.triggers = triggers
        self.automation = SessionTriggers(triggers, self.project, self.ident) if triggers is not None else None
        self._fired: list[Fired] = []  # this batch's firings and trigger activity, for its reply
        self._activity: list[Activity] = []
        # During an activation replay triggers are evaluated against a copy of the marks, and what
        # they find waits here for the ApplyEvents that caused the activation (commit_pending).
        self._replaying = False
        self._scratch_marks: dict[str, TriggerMark] | None = None
        self.cache = InsightCache()
        self.steps: dict[int, StepInsight] | None = None  # filled while a batch asks for per-event insights
        self._replayed_steps: dict[int, StepInsight] = {}
        self._steps_tail = 0  # during an activation replay: how many of the newest events get steps
        self._tracker: JourneyTracker | None = None

    def initial_state(self) -> SessionState:
        return SessionState(session_id=self.ident)

    async def load_events(self, after_seq: int) -> list[Event]:
        return await self.store.session_events(self.project, self.ident, after_seq)

    def apply(self, events: list[Event]) -> None:
        state = self.state
        tracker = self.tracker()
        journeys = state.journeys
        pages = state.pages  # changed in place only
        steps = self.steps
        # per-event insights cost ~20 µs each: an activation replay keeps only its newest ones
        first_step = len(events) - self._steps_tail if self._steps_tail else 0
        for index, event in enumerate(events):
            info = extract(event)
            ts = event.timestamp
            seq = event.seq
            url, scroll, device_type = info.url, info.scroll_depth, info.device_type
            user_id = event.user_id
            name = event.name.lower()
            page_view = name in PAGE_VIEW_NAMES
            flags = event.flags
            # no personalization consent (actors/privacy/consent.py): the insights never see the
            # event (the journey feeds engagement, intent, patterns and the models); it still
            # counts in the session's live state below
            if not flags & FLAG_NO_PERSONALIZATION:
                tracker.add(JourneyEvent(ts, seq, name, url, scroll, page_view))
                journey = journeys.journey  # the fold may have started a new one
                if user_id and journey.user_id != user_id:
                    journey.user_id = user_id
                if device_type and journey.device_type != device_type:
                    journey.device_type = device_type
                if info.persona and journey.persona != info.persona:
                    journey.persona = info.persona
                if steps is not None and index >= first_step:
                    steps[seq] = self.cache.step(self.project, self.ident, tracker.settle(), self.insights)
            if pages:
                last = pages[-1]
                if ts >= last.entered_at and ts - max(last.last_seen, last.entered_at) <= SESSION_GAP_MS and ts > last.last_seen:
                    last.last_seen = ts
            state.event_count += 1
            if user_id:
                state.user_id = user_id
            if device_type:
                state.device_type = device_type
            if state.started_at is None or ts < state.started_at:
                state.started_at = ts
            if state.last_activity is None or ts > state.last_activity:
                state.last_activity = ts
            order = (ts, seq)
            if order >= state.last_event_order:
                state.last_event_order = order
                state.last_event_type = event.name
            if page_view:
                state.page_views += 1
                if url is not None:  # a page view without a url is counted, not listed
                    self._add_page(PageState(url, ts, seq))
            if scroll is not None:
                self._add_scroll(order, scroll)
            automation = self.automation
            # no marketing consent (or Sec-GPC): no trigger or workflow acts on the event
            if automation is not None and not flags & FLAG_NO_MARKETING and (
                state.triggers or automation.index.has_project(self.project)
            ):
                self._evaluate(automation, event, info)

    def _evaluate(self, automation: SessionTriggers, event: Event, info: PayloadInfo) -> None:
        """The project's triggers on this event, against the state right after it."""
        if self._replaying:
            if self._scratch_marks is None:
                self._scratch_marks = {k: msgspec.structs.replace(v) for k, v in self.state.triggers.items()}
            marks = self._scratch_marks
        else:
            marks = self.state.triggers
        if not marks and not automation.index.for_event(self.project, event.name):
            return
        context = LiveContext(event, info, self)
        automation.on_event(event, context, marks, self.insights.conversions(self.project), self._activity, self._fired)

    # the live fields of the trigger conditions (actors/automation/engine.py LiveContext)
    def live_step(self) -> StepInsight:
        return self.cache.step(self.project, self.ident, self.tracker().settle(), self.insights)

    def live_engagement(self) -> float:
        return scores.engagement(self.tracker().settle()).score

    def live_intent(self) -> float:
        journey = self.tracker().settle()
        prediction, _, _ = self.cache.prediction(self.project, self.ident, journey, self.insights)
        return scores.intent(journey, prediction).purchase_intent

    def live_time_on_page(self) -> int:
        """As in the summary: event time on the current page (0 before the first page view)."""
        pages = self.state.pages
        return self._page_time(pages[-1]) if pages else 0

    def live_scroll(self) -> float:
        pages = self.state.pages
        return pages[-1].scroll if pages else self.state.unpaged_scroll

    def live_url(self) -> str | None:
        pages = self.state.pages
        return pages[-1].url if pages else None

    def tracker(self) -> JourneyTracker:
        """The journey tracker of the current state (a new one after activation replaced it)."""
        tracker = self._tracker
        if tracker is None or tracker.log is not self.state.journeys:
            tracker = self._tracker = JourneyTracker(
                self.state.journeys,
                conversions=lambda: self.insights.conversions(self.project),
                on_finished=lambda journey: self.insights.complete(self.project, scores.completed(journey, self.ident)),
            )
        return tracker

    def _add_page(self, page: PageState) -> None:
        pages = self.state.pages
        if not pages or _page_order(page) >= _page_order(pages[-1]):
            index = len(pages)
            pages.append(page)  # the common case: pages arrive in order
        else:
            index = bisect_right(pages, _page_order(page), key=_page_order)
            pages.insert(index, page)
        if self.state.scrolls and self.state.scrolls[-1][:2] >= _page_order(page):
            self._recredit_scrolls(index)  # scrolls of this page arrived before it
        if len(pages) > PAGES_KEPT:
            del pages[0]
            self.state.pages_dropped += 1

    def _recredit_scrolls(self, index: int) -> None:
        """Give the page at ``index`` the kept scrolls in its time span, and recompute the span
        before it (the page, or the pre-page scroll) when every scroll of that span is kept."""
        state = self.state
        pages = state.pages
        start = _page_order(pages[index])
        end = _page_order(pages[index + 1]) if index + 1 < len(pages) else None

        def deepest(low: tuple[int, int] | None, high: tuple[int, int] | None) -> float:
            return max(
                (d for ts, seq, d in state.scrolls if (low is None or (ts, seq) >= low) and (high is None or (ts, seq) < high)),
                default=0.0,
            )

        pages[index].scroll = max(pages[index].scroll, deepest(start, end))
        before = _page_order(pages[index - 1]) if index > 0 else None
        if state.scrolls_dropped_upto < (before or (0, 0)) or (before is None and state.scrolls_dropped_upto == (0, 0)):
            if index > 0:
                pages[index - 1].scroll = deepest(before, start)
            elif state.pages_dropped == 0:
                state.unpaged_scroll = deepest(None, start)

    def _add_scroll(self, order: tuple[int, int], depth: float) -> None:
        """Credit ``depth`` to the page that was open at ``order`` (and to the session maximum)."""
        state = self.state
        state.max_scroll = max(state.max_scroll, depth)
        scroll = (order[0], order[1], depth)
        if not state.scrolls or scroll >= state.scrolls[-1]:
            state.scrolls.append(scroll)
        else:
            state.scrolls.insert(bisect_right(state.scrolls, scroll), scroll)
        if len(state.scrolls) > SCROLLS_KEPT:
            dropped = state.scrolls.pop(0)
            state.scrolls_dropped_upto = max(state.scrolls_dropped_upto, dropped[:2])
        pages = state.pages
        if pages and order >= _page_order(pages[-1]):
            page: PageState | None = pages[-1]
        else:
            index = bisect_right(pages, order, key=_page_order) - 1
            page = pages[index] if index >= 0 else None
        if page is not None:
            page.scroll = max(page.scroll, depth)
        elif state.pages_dropped == 0:  # before the first page view (not a dropped page's scroll)
            state.unpaged_scroll = max(state.unpaged_scroll, depth)

    async def activate(self) -> None:
        # The batch that activates an actor is already committed, so the replay applies it, and
        # the ApplyEvents that follows finds nothing new: keep the replay's per-event insights of
        # its newest STEPS_FROM_REPLAY events for it (older ones fall back to the batch's state).
        self.steps, self._steps_tail = {}, STEPS_FROM_REPLAY
        self._replaying, self._scratch_marks = True, None
        try:
            await super().activate()
            self._replayed_steps = self.steps
        finally:
            self.steps, self._steps_tail = None, 0
            self._replaying, self._scratch_marks = False, None
        await self._load_trigger_marks()

    async def _load_trigger_marks(self) -> None:
        """Merge what the Store recorded about this session's triggers into the snapshot's marks:
        a snapshot older than the last firing (a crash) must not let a trigger fire twice."""
        if self.triggers is None or not self.triggers.count(self.project):
            return
        read = getattr(self.store, "trigger_session_marks", None)
        if read is None:  # an actor store without triggers (unit tests)
            return
        merge_marks(self.state.triggers, await read(self.project, self.ident))

    def apply_events(self, msg: ApplyEvents) -> SessionSummary:
        self.steps = {} if msg.steps else None
        if self.steps is not None and self._replayed_steps:
            self.steps.update((e.seq, self._replayed_steps[e.seq]) for e in msg.events if e.seq in self._replayed_steps)
        self._replayed_steps = {}
        pending_activity, pending_fired = self._activity, self._fired  # from an activation replay, if any
        self._activity, self._fired = [], []
        try:
            reply: SessionSummary = super().apply_events(msg)
        finally:
            self.steps = None
        if pending_activity and self.triggers is not None:
            seqs = {e.seq for e in msg.events}
            kept, fired = commit_pending(
                self.state.triggers, self.triggers, self.project,
                [a for a in pending_activity if a.seq in seqs], [f for f in pending_fired if f.seq in seqs],
            )  # fmt: skip
            self._activity[:0], self._fired[:0] = kept, fired
            self.dirty = self.dirty or bool(kept)
        if self._activity:
            reply.trigger_activity, reply.fired = self._activity, self._fired or msgspec.UNSET
            self._activity, self._fired = [], []
        if self.state.journeys.events:
            self.insights.touch(self.project, self.ident, self.tracker())
        return reply

    def reply_each(self, reply: SessionSummary, run: list[ApplyEvents]) -> list[SessionSummary]:
        """Each message of a run applied together gets the summary after the run, with the
        per-event insights of its own events only (the ingest path takes them out of its reply)."""
        steps = reply.steps
        if not steps and not reply.trigger_activity:
            return [reply] * len(run)
        replies = []
        for msg in run:
            seqs = {e.seq for e in msg.events}
            own = {s: steps[s] for s in seqs if s in steps} if steps and msg.steps else None
            activity = [a for a in reply.trigger_activity or () if a.seq in seqs] or msgspec.UNSET
            fired = [f for f in reply.fired or () if f.seq in seqs] or msgspec.UNSET
            replies.append(msgspec.structs.replace(reply, steps=own or None, trigger_activity=activity, fired=fired))
        return replies

    def insight(self) -> SessionInsights:
        return self.cache.insights(self.project, self.ident, self.tracker().settle(), self.insights)

    def summary(self, insights: bool | None = None) -> SessionSummary:
        """The live metrics; the insights only when asked (a GetView, or a batch whose events are
        published): computing them costs more than applying a page view, and nobody may read them."""
        state = self.state
        if insights is None:
            insights = self.steps is not None
        if insights:
            self.tracker().settle()  # everything below reads the journey as of the newest event
        current = state.pages[-1] if state.pages else None
        time_on_page = self._page_time(current) if current else 0
        steps = self.steps
        return SessionSummary(
            session_id=state.session_id,
            user_id=state.user_id,
            device_type=state.device_type,
            event_count=state.event_count,
            page_views=state.page_views,
            current_page=current.url if current else None,
            time_on_page_ms=time_on_page,
            scroll_depth=current.scroll if current else state.unpaged_scroll,
            max_scroll_depth=state.max_scroll,
            started_at=state.started_at,
            last_activity=state.last_activity,
            last_event_type=state.last_event_type,
            insights=self.insight() if insights and state.journeys.events else None,
            steps=dict(steps) if steps else None,
        )

    def _page_time(self, page: PageState) -> int:
        """Event time on a page with no later page in its journey: to the journey's latest event
        while the page belongs to the current journey, else to the page's own latest event."""
        journey = self.state.journeys.journey
        if self.state.journeys.events and page.entered_at >= journey.started_at:
            return max(0, self.tracker().last_at() - page.entered_at)
        return max(0, page.last_seen - page.entered_at)

    def view(self) -> SessionView:
        """The summary plus the page list (built only when asked for: GetView)."""
        state = self.state
        self.tracker().settle()
        pages = state.pages
        visits: list[PageVisit] = []
        for i, page in enumerate(pages):
            # event time only, within the page's journey: the next page's opening if it came
            # before a session gap, else the page's own last event
            after = pages[i + 1].entered_at if i + 1 < len(pages) else None
            last = max(page.last_seen, page.entered_at)
            if after is not None and after - last <= SESSION_GAP_MS:
                visits.append(PageVisit(page.url, page.entered_at, max(0, after - page.entered_at)))
            else:
                visits.append(PageVisit(page.url, page.entered_at, self._page_time(page)))
        summary = msgspec.structs.asdict(self.summary(insights=True))
        del summary["steps"], summary["fired"], summary["trigger_activity"]
        return SessionView(**summary, pages=visits, pages_dropped=state.pages_dropped)


def session_factory(key: ActorKey, store: ActorStore) -> SessionActor:
    """The ActorSystem factory for kind "session"."""
    return SessionActor(key, store)
