"""Trigger evaluation inside the session actor, one event at a time, against the state after it.

``SessionTriggers.on_event`` is called by the SessionActor (actors/session.py) for every event it
applies. For each active trigger of the project on the event's type it decides, in this order:
in schedule (by the event's time)? already fired in this session (no cooldown: never again; a
cooldown: not before it has passed)? personalization? conditions? Then the A/B variant (pinned
in the session's mark once exposed), and either a ``Fired`` (the ingest answer, the
``trigger_notification``, an execution) or, for the ``control`` variant, an exposure that fires
nothing. A conversion event (the project's conversion events, docs/insights.md) marks every
exposed trigger of the session converted.

"Fired in this session" lives in the session state (``TriggerMark``, part of the actor's snapshot)
and in the Store (trigger_sessions, written before the ingest answers): after a restart whose
snapshot is older than the last firing, the actor merges the stored marks back (actors/session.py).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from typing import Any, Final

import msgspec

from actors.automation.abtest import CONTROL, assign
from actors.automation.conditions import FIELDS, FilterResult, path_value
from actors.automation.index import CompiledTrigger, TriggerIndex
from actors.payload import PayloadInfo
from protocol.record import Event

ELIGIBLE: Final = "eligible"  # the session had the trigger's event type while it was active
EXPOSED: Final = "exposed"  # the session met its conditions (its A/B exposure)
FIRED: Final = "fired"
CONVERTED: Final = "converted"
_PAYLOAD: Final = msgspec.json.Decoder()


class TriggerMark(msgspec.Struct, array_like=True):
    """What one trigger did in this session (times are event times, unix ms; 0 = not yet)."""

    variant: str = ""
    eligible_at: int = 0
    exposed_at: int = 0
    fired_at: int = 0
    last_fired_at: int = 0
    fires: int = 0
    converted_at: int = 0


class Activity(msgspec.Struct, array_like=True):
    """A change of a trigger's mark, for the Store (trigger_sessions) and the performance figures."""

    trigger_id: str
    seq: int  # of the event that caused it
    kind: str  # ELIGIBLE | EXPOSED | FIRED | CONVERTED
    at: int
    variant: str = ""
    engagement: float | None = None


class Fired(msgspec.Struct, kw_only=True):
    """One execution caused by an event: a firing, or the control variant's exposure (executed
    false: it fires nothing, but is recorded)."""

    trigger_id: str
    execution_id: str
    seq: int
    at: int
    event_type: str
    variant: str
    executed: bool
    trigger_type: str
    urgency: str
    actions: list[dict[str, Any]]
    personalization: dict[str, Any]
    reasons: list[FilterResult]
    engagement: float | None = None


log = logging.getLogger("pulse.automation")

def execution_id(project: str, session_id: str, trigger_id: str, seq: int) -> str:
    """Deterministic, so a retried write of the same firing is recorded once."""
    digest = hashlib.sha256(f"{project}\x00{session_id}\x00{trigger_id}\x00{seq}".encode()).hexdigest()
    return f"exe_{digest[:24]}"


class LiveContext:
    """The condition fields of one event and the session state right after it, each computed once
    per event (many triggers read the same fields). Insight fields (engagement, intent, …) cost
    tens of µs and are computed only when a filter reads one."""

    __slots__ = ("event", "info", "session", "_payload", "_step", "_values")

    def __init__(self, event: Event, info: PayloadInfo, session: Any) -> None:
        self.event = event
        self.info = info
        self.session = session  # the SessionActor (its live_* methods)
        self._payload: Any = None
        self._step: Any = None
        self._values: dict[str, object | None] = {}

    def payload(self) -> dict[str, Any]:
        if self._payload is None:
            try:
                decoded = _PAYLOAD.decode(self.event.payload) if self.event.payload else {}
            except msgspec.DecodeError:
                decoded = {}
            self._payload = decoded if isinstance(decoded, dict) else {}
        return self._payload  # type: ignore[no-any-return]

    def step(self) -> Any:
        if self._step is None:
            self._step = self.session.live_step()
        return self._step

    def reported(self, field: str) -> object | None:
        """A number the client reported with the event (eventData.x or x)."""
        payload = self.payload()
        data = payload.get("eventData")
        value = data.get(field) if isinstance(data, dict) else None
        if value is None:
            value = payload.get(field)
        return value if isinstance(value, int | float) and not isinstance(value, bool) else None

    def value(self, field: str) -> object | None:
        values = self._values
        if field in values:
            return values[field]
        getter = _GETTERS.get(field)
        if getter is not None:
            found = getter(self)
        elif field in FIELDS:
            found = None
        else:
            root, _, rest = field.partition(".")
            payload = self.payload()
            found = path_value(payload if root == "payload" else payload.get(root), rest)
        values[field] = found
        return found

    def engagement(self) -> float:
        """The engagement score alone (cheaper than the whole step) unless the step is computed."""
        if self._step is not None:
            return float(self._step.engagement)
        return float(self.value("engagementScore"))  # type: ignore[arg-type]


