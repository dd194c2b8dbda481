"""The per-process insight service: each project's learned journey model, and where it learns from.

- Journeys come from the session actors: a journey that ends (an end event, or a gap of
  SESSION_GAP_MS before the session's next event) is handed over with ``complete``; a journey
  that just stops is ended by the sweep once it has been idle SESSION_GAP_MS in event time, against
  the later of the project's newest event and the wall clock, and nothing arrived for it for
  IDLE_CONFIRM_S (a client replaying history step by step is not cut short; if it pauses longer,
  the journey is learned as it stands and replaced, under the same key, when it goes on).
- A project's journeys are kept by key (``<session>@<start>``), the most recent MAX_JOURNEYS of
  them, so a journey reported twice (a retry, a reactivated actor, a rebuild) counts once.
- A model is refitted in a worker thread when journeys changed, at most every REFIT_MIN_S and
  never more often than REFIT_COST_FACTOR times the last fit's duration (bounded CPU share): the
  models lag the live events by a few seconds (issue 10 allows 5 s).
- At start the journeys are rebuilt from the stored events (the last REBUILD_EVENTS of each
  project), so a restart learns from the same history.
- In a cluster every node builds the same journeys from the same stored log at start, and live
  journeys are shared over the bus (``share``), so every node fits the same set: the fit is
  deterministic and order-independent, so they answer from the same model.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, Protocol

import msgspec
import trio
import trio.lowlevel

from actors.insights import scores
from actors.insights.journey import DEFAULT_CONVERSIONS, SESSION_GAP_MS, JourneyState, observe
from actors.insights.model import MAX_JOURNEYS, Journey, dwell_medians, transition_counts
from actors.insights.tracker import JourneyLog, JourneyTracker
from actors.payload import extract, is_page_view
from protocol.record import Event
from storage.base import Snapshot

if TYPE_CHECKING:
    from actors.insights.mixture import JourneyModel

log = logging.getLogger("pulse.insights")

REFIT_MIN_S: Final = 1.0
REFIT_COST_FACTOR: Final = 10.0  # a fit that took 0.3 s waits at least 3 s before the next
SWEEP_S: Final = 1.0
# A journey idle past the gap in event time (backfilled history) ends only once nothing arrived for
# it during this many wall seconds: a client replaying history page by page is not cut short.
IDLE_CONFIRM_S: Final = 2.0
REBUILD_EVENTS: Final = 2_000_000  # events per project read at start to rebuild the journeys
REBUILD_PAGE: Final = 500  # events per read: a few ms of folding between two checkpoints
OPEN_KEPT: Final = 200_000  # open journeys the sweep watches (the oldest beyond are ended early)
CONFIG_KIND: Final = "insights_config"  # stored as a snapshot row: (project, kind, "config")


CONFIG_RELOAD_S: Final = 10.0  # how often a node re-reads the projects' settings (set on another node)


class InsightStore(Protocol):
    async def list_projects(self) -> list[Any]: ...
    async def max_seq(self) -> int: ...
    async def events_after(self, project: str, after_seq: int, *, limit: int) -> list[Event]: ...
    async def load_snapshot(self, project: str, kind: str, key: str) -> Snapshot | None: ...
    async def save_snapshot(self, project: str, kind: str, key: str, snapshot: Snapshot) -> None: ...


class InsightConfig(msgspec.Struct, kw_only=True, rename="camel"):
    """A project's insight settings (stored as a snapshot row, versioned by its upto_seq)."""

    conversion_events: list[str]


