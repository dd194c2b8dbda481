"""Seed 000 insight routes: /analytics/realtime, /analytics/historical, /analytics/predictive,
/patterns, and /models (what each project's model learned). docs/insights.md explains each number.

Live figures come from the session's actor (on whichever node owns it), historical ones from the
project's completed journeys that the insight service keeps (rebuilt from the stored log at start,
shared across nodes), never from a scan of the event log per request.
"""

from __future__ import annotations

import datetime
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, Final

import msgspec
import trio
from quart import Response, request
from quart_trio import QuartTrio

from actors.insights.journey import DEFAULT_CONVERSIONS, route_of
from actors.insights.model import Journey
from actors.runtime import ActorError
from protocol.errors import InvalidInput
from server.context import Pulse

LIVE_TIMEOUT_S: Final = 5.0
USER_SESSIONS_ASKED: Final = 5  # the user's most recent sessions whose live insights are gathered
DAY_MS: Final = 86_400_000
REALTIME_METRICS: Final = ("engagement", "intent", "conversion_probability")
AGGREGATIONS: Final = ("average", "sum", "max", "min", "latest")
GRANULARITIES: Final = {"hourly": 3_600_000, "daily": DAY_MS, "weekly": 7 * DAY_MS, "monthly": 30 * DAY_MS}
PREDICTION_TYPES: Final = ("conversion", "next_action", "engagement", "churn")
HISTORICAL_FILTERS: Final = ("device_type", "persona")
MAX_CONVERSION_EVENTS: Final = 50
# Spellings a client of the seed may use for the predictive route's enumerations
PREDICTION_ALIASES: Final = {"conversion_probability": "conversion", "purchase": "conversion", "churn_risk": "churn",
                             "engagement_score": "engagement", "next_action_prediction": "next_action",
                             "nextAction": "next_action"}
HORIZON_WORDS: Final = {"short_term": "24h", "medium_term": "7d", "long_term": "30d", "session": "30m"}
CONFIDENCE_WORDS: Final = {"low": 0.8, "medium": 0.9, "high": 0.95, "very_high": 0.99}

Json = Callable[..., Response]


