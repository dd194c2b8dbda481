"""Suggestions per project: computed off the hot path, cached, read by the track routes with a dict
lookup, and answered fresh by ``GET /api/events/suggestions``.

The rules are sans-IO (actors/insights/suggestions.py); this module reads what they need from the
store (four ``service_stats`` windows and, for services slow on average, the response times of their
latest events) and keeps the findings per project.

- Track answers (thousands per second) never read the store: ``for_event`` / ``for_batch`` look the
  project up in a dict and return at most TRACK_MAX suggestions about the event's service or name
  (memoised per (service, name) until the next refresh). A project seen for the first time answers
  ``[]`` and wakes the refresher.
- ``run`` is the refresher, a task owned by the server's services nursery: every REFRESH_S it
  recomputes the projects whose cache was read since its last pass, and only when something was
  committed since (``Store.max_seq``) or RECOMPUTE_AFTER_S passed (the windows move with time).
  Projects not read for IDLE_DROP_S are forgotten, so memory follows the active projects.
- ``fresh`` is single-flight per project with a deadline (COMPUTE_TIMEOUT_S): concurrent callers
  share one computation; a caller that must see writes committed before it asked never takes a
  result whose reads started before them (read-your-writes on one node; within ROUTE_MAX_AGE_S
  across a cluster).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Final

import trio

from actors.insights.suggestions import Finding, Windows, about, slow_candidates, suggest, touching
from protocol.record import Event
from protocol.tracking import AISuggestion, SuggestionsContext, SuggestionsResponse
from server.params import int_param, text_param
from storage.base import EventFilter, Store, StoreError, StoreUnavailable

log = logging.getLogger("pulse.suggestions")

REFRESH_S: Final = 5.0  # the refresher's period
MIN_PASS_GAP_S: Final = 1.0  # at most one refresher pass per this, however often it is woken
RECOMPUTE_AFTER_S: Final = 60.0  # recompute even without new events (the windows move)
ROUTE_MAX_AGE_S: Final = 2.0  # the route reuses a cached result this young with nothing committed since
IDLE_DROP_S: Final = 300.0  # a project's cache not read for this long is dropped
COMPUTE_TIMEOUT_S: Final = 5.0  # deadline of one project's reads
TRACK_MAX: Final = 3  # suggestions in one track answer
TOP_NAMES: Final = 50  # event names read per service (event filters and per-event traffic)
SAMPLE_EVENTS: Final = 200  # latest events read per slow-on-average service (spread and p95)
MAX_SAMPLED_SERVICES: Final = 10
USER_SAMPLE: Final = 200  # latest events of a user read for ?userId=
MEMO_MAX: Final = 4096  # memoised (service, name) answers per project
DEFAULT_LIMIT: Final = 10
MAX_LIMIT: Final = 100
MINUTE_MS: Final = 60_000
HOUR_MS: Final = 3_600_000
DAY_MS: Final = 86_400_000

# project id -> the project's learned transition counts (action -> {next action or "exit": count})
TransitionSource = Callable[[str], Mapping[str, Mapping[str, float]] | None]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Computed:
    """One project's findings, and what they were computed from."""

    __slots__ = ("findings", "windows", "upto_seq", "started", "memo", "used", "last_used")

    def __init__(self, findings: list[Finding], windows: Windows, upto_seq: int, started: float) -> None:
        self.findings = findings
        self.windows = windows  # what the rules read (the route's context totals come from windows.day)
        self.upto_seq = upto_seq  # Store.max_seq() before the reads began
        self.started = started  # clock() when the reads began
        self.memo: dict[tuple[str | None, str], list[AISuggestion]] = {}
        self.used = False  # read by a track answer since the refresher's last pass
        self.last_used = started


class _Flight:
    __slots__ = ("upto_seq", "done", "result", "error")

    def __init__(self, upto_seq: int) -> None:
        self.upto_seq = upto_seq
        self.done = trio.Event()
        self.result: Computed | None = None
        self.error: str | None = None  # the store's failure; both None: the owner was cancelled


