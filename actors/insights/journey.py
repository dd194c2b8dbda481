"""A session's journey as the insights see it: actions, in-page signals, and where it ends.

Sans-IO: the SessionActor owns a ``JourneyState`` (in its snapshot) and calls ``observe`` for every
event in event-time order. Everything is event time: dwell is the time between a page's opening and
the next action of the same journey, and a gap of more than SESSION_GAP_MS between two events ends
the journey (the next event starts a new one), so a page viewed in 2023 and an event sent today
never make a three-year dwell.

Action names (issue 10): a page view is ``view_<route>`` where route is the URL's first path
segment (``home`` for ``/``), ``/product/123`` -> ``view_product``; a conversion event is its event
type (``purchase``); in-page interactions (scroll, click, hover, input, form fields...) are not
actions but signals of the page they happen on. A journey ends with an ``exit_intent`` or
``session_end`` event, or SESSION_GAP_MS without events.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import urlsplit

import msgspec

from actors.insights.model import Step

SESSION_GAP_MS: Final = 30 * 60_000
STEPS_KEPT: Final = 100  # the latest actions of a journey (a model sees no further back)
END_EVENTS: Final = frozenset({"exit_intent", "session_end"})
DEFAULT_CONVERSIONS: Final = frozenset({"purchase", "conversion", "signup", "checkout_completed"})
# Event names that are in-page signals (compared lower-cased); anything else that is neither a page
# view, a conversion nor an end counts as an interaction too, but never as an action.
SCROLL_EVENTS: Final = frozenset({"scroll", "scroll_depth"})


def route_of(url: str) -> str:
    """The first path segment of ``url`` ("home" for "/"), lower-cased."""
    path = urlsplit(url).path if "://" in url or url.startswith("//") else url.split("?", 1)[0].split("#", 1)[0]
    for segment in path.split("/"):
        if segment:
            return segment.lower()
    return "home"


class JourneyEvent(msgspec.Struct, array_like=True):
    """What the journey needs of one event (kept in the session's state to refold late arrivals)."""

    ts: int
    seq: int
    name: str  # lower-cased
    url: str | None
    scroll: float | None
    page_view: bool

    def order(self) -> tuple[int, int]:
        return (self.ts, self.seq)


_ACTIONS: dict[str, str] = {}  # url -> "view_<route>": sites have far fewer urls than events
_ACTIONS_KEPT: Final = 8192


def _action_of(url: str) -> str:
    action = _ACTIONS.get(url)
    if action is None:
        if len(_ACTIONS) >= _ACTIONS_KEPT:
            _ACTIONS.clear()
        action = _ACTIONS[url] = "view_" + route_of(url)
    return action


class JourneyState(msgspec.Struct, kw_only=True):
    """The current journey of a session (msgpack in the session's snapshot)."""

    started_at: int = 0  # event time of the journey's first event (meaningless while events == 0)
    last_at: int = 0  # event time of its latest event
    steps: list[Step] = msgspec.field(default_factory=list)  # the latest STEPS_KEPT actions
    step_opened: list[int] = msgspec.field(default_factory=list)  # event time each step began
    steps_dropped: int = 0
    converted: bool = False
    ended: bool = False  # an end event closed it (the next event starts a new journey)
    journeys: int = 0  # journeys this session had before the current one
    interactions: int = 0  # in-page events of the journey (scrolls, clicks, inputs...)
    scroll_sum: float = 0.0  # sum of the max scroll depth of the completed pages that had scrolls
    scrolled_pages: int = 0  # completed pages with a scroll event
    dwell_sum_ms: int = 0  # sum of the dwell of each completed page
    pages_completed: int = 0
    clicks_sum: int = 0  # interactions on completed pages
    events: int = 0  # events of the journey
    routes: dict[str, int] = msgspec.field(default_factory=dict)  # kept steps per action ("view_pricing": 2)

    def key(self, session_id: str) -> str:
        return f"{session_id}@{self.started_at}"



    user_id: str | None = None
    device_type: str | None = None
    persona: str | None = None

class Observed(msgspec.Struct, frozen=True):
    """What one event did to the journey: what the caller must act on."""

    finished: JourneyState | None = None  # a journey that ended before this event (a gap)
    ended_now: bool = False  # this event ended the journey (an end event)


_NOTHING: Final = Observed()  # what most events do: the caller has nothing to act on
_ENDED: Final = Observed(ended_now=True)


def observe(state: JourneyState, name: str, ts: int, *, url: str | None, scroll: float | None,
            is_page_view: bool, conversions: frozenset[str]) -> tuple[JourneyState, Observed]:
    """Fold one event (in event-time order) into ``state``; returns the (possibly new) state.
    ``name`` is the event type; compared lower-cased (pass it lower-cased: this runs per event)."""
    result = _NOTHING
    if state.events and (state.ended or ts - state.last_at > SESSION_GAP_MS):
        if not state.ended:
            result = Observed(finished=state)
        state = JourneyState(journeys=state.journeys + 1, user_id=state.user_id, device_type=state.device_type,
                             persona=state.persona)
    if not state.events:
        state.started_at = state.last_at = ts
    elif ts > state.last_at:
        state.last_at = ts
    state.events += 1
    lower = name if name.islower() else name.lower()
    if is_page_view:
        action = _action_of(url) if url else None
    elif lower in conversions:
        action = lower
        state.converted = True
    else:
        action = None
    if action is not None:
        _begin_step(state, action, ts)
    elif lower in END_EVENTS:
        state.ended = True
        result = _ENDED if result is _NOTHING else Observed(finished=result.finished, ended_now=True)
    else:
        state.interactions += 1
        if state.steps:
            current = state.steps[-1]
            if scroll is not None:
                current.scroll = max(current.scroll, scroll)
            if lower not in SCROLL_EVENTS:
                current.clicks += 1
    return state, result


def _begin_step(state: JourneyState, action: str, ts: int) -> None:
    if state.steps:  # the previous page is complete now: its dwell and signals are final
        previous = state.steps[-1]
        previous.dwell_ms = max(0, ts - state.step_opened[-1])
        state.pages_completed += 1
        state.dwell_sum_ms += previous.dwell_ms
        if previous.scroll >= 0:
            state.scroll_sum += previous.scroll
            state.scrolled_pages += 1
        state.clicks_sum += previous.clicks
    steps = state.steps
    steps.append(Step(action))
    state.step_opened.append(ts)
    routes = state.routes
    routes[action] = routes.get(action, 0) + 1
    if len(steps) > STEPS_KEPT:
        _count_route(routes, steps[0].action, -1)
        del steps[0]
        del state.step_opened[0]
        state.steps_dropped += 1


def _count_route(routes: dict[str, int], action: str, delta: int) -> None:
    count = routes.get(action, 0) + delta
    if count > 0:
        routes[action] = count
    else:
        routes.pop(action, None)


class Checkpoint:
    """A journey as it was right before one of its actions: enough to rewind it there cheaply
    (the steps only grow, and only the last one changes), so an event that arrives late re-applies
    the events of the last step or two instead of the whole journey."""

    __slots__ = ("order", "journey", "scalars", "steps", "dropped", "last", "routes")

    def __init__(self, order: tuple[int, int], j: JourneyState) -> None:
        self.order = order  # of the action about to be applied
        self.journey = j
        self.scalars = (j.last_at, j.converted, j.ended, j.interactions, j.scroll_sum, j.scrolled_pages,
                        j.dwell_sum_ms, j.pages_completed, j.clicks_sum, j.events)
        self.steps = len(j.steps)
        self.dropped = j.steps_dropped
        last = j.steps[-1] if j.steps else None
        self.last = (last.dwell_ms, last.scroll, last.clicks) if last else None
        self.routes = j.routes.copy()

    def usable(self, journey: JourneyState) -> bool:
        """Its journey is the current one and the step it was taken at is still kept."""
        return journey is self.journey and journey.steps_dropped - self.dropped < max(self.steps, 1)

    def restore(self) -> None:
        j = self.journey
        (j.last_at, j.converted, j.ended, j.interactions, j.scroll_sum, j.scrolled_pages,
         j.dwell_sum_ms, j.pages_completed, j.clicks_sum, j.events) = self.scalars
        shifted = j.steps_dropped - self.dropped  # the oldest steps dropped since (the bound)
        keep = self.steps - shifted
        del j.steps[keep:]
        del j.step_opened[keep:]
        if shifted:
            j.routes = {}
            for step in j.steps:
                _count_route(j.routes, step.action, 1)
        else:
            j.routes = self.routes
        if self.last is not None and keep > 0:
            last = j.steps[-1]
            last.dwell_ms, last.scroll, last.clicks = self.last


def current_dwell_ms(state: JourneyState) -> int:
    """Time on the current page so far (event time), 0 without one."""
    return max(0, state.last_at - state.step_opened[-1]) if state.step_opened else 0