def _int_in(query: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(name, f"expected an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise InvalidInput(name, f"must be between {low} and {high}, got {value}")
    return value


def _choice(query: dict[str, str], name: str, default: str, allowed: tuple[str, ...] | dict[str, Any]) -> str:
    value = query.get(name) or default
    if value not in allowed:
        raise InvalidInput(name, f"must be one of {', '.join(allowed)}; got {value!r}")
    return value


def _bool(query: dict[str, str], *names: str) -> bool:
    for name in names:
        raw = query.get(name)
        if raw is not None:
            if raw.lower() in ("1", "true", "yes", ""):
                return True
            if raw.lower() in ("0", "false", "no"):
                return False
            raise InvalidInput(name, f"expected true or false, got {raw!r}")
    return False


def _duration_ms(raw: str, name: str) -> int:
    """"24h", "7d", "30m", "90s" or plain seconds."""
    units = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": DAY_MS, "w": 7 * DAY_MS}
    text = raw.strip().lower()
    try:
        if text and text[-1] in units:
            value = float(text[:-1]) * units[text[-1]]
        else:
            value = float(text) * 1_000
    except ValueError:
        raise InvalidInput(name, f"expected a duration like 24h, 7d or seconds, got {raw!r}") from None
    if not 0 < value <= 366 * DAY_MS:
        raise InvalidInput(name, f"must be between 1 s and 366 days, got {raw!r}")
    return int(value)


def _timing(dwell_ms: float | None) -> str | None:
    if dwell_ms is None:
        return None
    if dwell_ms < 60_000:
        return f"within_{max(1, math.ceil(dwell_ms / 1000))}_seconds"
    return f"within_{math.ceil(dwell_ms / 60_000)}_minutes"


def _wilson(p: float, n: int, confidence: float) -> list[float]:
    """The Wilson score interval of a proportion ``p`` seen over ``n`` cases."""
    if n <= 0:
        return [0.0, 1.0]
    z = _z(confidence)
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return [round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)]


def _z(confidence: float) -> float:
    """The two-sided normal quantile for ``confidence`` (bisection on erf: no scipy needed)."""
    lo, hi = 0.0, 10.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if math.erf(mid / math.sqrt(2)) < confidence:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


UserInsights = Callable[[str, Any], Awaitable[dict[str, Any]]]


def register(app: QuartTrio, pulse: Pulse, access: Callable[[], Awaitable[Any]], args: Callable[[], dict[str, str]],
             json_response: Json) -> UserInsights:
    """Add the insight routes to ``app``; returns the user-insights builder for /users/{id}."""
    def not_found(reason: str) -> Response:
        return json_response({"success": False, "error": {"code": "not_found", "reason": reason}}, 404)

    def unavailable(exc: Exception) -> Response:
        body = {"success": False, "error": {"code": "live_state_unavailable", "reason": str(exc)}}
        return json_response(body, 503, headers={"Retry-After": "1"})

    async def session_view(project: str, session_id: str) -> Any:
        if "\x00" in session_id:
            return None
        view = await pulse.router.view(("session", project, session_id), timeout=LIVE_TIMEOUT_S)
        return view if view.event_count else None

    async def user_view(project: str, user_id: str) -> Any:
        if "\x00" in user_id:
            return None
        view = await pulse.router.view(("user", project, user_id), timeout=LIVE_TIMEOUT_S)
        return view if view.event_count else None

    def model_status(project: str) -> dict[str, Any]:
        models = pulse.insights.projects.get(project)
        model = models.model if models else None
        return {
            "journeys": model.journeys if model else 0,
            "journeysKept": len(models.journeys) if models else 0,
            "types": model.types if model else 0,
            "version": models.version if models else 0,
            "actions": model.actions if model else [],
            "conversionEvents": sorted(models.conversions if models else DEFAULT_CONVERSIONS),
            "fitSeconds": round(models.fit_seconds, 4) if models else 0.0,
            "rebuilding": pulse.insights.rebuilding,
            "pending": bool(models and models.changed),
        }

    def dwell_median(project: str, current_page: str | None) -> float | None:
        """How long visitors stay on the current page's kind before their next action."""
        models = pulse.insights.projects.get(project)
        if models is None:
            return None
        median = models.dwell_median("view_" + route_of(current_page)) if current_page else None
        return median if median is not None else models.dwell_median()

    def factors(insights: Any) -> list[str]:
        found = [p.pattern for p in insights.patterns]
        if insights.engagement.score >= 0.6:
            found.append("high_engagement")
        if insights.next_action is not None:
            found.append(f"likely_next_{insights.next_action.action}")
        return list(dict.fromkeys(found))

    async def user_insights(project: str, user: Any) -> dict[str, Any]:
        """The user's insights across sessions and devices: each recent session's live insights
        (from its actor, wherever it lives) and the user's completed journeys."""
        recent = user.sessions[:USER_SESSIONS_ASKED]
        keys = [("session", project, s.session_id) for s in recent]
        views: list[Any] = [None] * len(keys)

        async def ask(i: int) -> None:
            try:
                views[i] = await pulse.router.view(keys[i], timeout=LIVE_TIMEOUT_S)
            except ActorError:
                views[i] = None  # counted below as unavailable

        async with trio.open_nursery() as nursery:
            for i in range(len(keys)):
                nursery.start_soon(ask, i)
        live = []
        for entry, view in zip(recent, views, strict=True):
            if view is None or view.insights is None:
                continue
            ins = view.insights
            live.append({
                "sessionId": entry.session_id, "deviceType": entry.device_type, "deviceId": entry.device_id,
                "engagementScore": ins.engagement.score, "purchaseIntent": ins.intent.purchase_intent,
                "behaviorPattern": ins.behavior_pattern, "converted": ins.converted, "lastSeen": entry.last_seen,
            })
        journeys = user_journeys(project, user.user_id)
        by_device: dict[str, list[float]] = {}
        for item in live:
            by_device.setdefault(item["deviceType"] or "unknown", []).append(item["engagementScore"])
        patterns = Counter([i["behaviorPattern"] for i in live] + [j.pattern for j in journeys])
        converted = sum(1 for j in journeys if j.converted)
        return {
            "sessions": live,
            "engagement": round(sum(i["engagementScore"] for i in live) / len(live), 4) if live else None,
            "purchaseIntent": max((i["purchaseIntent"] for i in live), default=None),
            "devices": {d: round(sum(v) / len(v), 4) for d, v in by_device.items()},
            "dominantPattern": patterns.most_common(1)[0][0] if patterns else None,
            "completedJourneys": len(journeys),
            "conversionRate": round(converted / len(journeys), 4) if journeys else None,
            "basedOn": {"liveSessions": len(live), "sessionsAsked": len(keys), "journeys": len(journeys)},
        }

    @app.get("/api/v1/behavioral/models")
    async def models_route() -> Response:
        granted = await access()
        return json_response({"projectId": granted.project.id, **model_status(granted.project.id)})

    @app.put("/api/v1/behavioral/models")
    async def models_settings() -> Response:
        """Set the project's conversion events (default: purchase, conversion, signup,
        checkout_completed); the journeys are derived again from the stored events."""
        granted = await access()
        body = await request.get_data()
        try:
            settings = msgspec.json.decode(body or b"{}", type=dict)
        except msgspec.DecodeError as exc:
            raise InvalidInput("$", f"malformed json: {exc}") from None
        events = settings.get("conversionEvents")
        if not isinstance(events, list) or not 1 <= len(events) <= MAX_CONVERSION_EVENTS:
            raise InvalidInput("$.conversionEvents", f"a list of 1 to {MAX_CONVERSION_EVENTS} event names is required")
        for i, name in enumerate(events):
            if not isinstance(name, str) or not 1 <= len(name) <= 200 or "\x00" in name:
                raise InvalidInput(f"$.conversionEvents[{i}]", "an event name of 1 to 200 characters is required")
        await pulse.insights.set_conversions(granted.project.id, [name.lower() for name in events])
        return json_response({"projectId": granted.project.id, **model_status(granted.project.id)})

    @app.get("/api/v1/behavioral/analytics/realtime")
    async def realtime() -> Response:
        granted = await access()
        query = args()
        session_id = query.get("sessionId")
        if not session_id:
            raise InvalidInput("sessionId", "a sessionId is required")
        window = _int_in(query, "timeWindow", 300, 1, 86_400)
        wanted = [m.strip() for m in (query.get("metrics") or ",".join(REALTIME_METRICS)).split(",") if m.strip()]
        for metric in wanted:
            if metric not in REALTIME_METRICS:
                raise InvalidInput("metrics", f"unknown metric {metric!r}; known: {', '.join(REALTIME_METRICS)}")
        aggregation = _choice(query, "aggregation", "latest", AGGREGATIONS)
        try:
            view = await session_view(granted.project.id, session_id)
        except ActorError as exc:
            return unavailable(exc)
        if view is None or view.insights is None:
            return not_found(f"no events for session {session_id!r}")
        ins = view.insights
        metrics: dict[str, Any] = {}
        if "engagement" in wanted:
            metrics["engagement"] = {"score": ins.engagement.score, "trend": ins.engagement.trend,
                                     "confidence": ins.engagement.confidence, "components": ins.engagement.components}
        if "intent" in wanted:
            metrics["intent"] = {"purchaseIntent": ins.intent.purchase_intent, "interactionIntent": ins.intent.interaction_intent,
                                 "exitIntent": ins.intent.exit_intent, "source": ins.intent.source}
        if "conversion_probability" in wanted:
            probability = ins.conversion_probability if ins.conversion_probability is not None else ins.intent.purchase_intent
            metrics["conversionProbability"] = {"probability": probability, "factors": factors(ins),
                                                "source": "model" if ins.conversion_probability is not None else "rules"}
        now = time.time_ns() // 1_000_000
        timing = _timing(dwell_median(granted.project.id, view.current_page)) if ins.next_action else None
        recommendations = [{"type": ins.recommended_action, "confidence": ins.recommendation_confidence,
                            "timing": "immediate"}]
        if ins.next_action is not None and ins.next_action.action != "exit":
            recommendations.append({"type": f"prepare_{ins.next_action.action}", "confidence": ins.next_action.probability,
                                    "timing": timing or "after_interaction"})
        return json_response({
            "sessionId": session_id,
            "timeWindow": window,
            "aggregation": aggregation,
            "activeInWindow": view.last_activity is not None and now - view.last_activity <= window * 1000,
            "metrics": metrics,
            "behaviorPattern": ins.behavior_pattern,
            "recommendations": recommendations,
            "basedOn": ins.based_on,
        })

    @app.get("/api/v1/behavioral/patterns")
    async def patterns_route() -> Response:
        granted = await access()
        query = args()
        session_id, user_id = query.get("sessionId"), query.get("userId")
        if not session_id and not user_id:
            raise InvalidInput("sessionId", "a sessionId or a userId is required")
        window = _int_in(query, "timeWindow", 1800, 1, 30 * 86_400)
        predictions_wanted = _bool(query, "includePredictions", "includePredictons")
        project = granted.project.id
        try:
            if not session_id:
                user = await user_view(project, str(user_id))
                if user is None or not user.sessions:
                    return not_found(f"no events for user {user_id!r}")
                session_id = user.sessions[0].session_id
            view = await session_view(project, session_id)
        except ActorError as exc:
            return unavailable(exc)
        if view is None or view.insights is None:
            return not_found(f"no events for session {session_id!r}")
        if user_id and view.user_id and view.user_id != user_id:
            raise InvalidInput("userId", f"session {session_id!r} belongs to another user")
        ins = view.insights
        body: dict[str, Any] = {
            "userId": user_id or view.user_id,
            "sessionId": session_id,
            "timeWindow": window,
            "patterns": [
                {"pattern": p.pattern, "confidence": p.confidence, "indicators": p.indicators,
                 "implications": _IMPLICATIONS.get(p.pattern, [])}
                for p in ins.patterns
            ],
            "recommendations": [{"type": ins.recommended_action, "priority": _priority(ins.recommendation_confidence),
                                 "timing": "immediate"}],
            "basedOn": ins.based_on,
        }
        if predictions_wanted:
            nxt = ins.next_action
            body["predictions"] = {
                "nextAction": None if nxt is None else {
                    "action": nxt.action, "probability": nxt.probability,
                    "timing": _timing(dwell_median(project, view.current_page)),
                    "distribution": nxt.distribution,
                },
                "conversionProbability": None if ins.conversion_probability is None else {
                    "probability": ins.conversion_probability, "timeframe": "within_session", "factors": factors(ins),
                },
                "basedOn": {"journeys": ins.based_on.journeys, "modelTypes": ins.based_on.model_types,
                            "modelVersion": ins.based_on.model_version},
            }
        return json_response(body)

    def user_journeys(project: str, user_id: str) -> list[Journey]:
        models = pulse.insights.projects.get(project)
        if models is None:
            return []
        return sorted((j for j in models.journeys.values() if j.user_id == user_id), key=lambda j: j.started_at)

    @app.get("/api/v1/behavioral/analytics/historical")
    async def historical() -> Response:
        granted = await access()
        query = args()
        user_id = query.get("userId")
        if not user_id:
            raise InvalidInput("userId", "a userId is required")
        granularity = _choice(query, "granularity", "daily", GRANULARITIES)
        since, until, date_range = _date_range(query.get("dateRange"))
        wanted: dict[str, str] = {}
        for item in filter(None, (f.strip() for f in (query.get("filters") or "").split(","))):
            name, colon, value = item.partition(":")
            if not colon or name not in HISTORICAL_FILTERS or not value:
                raise InvalidInput("filters", f"expected name:value with a name of {', '.join(HISTORICAL_FILTERS)}; got {item!r}")
            wanted[name] = value
        journeys = user_journeys(granted.project.id, user_id)
        if not journeys:
            try:
                known = await user_view(granted.project.id, user_id)
            except ActorError as exc:
                return unavailable(exc)
            if known is None:
                return not_found(f"no events for user {user_id!r}")
        selected = [
            j for j in journeys
            if (since is None or j.started_at >= since) and (until is None or j.started_at < until)
            and ("device_type" not in wanted or (j.device_type or "").lower() == wanted["device_type"].lower())
            and ("persona" not in wanted or (j.persona or "").lower() == wanted["persona"].lower())
        ]
        step = GRANULARITIES[granularity]
        buckets: dict[int, list[Journey]] = {}
        for journey in selected:
            buckets.setdefault(journey.started_at // step * step, []).append(journey)
        data = []
        for start in sorted(buckets):
            group = buckets[start]
            total = sum(j.engagement for j in group)
            data.append({
                "date": _iso_day(start) if step >= DAY_MS else _iso_hour(start),
                "sessions": len(group),
                "totalEngagement": round(total, 4),
                "averageEngagement": round(total / len(group), 4),
                "conversionEvents": sum(j.conversions for j in group),
                "behaviorPatterns": [p for p, _ in Counter(p for j in group for p in j.patterns).most_common()],
            })
        patterns = Counter(j.pattern for j in selected)
        converted = [j for j in selected if j.converted]
        body: dict[str, Any] = {
            "userId": user_id,
            "dateRange": date_range,
            "granularity": granularity,
            "data": data,
            "insights": {
                "dominantPattern": patterns.most_common(1)[0][0] if patterns else None,
                # what the journeys that converted showed besides converting, most often first
                "conversionTriggers": [p for p, _ in Counter(
                    p for j in converted for p in j.patterns if p != "converted").most_common(3)],
                "conversionRate": round(len(converted) / len(selected), 4) if selected else None,
            },
            "basedOn": {"journeys": len(selected), "source": "completed journeys kept by the insight service"},
        }
        return json_response(body)

    @app.get("/api/v1/behavioral/analytics/predictive")
    async def predictive() -> Response:
        granted = await access()
        query = args()
        user_id = query.get("userId")
        if not user_id:
            raise InvalidInput("userId", "a userId is required")
        kind = PREDICTION_ALIASES.get(query.get("predictionType") or "", query.get("predictionType") or "conversion")
        if kind not in PREDICTION_TYPES:
            raise InvalidInput("predictionType", f"must be one of {', '.join(PREDICTION_TYPES)}; got {kind!r}")
        horizon_raw = query.get("timeHorizon") or "24h"
        horizon = _duration_ms(HORIZON_WORDS.get(horizon_raw, horizon_raw), "timeHorizon")
        confidence = _confidence(query.get("confidence"))
        project = granted.project.id
        try:
            user = await user_view(project, user_id)
            if user is None:
                return not_found(f"no events for user {user_id!r}")
            view = await session_view(project, user.sessions[0].session_id) if user.sessions else None
        except ActorError as exc:
            return unavailable(exc)
        history = user_journeys(project, user_id)
        span_days = max(1.0, ((user.last_activity or 0) - (user.first_seen or 0)) / DAY_MS)
        rate_per_ms = (len(history) or len(user.sessions)) / (span_days * DAY_MS)
        expected_sessions = rate_per_ms * horizon
        models = pulse.insights.projects.get(project)
        model = models.model if models else None
        ins = view.insights if view is not None else None
        prediction: dict[str, Any]
        if kind == "conversion":
            current = ins.conversion_probability if ins and ins.conversion_probability is not None else None
            fresh = model.start_conversion() if model else None
            if current is None and fresh is None:
                prediction = {"probability": None, "reason": "no model yet: no completed journeys in this project"}
            else:
                miss = (1 - (current or 0.0)) * (1 - (fresh or 0.0)) ** expected_sessions
                p = 1 - miss
                prediction = {"probability": round(p, 4), "confidenceInterval": _wilson(p, model.journeys if model else 0, confidence),
                              "currentSession": current, "perNewSession": None if fresh is None else round(fresh, 4), "expectedSessions": round(expected_sessions, 3)}
        elif kind == "churn":
            p = math.exp(-expected_sessions)  # Poisson: no session within the horizon
            prediction = {"probability": round(p, 4), "confidenceInterval": _wilson(p, len(history) or len(user.sessions), confidence),
                          "expectedSessions": round(expected_sessions, 3)}
        elif kind == "engagement":
            values = [j.engagement for j in history]
            if ins is not None:
                values.append(ins.engagement.score)
            mean = sum(values) / len(values) if values else 0.0
            spread = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else None
            half = _z(confidence) * spread / math.sqrt(len(values)) if spread is not None else None
            prediction = {"value": round(mean, 4), "confidenceInterval": None if half is None else
                          [round(max(0.0, mean - half), 4), round(min(1.0, mean + half), 4)]}
        else:
            nxt = ins.next_action if ins else None
            prediction = {"action": nxt.action if nxt else None, "probability": nxt.probability if nxt else None,
                          "distribution": nxt.distribution if nxt else [],
                          "confidenceInterval": _wilson(nxt.probability, model.journeys, confidence) if nxt and model else None}
        return json_response({
            "userId": user_id,
            "predictionType": kind,
            "timeHorizon": horizon_raw,
            "confidence": confidence,
            "prediction": prediction,
            "basedOn": {"journeys": model.journeys if model else 0, "userJourneys": len(history),
                        "sessionsSeen": len(user.sessions), "modelTypes": model.types if model else 0},
        })

    return user_insights


def _confidence(raw: str | None) -> float:
    if raw is None or raw == "":
        return 0.95
    if raw in CONFIDENCE_WORDS:
        return CONFIDENCE_WORDS[raw]
    try:
        value = float(raw)
    except ValueError:
        raise InvalidInput("confidence", f"expected a number, got {raw!r}") from None
    if value > 1:
        value /= 100  # 95 means 0.95
    if not 0.5 <= value < 1:
        raise InvalidInput("confidence", f"must be between 0.5 and 0.999, got {raw!r}")
    return value


def _date_range(raw: str | None) -> tuple[int | None, int | None, str | None]:
    if not raw:
        return None, None, None
    first, comma, last = raw.partition(",")
    try:
        start = datetime.date.fromisoformat(first.strip())
        end = datetime.date.fromisoformat(last.strip()) if comma else start
    except ValueError:
        raise InvalidInput("dateRange", f"expected YYYY-MM-DD,YYYY-MM-DD, got {raw!r}") from None
    if end < start:
        raise InvalidInput("dateRange", "the end is before the start")
    epoch = datetime.date(1970, 1, 1)
    return (start - epoch).days * DAY_MS, ((end - epoch).days + 1) * DAY_MS, raw


def _iso_day(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC).date().isoformat()


def _iso_hour(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC).strftime("%Y-%m-%dT%H:00:00Z")


def _priority(confidence: float) -> str:
    return "high" if confidence >= 0.7 else "medium" if confidence >= 0.4 else "low"


_IMPLICATIONS: Final = {
    "research_focused": ["needs_detailed_information", "high_conversion_potential"],
    "high_intent_researcher": ["needs_detailed_information", "ready_for_conversion_assist"],
    "price_sensitive": ["price_conscious", "responds_to_value_messaging"],
    "comparison_behavior": ["evaluating_alternatives", "needs_comparison_support"],
    "high_engagement": ["receptive_to_content"],
    "cart_abandonment_risk": ["conversion_at_risk"],
    "bounce_risk": ["may_leave_soon"],
    "converted": ["post_purchase_opportunity"],
}