class SuggestionCache:
    def __init__(
        self,
        store: Store,
        *,
        transitions: TransitionSource | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = _now_ms,
    ) -> None:
        self.store = store
        self.transitions = transitions  # a project's observed journey transitions (funnels), or None
        self._clock = clock
        self._wall_ms = wall_ms
        self._entries: dict[str, Computed] = {}
        self._flights: dict[str, _Flight] = {}
        self._wanted: set[str] = set()
        self._wake = trio.Event()

    # the hot path: no await, no store ----------------------------------------------------------------
    def _with_findings(self, project: str) -> Computed | None:
        """The project's cached entry when it has findings (a first use asks for a computation)."""
        entry = self._entries.get(project)
        if entry is None:
            self._want(project)
            return None
        entry.used = True
        return entry if entry.findings else None

    def for_event(self, project: str, service: str | None, name: str) -> list[AISuggestion]:
        entry = self._with_findings(project)
        if entry is None:
            return []
        key = (service, name)
        hit = entry.memo.get(key)
        if hit is None:
            hit = [f.suggestion for f in touching(entry.findings, (service,), (name,))[:TRACK_MAX]]
            if len(entry.memo) < MEMO_MAX:
                entry.memo[key] = hit
        return hit

    def for_batch(self, project: str, events: Iterable[Event]) -> list[AISuggestion]:
        entry = self._with_findings(project)
        if entry is None:
            return []
        services: set[str | None] = set()
        names: set[str] = set()
        for e in events:  # only when the project has findings at all
            services.add(e.service_name)
            names.add(e.name)
        return [f.suggestion for f in touching(entry.findings, services, names)[:TRACK_MAX]]

    def _want(self, project: str) -> None:
        if project not in self._wanted:
            self._wanted.add(project)
            self._wake.set()

    # computing ---------------------------------------------------------------------------------------
    async def fresh(self, project: str, *, max_age: float) -> Computed:
        """The project's findings, computed from reads that began after every write committed before
        this call (and no older than ``max_age`` seconds). Concurrent callers share one computation."""
        upto = await self.store.max_seq()
        while True:
            entry = self._entries.get(project)
            if entry is not None and entry.upto_seq >= upto and self._clock() - entry.started <= max_age:
                return entry
            flight = self._flights.get(project)
            if flight is None:
                return await self._fly(project, upto)
            await flight.done.wait()  # share it if its reads began after our writes, else let it land first
            if flight.upto_seq >= upto:
                if flight.result is not None:
                    return flight.result
                if flight.error is not None:
                    raise StoreUnavailable(flight.error)
            # an older computation, or one whose owner was cancelled: look again (maybe compute)

    async def _fly(self, project: str, upto: int) -> Computed:
        flight = self._flights[project] = _Flight(upto)
        try:
            started = self._clock()
            with trio.fail_after(COMPUTE_TIMEOUT_S):
                windows = await self.read_windows(project)
            transitions = self.transitions(project) if self.transitions is not None else None
            computed = Computed(suggest(windows, transitions), windows, upto, started)
            previous = self._entries.get(project)
            if previous is not None:
                computed.used, computed.last_used = previous.used, previous.last_used
            self._entries[project] = flight.result = computed
            return computed
        except trio.TooSlowError:
            flight.error = f"reading the statistics for suggestions took over {COMPUTE_TIMEOUT_S} s"
            raise StoreUnavailable(flight.error) from None
        except StoreError as err:
            flight.error = str(err)
            raise
        finally:  # waiters wake whatever happened (a cancelled owner leaves them to compute)
            del self._flights[project]
            flight.done.set()

    def now_ms(self) -> int:
        return self._wall_ms()

    async def read_windows(self, project: str) -> Windows:
        """The aggregates the rules read: the last 24 h, the last 60 complete minutes, the
        BASELINE_HOURS before them and the same hour yesterday; then the latest response times of
        the services that are slow on average (bounded: SAMPLE_EVENTS each, newest first)."""
        store = self.store
        now = self._wall_ms()
        minute = now // MINUTE_MS * MINUTE_MS
        windows = Windows(day=await store.service_stats(project, since_ms=now - DAY_MS, top=TOP_NAMES))
        hours = windows.baseline_hours
        windows.last_hour = await store.service_stats(project, since_ms=minute - HOUR_MS, until_ms=minute - 1, top=TOP_NAMES)
        windows.before = await store.service_stats(
            project, since_ms=minute - (hours + 1) * HOUR_MS, until_ms=minute - HOUR_MS - 1, top=TOP_NAMES
        )
        yesterday = await store.service_stats(
            project, since_ms=minute - HOUR_MS - DAY_MS, until_ms=minute - DAY_MS - 1, top=TOP_NAMES
        )
        # no event at all in that hour yesterday (a young project, a quiet hour): judge by the hours before
        windows.yesterday = yesterday if any(a.event_count for a in yesterday) else None
        for service in slow_candidates(windows.day)[:MAX_SAMPLED_SERVICES]:
            flt = EventFilter(project=project, service_name=service)  # no time bound: its count is an aggregate
            page = await store.query_events(flt, limit=SAMPLE_EVENTS, cursor=None)
            windows.samples[service] = [
                e.response_time_ms for e in page.events if e.response_time_ms is not None and e.timestamp >= now - DAY_MS
            ]
        return windows

    # the refresher -----------------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            with trio.move_on_after(REFRESH_S):
                await self._wake.wait()
            self._wake = trio.Event()
            await self.refresh_once()
            await trio.sleep(MIN_PASS_GAP_S)

    async def refresh_once(self) -> None:
        """Recompute every project wanted or read since the last pass, when something changed."""
        now = self._clock()
        due = set(self._wanted)
        self._wanted.clear()
        for project, entry in list(self._entries.items()):
            if entry.used:
                entry.used, entry.last_used = False, now
                due.add(project)
            elif now - entry.last_used > IDLE_DROP_S:
                del self._entries[project]
        if not due:
            return
        try:
            upto = await self.store.max_seq()
        except StoreError as err:
            log.warning("suggestions not refreshed: %s", err)
            return
        for project in sorted(due):
            cached = self._entries.get(project)
            if cached is not None and cached.upto_seq >= upto and now - cached.started < RECOMPUTE_AFTER_S:
                continue  # nothing committed since, and the windows have hardly moved
            try:
                await self.fresh(project, max_age=0.0)
            except StoreError as err:
                log.warning("suggestions of project %r not refreshed: %s", project, err)
            except Exception:  # a bug in a rule must not take the server down; the old entry stays
                log.exception("suggestions of project %r failed", project)