class ProjectModels:
    """One project's journeys and its current model."""

    def __init__(self, project: str) -> None:
        self.project = project
        self.journeys: dict[str, Journey] = {}
        self.model: JourneyModel | None = None
        self.version = 0  # bumped by every fit
        self.changed = False  # journeys changed since the last fit
        self.fitted_at = 0.0
        self.fit_seconds = 0.0
        self.watermark = 0  # the newest event time seen in the project (ms)
        self.conversions: frozenset[str] = DEFAULT_CONVERSIONS
        self.config_version = 0  # upto_seq of the stored settings applied
        self.dwell: dict[str, float] = {}  # median dwell per action, from the last fit's journeys
        self.transitions: dict[str, dict[str, float]] = {}  # observed action -> next counts (funnels)

    def dwell_median(self, action: str | None = None) -> float | None:
        """The median dwell on ``action``'s pages (all pages' median of medians without one)."""
        if action is None:
            values = sorted(self.dwell.values())
            return values[len(values) // 2] if values else None
        return self.dwell.get(action)

    def add(self, journey: Journey) -> None:
        if not journey.steps:
            return
        old = self.journeys.get(journey.key)
        if old is not None and old.ended_at == journey.ended_at and len(old.steps) == len(journey.steps):
            return
        self.journeys[journey.key] = journey
        self.changed = True
        if len(self.journeys) > MAX_JOURNEYS * 1.1:  # trim in bulk, oldest first
            keep = heapq.nlargest(MAX_JOURNEYS, self.journeys.values(), key=lambda j: (j.ended_at, j.key))
            self.journeys = {j.key: j for j in keep}


def _fit_all(journeys: list[Journey], conversions: frozenset[str]) -> tuple[JourneyModel | None, dict[str, float], dict[str, dict[str, float]]]:
    from actors.insights.mixture import fit  # numpy loads with the first fit, not at start

    return fit(journeys, conversions), dwell_medians(journeys), transition_counts(journeys)


class InsightService:
    def __init__(self, store: InsightStore | None = None) -> None:
        self.store = store
        self.projects: dict[str, ProjectModels] = {}
        # open journeys: (project, session) -> (the session's tracker, wall time of its last event)
        self._open: dict[tuple[str, str], tuple[JourneyTracker, float]] = {}
        self._share: Callable[[str, Journey], Awaitable[None]] | None = None
        self._shared: list[tuple[str, Journey]] = []
        self._wake = trio.Event()
        self.rebuilding = False
        self.fits = 0

    # what the session actors call (synchronous, in the trio thread) ------------------------------
    def project(self, project: str) -> ProjectModels:
        models = self.projects.get(project)
        if models is None:
            models = self.projects[project] = ProjectModels(project)
        return models

    def conversions(self, project: str) -> frozenset[str]:
        models = self.projects.get(project)
        return models.conversions if models is not None else DEFAULT_CONVERSIONS

    def transitions(self, project: str) -> dict[str, dict[str, float]] | None:
        """The project's observed transitions (as of the last fit), for the funnel suggestions."""
        models = self.projects.get(project)
        return models.transitions if models is not None and models.transitions else None

    def touch(self, project: str, session_id: str, tracked: JourneyTracker) -> None:
        """A session's journey changed: watch it until it ends (a journey that ended with an end
        event was handed over by its tracker already)."""
        models = self.project(project)
        last = tracked.last_at()
        if last > models.watermark:
            models.watermark = last
        if tracked.pending == 0 and tracked.log.journey.ended:
            self._open.pop((project, session_id), None)
            return
        self._open[(project, session_id)] = (tracked, time.monotonic())
        if len(self._open) > OPEN_KEPT:
            self._end_oldest()

    def complete(self, project: str, journey: Journey, *, share: bool = True) -> None:
        self.project(project).add(journey)
        if share and self._share is not None:
            self._shared.append((project, journey))
        self._wake.set()

    def share_with(self, share: Callable[[str, Journey], Awaitable[None]]) -> None:
        """In a cluster: how a journey completed here reaches the other nodes."""
        self._share = share

    def receive_shared(self, project: str, body: bytes) -> None:
        """A journey another node completed (the bus's delivery)."""
        try:
            journey = msgspec.json.decode(body, type=Journey)
        except msgspec.DecodeError:
            log.warning("undecodable shared journey on %r", project)
            return
        self.complete(project, journey, share=False)

    # the service ----------------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            task_status.started()
            if self.store is not None:
                nursery.start_soon(self._rebuild)
            nursery.start_soon(self._sweep_loop)
            if self.store is not None:
                nursery.start_soon(self._config_loop)
            nursery.start_soon(self._share_loop)
            await self._fit_loop()

    async def _fit_loop(self) -> None:
        limiter = trio.CapacityLimiter(1)
        while True:
            with trio.move_on_after(SWEEP_S):
                await self._wake.wait()
            self._wake = trio.Event()
            now = time.monotonic()
            for models in list(self.projects.values()):
                wait = max(REFIT_MIN_S, REFIT_COST_FACTOR * models.fit_seconds)
                if models.changed and now - models.fitted_at >= wait and not self.rebuilding:
                    await self._fit(models, limiter)

    async def _fit(self, models: ProjectModels, limiter: trio.CapacityLimiter) -> None:
        models.changed = False
        journeys = list(models.journeys.values())
        conversions = models.conversions
        started = time.perf_counter()
        model, dwell, transitions = await trio.to_thread.run_sync(
            _fit_all, journeys, conversions, limiter=limiter, abandon_on_cancel=True)
        models.dwell, models.transitions = dwell, transitions
        models.fit_seconds = time.perf_counter() - started
        models.fitted_at = time.monotonic()
        models.model = model
        models.version += 1
        self.fits += 1
        log.debug("project %s: model v%d from %d journeys (%d types) in %.3f s", models.project, models.version,
                  len(journeys), model.types if model else 0, models.fit_seconds)

    async def _sweep_loop(self) -> None:
        while True:
            await trio.sleep(SWEEP_S)
            self.sweep(time.monotonic())

    def sweep(self, now: float, now_ms: int | None = None) -> int:
        """End the open journeys idle for SESSION_GAP_MS in event time: against the later of the
        project's newest event and the wall clock (``now_ms``), once nothing arrived for them for
        IDLE_CONFIRM_S of wall time (``now`` is time.monotonic()). Returns how many ended."""
        wall_ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        ended = []
        for (project, session_id), (tracked, touched) in self._open.items():
            reference = max(self.project(project).watermark, wall_ms)
            if reference - tracked.last_at() > SESSION_GAP_MS and now - touched >= IDLE_CONFIRM_S:
                ended.append((project, session_id, tracked))
        for project, session_id, tracked in ended:
            del self._open[(project, session_id)]
            self._end(project, session_id, tracked)
        return len(ended)

    def _end(self, project: str, session_id: str, tracked: JourneyTracker) -> None:
        journey = tracked.settle()
        if not journey.ended:  # an ended one was handed over when its end event was folded
            self.complete(project, scores.completed(journey, session_id))

    def _end_oldest(self) -> None:
        oldest = heapq.nsmallest(len(self._open) - OPEN_KEPT + OPEN_KEPT // 10, self._open.items(), key=lambda kv: kv[1][1])
        for (project, session_id), (tracked, _) in oldest:
            del self._open[(project, session_id)]
            self._end(project, session_id, tracked)

    async def _share_loop(self) -> None:
        while True:
            await trio.sleep(0.2)
            if not self._shared or self._share is None:
                continue
            batch, self._shared = self._shared, []
            for project, journey in batch:
                try:
                    await self._share(project, journey)
                except Exception as exc:  # the bus is down: this node still learned it
                    log.debug("journey not shared (%r)", exc)

    # settings -------------------------------------------------------------------------------------
    async def set_conversions(self, project: str, events: list[str]) -> None:
        """Store a project's conversion events and relearn its journeys from the log with them."""
        assert self.store is not None
        version = max(time.time_ns() // 1_000_000, self.project(project).config_version + 1)
        body = msgspec.json.encode(InsightConfig(conversion_events=sorted(set(events))))
        await self.store.save_snapshot(project, CONFIG_KIND, "config", Snapshot(state=body, upto_seq=version))
        await self._apply_config(project, Snapshot(state=body, upto_seq=version))

    async def _load_config(self, project: str) -> None:
        assert self.store is not None
        stored = await self.store.load_snapshot(project, CONFIG_KIND, "config")
        if stored is not None and stored.upto_seq > self.project(project).config_version:
            await self._apply_config(project, stored)

    async def _apply_config(self, project: str, stored: Snapshot) -> None:
        models = self.project(project)
        try:
            config = msgspec.json.decode(stored.state, type=InsightConfig)
        except msgspec.DecodeError:
            log.warning("project %s: unreadable insight settings ignored", project)
            return
        models.config_version = stored.upto_seq
        conversions = frozenset(config.conversion_events)
        if conversions == models.conversions:
            return
        models.conversions = conversions
        if not self.rebuilding:  # journeys derived with the old conversions: derive them again
            models.journeys.clear()
            assert self.store is not None
            top = await self.store.max_seq()
            await self._rebuild_project(project, max(0, top - REBUILD_EVENTS), top)
            self._wake.set()

    async def _config_loop(self) -> None:
        while True:
            await trio.sleep(CONFIG_RELOAD_S)
            for project in list(self.projects):
                try:
                    await self._load_config(project)
                except Exception as exc:  # the store is down: keep the settings we have
                    log.debug("insight settings of %s not reloaded (%r)", project, exc)

    async def _rebuild(self) -> None:
        """Rebuild every project's journeys from the stored log (at start)."""
        assert self.store is not None
        self.rebuilding = True
        try:
            top = await self.store.max_seq()
            for project in await self.store.list_projects():
                await self._load_config(project.id)
                await self._rebuild_project(project.id, max(0, top - REBUILD_EVENTS), top)
        except Exception:
            log.exception("rebuilding the journeys from the store failed; learning from live events only")
        finally:
            self.rebuilding = False
            self._wake.set()

    async def _rebuild_project(self, project: str, after: int, until: int) -> None:
        """Journeys from the stored events with seq in (after, until]. Events stored later reach
        the models live (through their session actors): reading on past ``until`` under load
        would chase the live log and count those events twice."""
        assert self.store is not None
        models = self.project(project)
        states: dict[str, JourneyState] = {}
        conversions = models.conversions
        while after < until:
            page = await self.store.events_after(project, after, limit=REBUILD_PAGE)
            if not page:
                break
            after = page[-1].seq
            for event in page:
                if not event.session_id or event.seq > until:
                    continue
                state = states.get(event.session_id) or JourneyState()
                info = extract(event)
                state.user_id = event.user_id or state.user_id
                state.device_type = info.device_type or state.device_type
                state.persona = info.persona or state.persona
                state, seen = observe(state, event.name, event.timestamp, url=info.url, scroll=info.scroll_depth,
                                      is_page_view=is_page_view(event.name), conversions=conversions)
                if seen.finished is not None:
                    models.add(scores.completed(seen.finished, event.session_id))
                if state.ended:
                    models.add(scores.completed(state, event.session_id))
                states[event.session_id] = state
                if state.last_at > models.watermark:
                    models.watermark = state.last_at
            await trio.lowlevel.checkpoint()  # one page at a time: the loop stays responsive
        for session_id, state in states.items():
            if not state.ended and state.steps:
                # watched like a live session's (a tracker with nothing left to fold)
                rebuilt = JourneyTracker(JourneyLog(journey=state), conversions=lambda: conversions,
                                         on_finished=lambda journey: None)
                self._open.setdefault((project, session_id), (rebuilt, time.monotonic()))
        models.changed = bool(models.journeys)