def _time_on_page(c: LiveContext) -> object | None:
    reported = c.reported("timeOnPage")
    return reported if reported is not None else c.session.live_time_on_page()


def _session_duration(c: LiveContext) -> object | None:
    state = c.session.state
    return (state.last_activity - state.started_at) if state.started_at is not None else 0


_GETTERS: Final[dict[str, Callable[[LiveContext], object | None]]] = {
    "eventType": lambda c: c.event.name,
    "engagementScore": lambda c: c._step.engagement if c._step is not None else c.session.live_engagement(),
    "intentScore": lambda c: c._step.intent if c._step is not None else c.session.live_intent(),
    "timeOnPage": _time_on_page,
    "scrollDepth": lambda c: c.session.live_scroll(),
    "url": lambda c: c.info.url or c.session.live_url(),
    "deviceType": lambda c: c.info.device_type or c.session.state.device_type,
    "persona": lambda c: c.info.persona or c.session.state.journeys.journey.persona,
    "trafficSource": lambda c: traffic_source(c.payload()),
    "userId": lambda c: c.event.user_id or c.session.state.user_id,
    "maxScrollDepth": lambda c: c.session.state.max_scroll,
    "pageViews": lambda c: c.session.state.page_views,
    "eventCount": lambda c: c.session.state.event_count,
    "sessionDuration": _session_duration,
    "behaviorPattern": lambda c: c.step().pattern,
    "recommendedAction": lambda c: c.step().recommended,
    "nextAction": lambda c: c.step().next_action,
}


def traffic_source(payload: dict[str, Any]) -> str | None:
    """``trafficSource``, ``sessionContext.trafficSource``, ``metadata.trafficSource`` or ``metadata.utmSource``."""
    for value in (
        payload.get("trafficSource"),
        path_value(payload.get("sessionContext"), "trafficSource"),
        path_value(payload.get("metadata"), "trafficSource"),
        path_value(payload.get("metadata"), "utmSource"),
    ):
        if isinstance(value, str) and value:
            return value
    return None


def personalization_ok(trigger: CompiledTrigger, context: LiveContext | Any) -> bool:
    for key, allowed in trigger.personalization.items():
        if context.value(key) not in allowed:
            return False
    return True


def notification_personalization(trigger: CompiledTrigger, context: Any, actions: list[Any]) -> dict[str, Any]:
    """What the page needs to personalize the action: the session's persona, device type and
    traffic source, and the first action's offer when it names one."""
    out: dict[str, Any] = {
        "persona": context.value("persona"),
        "deviceType": context.value("deviceType"),
        "trafficSource": context.value("trafficSource"),
    }
    if actions:
        params = actions[0].parameters
        offer = params.get("offer", params.get("offerType"))
        if offer is not None:
            out["offer"] = offer
    return out