# GET /api/events/suggestions -----------------------------------------------------------------------


async def answer(cache: SuggestionCache, project: str, query: dict[str, str]) -> SuggestionsResponse:
    """Suggestions for the project, narrowed by serviceName, eventName (findings about them) and
    userId (findings about the services and event names of the user's latest events in the last
    24 h, at most USER_SAMPLE of them), strongest first, at most ``limit``."""
    service = text_param(query, "serviceName")
    event = text_param(query, "eventName")
    user = text_param(query, "userId")
    limit = int_param(query, "limit", DEFAULT_LIMIT, low=1, high=MAX_LIMIT)
    computed = await cache.fresh(project, max_age=ROUTE_MAX_AGE_S)
    findings = about(computed.findings, service=service, event=event)
    user_events = None
    if user is not None:
        since = cache.now_ms() - DAY_MS
        page = await cache.store.query_events(
            EventFilter(project=project, user_id=user, since_ms=since), limit=USER_SAMPLE, cursor=None
        )
        user_events = len(page.events)
        findings = touching(findings, {e.service_name for e in page.events}, {e.name for e in page.events})
    day = computed.windows.day
    return SuggestionsResponse(
        suggestions=[f.suggestion for f in findings[:limit]],
        context=SuggestionsContext(
            timeRange="last-24h",
            totalEvents=sum(a.event_count for a in day if service is None or a.service_name == service),
            serviceName=service,
            eventName=event,
            userId=user,
            userEvents=user_events,
        ),
    )