class SessionTriggers:
    """The evaluation of one session's events; the actor owns one (its marks are in its state)."""

    __slots__ = ("index", "project", "session_id")

    def __init__(self, index: TriggerIndex, project: str, session_id: str) -> None:
        self.index = index
        self.project = project
        self.session_id = session_id

    def on_event(
        self, event: Event, context: LiveContext, marks: dict[str, TriggerMark], conversions: frozenset[str],
        activity: list[Activity], fired: list[Fired],
    ) -> None:  # fmt: skip
        name = event.name
        ts = event.timestamp
        if marks and name.lower() in conversions:
            for trigger_id, mark in marks.items():
                if mark.exposed_at and not mark.converted_at and ts >= mark.exposed_at:
                    mark.converted_at = ts
                    activity.append(Activity(trigger_id, event.seq, CONVERTED, ts, mark.variant))
        for trigger in self.index.for_event(self.project, name):
            if trigger.bounded and not trigger.in_schedule(ts):
                continue
            found = marks.get(trigger.trigger_id)
            if found is None:
                mark = marks[trigger.trigger_id] = TriggerMark(eligible_at=ts)
                activity.append(Activity(trigger.trigger_id, event.seq, ELIGIBLE, ts))
            else:
                mark = found
            if mark.fired_at and (trigger.cooldown_ms is None or ts - mark.last_fired_at < trigger.cooldown_ms):
                continue  # at most once per session, or again only after the cooldown
            if mark.variant == CONTROL and mark.exposed_at:
                continue  # the control's exposure is recorded once; it never fires
            if trigger.personalization and not personalization_ok(trigger, context):
                continue
            conditions = trigger.conditions
            try:
                if conditions.filters and not conditions.matches(context):
                    continue
            except (ArithmeticError, TypeError, ValueError):
                # a client's value no filter can compare: this event does not match, and the session
                # actor goes on (an exception here would stop it, and every later event with it)
                log.warning("trigger %s: filters could not read event %s", trigger.trigger_id, event.id, exc_info=True)
                continue
            gate = trigger.gate  # approved with conditions: the limits are counted only here, when it would fire
            if gate is not None and not self.index.limits.admit(
                self.project, trigger.trigger_id, trigger.definition.approval.approval_id,  # type: ignore[union-attr]
                gate, user_key=event.user_id or self.session_id, session_id=self.session_id,
                device=context.value("deviceType"),
            ):  # fmt: skip
                continue
            self._fire(trigger, event, context, mark, activity, fired)

    def _fire(
        self, trigger: CompiledTrigger, event: Event, context: LiveContext, mark: TriggerMark,
        activity: list[Activity], fired: list[Fired],
    ) -> None:  # fmt: skip
        ts, seq = event.timestamp, event.seq
        variant = mark.variant
        if not variant and trigger.test_id is not None:
            variant = assign(trigger.test_id, self.session_id, trigger.variant_names, trigger.split)
        if not mark.exposed_at:
            mark.exposed_at = ts
            mark.variant = variant
            activity.append(Activity(trigger.trigger_id, seq, EXPOSED, ts, variant))
        executed = variant != CONTROL
        engagement = None
        if executed:
            engagement = round(context.engagement(), 4)
            mark.fired_at = mark.fired_at or ts
            mark.last_fired_at = ts
            mark.fires += 1
            activity.append(Activity(trigger.trigger_id, seq, FIRED, ts, variant, engagement))
        _, reasons = trigger.conditions.explain(context)
        actions = trigger.actions_for(variant)
        definition = trigger.definition
        fired.append(Fired(
            trigger_id=trigger.trigger_id,
            execution_id=execution_id(self.project, self.session_id, trigger.trigger_id, seq),
            seq=seq,
            at=ts,
            event_type=event.name,
            variant=variant,
            executed=executed,
            trigger_type=definition.trigger_type,
            urgency=definition.urgency,
            actions=[msgspec.to_builtins(a) for a in actions],
            personalization=notification_personalization(trigger, context, actions),
            reasons=reasons,
            engagement=engagement,
        ))


def merge_marks(marks: dict[str, TriggerMark], stored: list[Any]) -> None:
    """Fold the Store's trigger_sessions rows (storage.trigger_records.SessionMark) of this session
    into ``marks``: each time takes the earliest known, fires the most."""
    for row in stored:
        mark = marks.get(row.trigger_id)
        if mark is None:
            mark = marks[row.trigger_id] = TriggerMark()
        mark.variant = mark.variant or row.variant
        mark.eligible_at = _earliest(mark.eligible_at, row.eligible_ms)
        mark.exposed_at = _earliest(mark.exposed_at, row.exposed_ms)
        mark.fired_at = _earliest(mark.fired_at, row.fired_ms)
        mark.last_fired_at = max(mark.last_fired_at, row.last_fired_ms or 0)
        mark.fires = max(mark.fires, row.fires)
        mark.converted_at = _earliest(mark.converted_at, row.converted_ms)


def _earliest(current: int, stored: int | None) -> int:
    if not stored:
        return current
    return stored if not current else min(current, stored)


def commit_pending(
    marks: dict[str, TriggerMark], index: TriggerIndex, project: str, activity: list[Activity], fired: list[Fired],
) -> tuple[list[Activity], list[Fired]]:  # fmt: skip
    """Apply what an activation replay found for the events of the batch that caused it, checked
    again against the marks as they stand after the replay (snapshot + Store): what was already
    recorded before a restart is not repeated."""
    kept: list[Activity] = []
    fired_seqs: set[tuple[str, int]] = set()
    for item in activity:
        found = marks.get(item.trigger_id)
        if item.kind == ELIGIBLE:
            if found is None:
                marks[item.trigger_id] = TriggerMark(eligible_at=item.at)
                kept.append(item)
            continue
        mark = found if found is not None else marks.setdefault(item.trigger_id, TriggerMark(eligible_at=item.at))
        if item.kind == EXPOSED:
            if not mark.exposed_at:
                mark.exposed_at, mark.variant = item.at, item.variant
                kept.append(item)
                if item.variant == CONTROL:
                    fired_seqs.add((item.trigger_id, item.seq))
        elif item.kind == FIRED:
            trigger = index.get(project, item.trigger_id)
            cooldown = trigger.cooldown_ms if trigger is not None else None
            if mark.fired_at and (cooldown is None or item.at - mark.last_fired_at < cooldown):
                continue
            mark.fired_at = mark.fired_at or item.at
            mark.last_fired_at = item.at
            mark.fires += 1
            kept.append(item)
            fired_seqs.add((item.trigger_id, item.seq))
        elif item.kind == CONVERTED:
            if mark.exposed_at and not mark.converted_at:
                mark.converted_at = item.at
                kept.append(item)
    return kept, [f for f in fired if (f.trigger_id, f.seq) in fired_seqs]
