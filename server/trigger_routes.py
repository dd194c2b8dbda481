"""The trigger routes (seed 000 "Behavioral Trigger Management API"; docs/automation.md).

Every route needs the project's secret key (or open loopback access): triggers act on visitors
and expose what the project's sessions did, so a public write key (browser) may not read or
change them. Triggers belong to the key's project.

POST   /api/v1/behavioral/triggers                      create (seed body and answer)
GET    /api/v1/behavioral/triggers                      list
GET    /api/v1/behavioral/triggers/{id}                 one
PUT    /api/v1/behavioral/triggers/{id}                 update: the keys given replace the stored ones
DELETE /api/v1/behavioral/triggers/{id}                 delete it and everything recorded about it
POST   /api/v1/behavioral/triggers/{id}/test            would it fire for this context, and why (records nothing)
POST   /api/v1/behavioral/triggers/{id}/execute         run its actions for a session now (seed body and answer)
GET    /api/v1/behavioral/triggers/{id}/monitor         recent executions with their reasons
GET    /api/v1/behavioral/triggers/{id}/performance     triggerRate, conversionRate, engagement (+ per variant)
POST   /api/v1/behavioral/triggers/{id}/ab-test         {variants, trafficSplit}
POST   /api/v1/behavioral/triggers/{id}/optimize        Thompson sampling over the variants' conversions
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

import msgspec
from quart import Response, request
from quart_trio import QuartTrio

from actors.automation import abtest
from actors.automation import records as automation_records
from actors.automation.conditions import DictContext
from actors.automation.definition import (
    GATED_STATUSES,
    ABTest,
    Optimization,
    TriggerDef,
    parse_trigger,
    public_status,
)
from actors.automation.engine import Fired, notification_personalization
from actors.automation.index import CompiledTrigger
from actors.automation.performance import performance, variant_data
from actors.hub import KIND_TRIGGER, Attrs
from protocol.errors import InvalidInput
from protocol.normalize import iso_ms
from server import approval_routes
from server.context import Pulse
from server.json_body import json_object
from storage.trigger_records import TriggerRow

BASE: Final = "/api/v1/behavioral/triggers"
MAX_BODY: Final = 256 * 1024
MAX_TRIGGERS: Final = 1000  # per project: each one is evaluated in every matching session
DEFAULT_MONITOR: Final = 50
MAX_MONITOR: Final = 500
MAX_ID: Final = 200
MAX_TIME_MS: Final = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z

Json = Callable[..., Response]
_DECODER: Final = msgspec.json.Decoder(TriggerDef)
_json = msgspec.json.Encoder()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _row(project: str, trigger: TriggerDef) -> TriggerRow:
    return TriggerRow(
        project=project,
        trigger_id=trigger.trigger_id,
        status=trigger.status,
        event_type=str(trigger.conditions["eventType"]).strip().lower(),
        created_ms=trigger.created,
        updated_ms=trigger.updated,
        body=_json.encode(trigger).decode(),
    )


trigger_row = _row  # the stored row of a definition (server/approval_routes.py saves decided triggers too)


def view(trigger: TriggerDef, now: int) -> dict[str, Any]:
    """A trigger as the API shows it: its definition, its status, ISO times."""
    body = msgspec.to_builtins(trigger)
    body["type"] = body.pop("triggerType")
    body["status"] = public_status(trigger, now)
    body["created"] = iso_ms(trigger.created)
    body["updated"] = iso_ms(trigger.updated)
    body["personalization"] = {k: (v if len(v) > 1 else v[0]) for k, v in trigger.personalization.items()}
    if trigger.ab_test is not None:
        body["abTest"]["created"] = iso_ms(trigger.ab_test.created)
        for item in body["abTest"]["optimizations"]:
            item["at"] = iso_ms(item["at"])
    return body


def _integral(body: Any, key: str) -> Any:
    """JSON does not tell 30 from 30.0: an integral number where an integer is expected is one."""
    if isinstance(body, dict):
        value = body.get(key)
        if isinstance(value, float) and value.is_integer():
            return {**body, key: int(value)}
    return body


def register(app: QuartTrio, pulse: Pulse, access: Callable[[], Awaitable[Any]], json_response: Json) -> None:
    def not_found(trigger_id: str) -> Response:
        reason = f"no trigger {trigger_id!r} in this project"
        return json_response({"success": False, "error": {"code": "not_found", "reason": reason}}, 404)

    async def load(project: str, trigger_id: str) -> TriggerDef | None:
        if len(trigger_id) > MAX_ID:
            return None
        row = await pulse.store.get_trigger(project, trigger_id)
        return None if row is None else _DECODER.decode(row.body)

    async def save(project: str, trigger: TriggerDef) -> None:
        await pulse.store.save_trigger(_row(project, trigger))
        pulse.triggers.put(trigger, project)  # this node at once; the others at their next reload

    async def gate(project: str, trigger: TriggerDef) -> TriggerDef:
        """Held ``pending_approval`` with a new approval when it needs one (server/approval_routes.py)."""
        held = await approval_routes.gate_on_create(
            pulse, project, kind="trigger", target_id=trigger.trigger_id, requires=trigger.requires_approval,
            impact=trigger.impact, description=trigger.description or trigger.name,
            automation={"triggerType": trigger.trigger_type, "actions": [a.type for a in trigger.actions]},
        )  # fmt: skip
        return trigger if held is None else msgspec.structs.replace(trigger, status="pending_approval", approval=held)

    def approval_answer(trigger: TriggerDef) -> dict[str, Any]:
        if trigger.status != "pending_approval" or trigger.approval is None:
            return {}
        held = trigger.approval
        return {"approvalId": held.approval_id,
                "approval": {"approvalId": held.approval_id, "status": "pending", "reason": held.reason}}

    @app.post(BASE)
    async def create_trigger() -> Response:
        granted = await access()
        project = granted.project.id
        body = _integral(await json_object(MAX_BODY), "cooldownSeconds")
        now = now_ms()
        trigger = parse_trigger(body, "trigger_" + secrets.token_hex(8), now)
        if len(await pulse.store.list_triggers(project)) >= MAX_TRIGGERS:
            raise InvalidInput("$", f"a project has at most {MAX_TRIGGERS} triggers; delete one first", status=409,
                               code="limit_reached")
        trigger = await gate(project, trigger)
        await save(project, trigger)
        return json_response({
            "triggerId": trigger.trigger_id,
            "status": public_status(trigger, now),
            "created": iso_ms(trigger.created),
            "performance": performance([], None),
            **approval_answer(trigger),
        }, 201)

    @app.get(BASE)
    async def list_triggers() -> Response:
        granted = await access()
        rows = await pulse.store.list_triggers(granted.project.id)
        now = now_ms()
        triggers = [view(_DECODER.decode(row.body), now) for row in rows]
        return json_response({"triggers": triggers, "total": len(triggers)})

    @app.get(f"{BASE}/<trigger_id>")
    async def get_trigger(trigger_id: str) -> Response:
        granted = await access()
        trigger = await load(granted.project.id, trigger_id)
        if trigger is None:
            return not_found(trigger_id)
        return json_response(view(trigger, now_ms()))

    @app.put(f"{BASE}/<trigger_id>")
    async def update_trigger(trigger_id: str) -> Response:
        granted = await access()
        previous = await load(granted.project.id, trigger_id)
        if previous is None:
            return not_found(trigger_id)
        body = _integral(await json_object(MAX_BODY), "cooldownSeconds")
        held = previous.status in GATED_STATUSES
        if held and isinstance(body, dict) and "status" in body:
            raise InvalidInput("$.status", f"the trigger is {previous.status}: only an approval decision changes that",
                               status=409, code=previous.status)
        trigger = parse_trigger(body, trigger_id, max(now_ms(), previous.updated + 1), previous)
        if held:  # a schedule change must not lift the gate either
            trigger = msgspec.structs.replace(trigger, status=previous.status)
        elif "impact" in body or "requiresApproval" in body:  # a bigger reach than was approved: ask again
            trigger = await gate(granted.project.id, trigger)
        await save(granted.project.id, trigger)
        return json_response({**view(trigger, now_ms()), **approval_answer(trigger)})

    @app.delete(f"{BASE}/<trigger_id>")
    async def delete_trigger(trigger_id: str) -> Response:
        granted = await access()
        project = granted.project.id
        if len(trigger_id) > MAX_ID or not await pulse.store.delete_trigger(project, trigger_id):
            return not_found(trigger_id)
        pulse.triggers.remove(project, trigger_id)
        return json_response({"triggerId": trigger_id, "deleted": True})

    @app.post(f"{BASE}/<trigger_id>/test")
    async def test_trigger(trigger_id: str) -> Response:
        """Would the trigger fire for this context? ``{"context": {eventType, eventData, <field>: …},
        "sessionId"?, "timestamp"?}`` (or the context itself). Records nothing."""
        granted = await access()
        trigger = await load(granted.project.id, trigger_id)
        if trigger is None:
            return not_found(trigger_id)
        body = _integral(await json_object(MAX_BODY), "timestamp")
        if not isinstance(body, dict):
            raise InvalidInput("$", "must be a JSON object {context, sessionId?, timestamp?}")
        context_body = body.get("context", body)
        if not isinstance(context_body, dict):
            raise InvalidInput("$.context", "must be an object of field values (eventType, eventData, …)")
        session_id = body.get("sessionId")
        if session_id is not None and (not isinstance(session_id, str) or not session_id):
            raise InvalidInput("$.sessionId", "must be a non-empty string")
        at = body.get("timestamp", now_ms())
        if isinstance(at, bool) or not isinstance(at, int) or not 0 <= at <= MAX_TIME_MS:
            raise InvalidInput("$.timestamp", "unix ms (an integer from 0 to the year 9999)")
        return json_response(evaluate(trigger, DictContext(context_body), session_id, at, now_ms()))

    @app.post(f"{BASE}/<trigger_id>/execute")
    async def execute_trigger(trigger_id: str) -> Response:
        granted = await access()
        project = granted.project.id
        trigger = await load(project, trigger_id)
        if trigger is None:
            return not_found(trigger_id)
        body = await json_object(MAX_BODY)
        session_id, user_id, context = _execute_body(body)
        now = now_ms()
        status = public_status(trigger, now)
        compiled = CompiledTrigger(trigger)
        variant = ""
        if compiled.test_id is not None:
            variant = abtest.assign(compiled.test_id, session_id, compiled.variant_names, compiled.split)
        executed = status == "active" and variant != abtest.CONTROL
        gate = compiled.gate  # approved with conditions: enforced here as on an event
        held_back = executed and gate is not None and trigger.approval is not None and not pulse.triggers.limits.admit(
            project, trigger_id, trigger.approval.approval_id, gate, user_key=user_id or session_id,
            session_id=session_id, device=context.value("deviceType"))
        executed = executed and not held_back
        _, reasons = compiled.conditions.explain(context)
        actions = compiled.actions_for(variant)
        eid = "exe_" + secrets.token_hex(12)
        fired = Fired(
            trigger_id=trigger_id, execution_id=eid, seq=0, at=now, event_type=str(context.value("eventType") or ""),
            variant=variant, executed=executed, trigger_type=trigger.trigger_type, urgency=trigger.urgency,
            actions=[msgspec.to_builtins(a) for a in actions],
            personalization=notification_personalization(compiled, context, actions), reasons=reasons,
        )  # fmt: skip
        await pulse.store.record_trigger_activity([], [automation_records.execution(project, session_id, user_id, fired,
                                                                                    "execute")])
        if executed:
            message = automation_records.notification(fired, session_id, user_id)
            attrs = Attrs(session_id, user_id, None, fired.event_type or None)
            await pulse.fanout.publish(project, [(KIND_TRIGGER, attrs, message, 0)])
            pulse.webhooks.notify(project, "trigger_fired", automation_records.webhook_data(fired, session_id, user_id), eid)
        why = None if executed else (f"the trigger is {status}" if status != "active" else
                                     "an approval condition holds it back" if held_back else "control variant: fires nothing")
        return json_response({
            "executionId": eid,
            "triggered": executed,
            **({"reason": why} if why else {}),
            "variant": variant or None,
            "actions": [
                {"type": a["type"], "executed": executed,
                 "result": {"delivered": "trigger_notification" if executed else None, "parameters": a["parameters"],
                            "personalization": fired.personalization}}
                for a in fired.actions
            ],
            "reasons": msgspec.to_builtins(reasons),
            "tracking": {"trackingId": eid, "attribution": f"{trigger.trigger_type}_trigger"},
        })

    @app.get(f"{BASE}/<trigger_id>/monitor")
    async def monitor_trigger(trigger_id: str) -> Response:
        granted = await access()
        project = granted.project.id
        trigger = await load(project, trigger_id)
        if trigger is None:
            return not_found(trigger_id)
        raw = request.args.get("limit", str(DEFAULT_MONITOR))
        if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_MONITOR:
            raise InvalidInput("limit", f"an integer from 1 to {MAX_MONITOR}, got {raw!r}")
        rows = await pulse.store.trigger_executions(project, trigger_id, int(raw))
        executions = []
        for row in rows:
            detail = msgspec.json.decode(row.detail)
            executions.append({
                "executionId": row.execution_id, "sessionId": row.session_id, "userId": row.user_id,
                "variant": row.variant or None, "executedAt": iso_ms(row.executed_ms), "source": row.source,
                "executed": row.executed, **detail,
            })  # fmt: skip
        return json_response({"triggerId": trigger_id, "status": public_status(trigger, now_ms()),
                              "executions": executions, "count": len(executions)})

    @app.get(f"{BASE}/<trigger_id>/performance")
    async def trigger_performance(trigger_id: str) -> Response:
        granted = await access()
        trigger = await load(granted.project.id, trigger_id)
        if trigger is None:
            return not_found(trigger_id)
        counts = await pulse.store.trigger_counts(granted.project.id, trigger_id)
        return json_response({"triggerId": trigger_id, "status": public_status(trigger, now_ms()),
                              **performance(counts, trigger.ab_test)})

    @app.post(f"{BASE}/<trigger_id>/ab-test")
    async def start_ab_test(trigger_id: str) -> Response:
        granted = await access()
        project = granted.project.id
        trigger = await load(project, trigger_id)
        if trigger is None:
            return not_found(trigger_id)
        variants, split = abtest.parse_test(await json_object(MAX_BODY), trigger.actions)
        now = now_ms()
        test = ABTest(test_id="abt_" + secrets.token_hex(8), variants=variants, traffic_split=split, created=now)
        replaced = trigger.ab_test.test_id if trigger.ab_test is not None else None
        trigger = msgspec.structs.replace(trigger, ab_test=test, updated=max(now, trigger.updated + 1))
        await save(project, trigger)
        return json_response({
            "triggerId": trigger_id,
            "testId": test.test_id,
            "status": "running",
            "variants": [msgspec.to_builtins(v) for v in variants],
            "trafficSplit": split,
            "replacedTestId": replaced,
            "assignment": "sha256(testId:sessionId) placed on the cumulative split; a session keeps its variant",
            "created": iso_ms(now),
        }, 201)

    @app.post(f"{BASE}/<trigger_id>/optimize")
    async def optimize(trigger_id: str) -> Response:
        granted = await access()
        project = granted.project.id
        trigger = await load(project, trigger_id)
        if trigger is None:
            return not_found(trigger_id)
        test = trigger.ab_test
        if test is None:
            raise InvalidInput("$", "the trigger has no A/B test; start one with POST …/ab-test", status=409,
                               code="no_ab_test")
        rows = variant_data(await pulse.store.trigger_counts(project, trigger_id), test)
        data = [(exposures, conversions) for _, _, exposures, conversions in rows]
        seed = f"{test.test_id}:" + ",".join(f"{n}/{c}" for n, c in data)  # same data, same answer
        probabilities = abtest.probability_best(data, seed)
        old_split = list(test.traffic_split)
        # nothing measured: the posteriors are the priors, and sampling noise is no reason to move traffic
        new_split = abtest.thompson_split(probabilities) if any(n for n, _ in data) else old_split
        now = now_ms()
        names = [name for name, _, _, _ in rows]
        record = Optimization(at=now, old_split=old_split, new_split=new_split,
                              probability_best={n: round(p, 4) for n, p in zip(names, probabilities, strict=True)})
        history = [*test.optimizations, record][-abtest.OPTIMIZATIONS_KEPT:]
        updated = msgspec.structs.replace(test, traffic_split=new_split, optimizations=history)
        await save(project, msgspec.structs.replace(trigger, ab_test=updated, updated=max(now, trigger.updated + 1)))
        best = max(range(len(names)), key=lambda i: probabilities[i])
        return json_response({
            "triggerId": trigger_id,
            "testId": test.test_id,
            "method": f"Thompson sampling: Beta(1 + conversions, 1 + exposures - conversions) per variant, "
                      f"{abtest.DRAWS} seeded draws; every variant keeps at least {abtest.EXPLORATION_FLOOR:g}% "
                      "of traffic, the rest is shared by probability of being best",
            "variants": [
                {"variant": name, "exposures": n, "conversions": c, "conversionRate": round(c / n, 6) if n else None,
                 "probabilityBest": round(p, 4), "previousSplit": old, "newSplit": new}
                for (name, _, n, c), p, old, new in zip(rows, probabilities, old_split, new_split, strict=True)
            ],
            "previousSplit": old_split,
            "newSplit": new_split,
            "changed": new_split != old_split,
            "reason": _reason(names, data, probabilities, best),
        })


def _reason(names: list[str], data: list[tuple[int, int]], probabilities: list[float], best: int) -> str:
    total = sum(n for n, _ in data)
    if total == 0:
        return "no exposures measured yet: nothing to learn from, the split is unchanged"
    return (f"{names[best]} is the most likely best variant (P = {probabilities[best]:.3f}) from {total} exposures; "
            "traffic moves toward it in proportion to each variant's probability of being best")


def _execute_body(body: object) -> tuple[str, str | None, DictContext]:
    if not isinstance(body, dict):
        raise InvalidInput("$", "must be a JSON object {sessionId, userId?, context, override?}")
    unknown = sorted(set(body) - {"sessionId", "userId", "context", "override"})
    if unknown:
        raise InvalidInput(f"$.{unknown[0]}", "unknown key; execute takes sessionId, userId, context, override")
    session_id = body.get("sessionId")
    # ids are stored and indexed: no NUL (as on ingest)
    if not isinstance(session_id, str) or not session_id or len(session_id) > MAX_ID or "\x00" in session_id:
        raise InvalidInput("$.sessionId", f"required: the session to run the actions for (1 to {MAX_ID} characters, no NUL)")
    user_id = body.get("userId")
    if user_id is not None and (not isinstance(user_id, str) or len(user_id) > MAX_ID or "\x00" in user_id):
        raise InvalidInput("$.userId", f"must be a string of at most {MAX_ID} characters, no NUL")
    context = body.get("context")
    context = {} if context is None else context
    if not isinstance(context, dict):
        raise InvalidInput("$.context", "must be an object {eventType, eventData}")
    override = body.get("override")
    override = {} if override is None else override
    if not isinstance(override, dict):
        raise InvalidInput("$.override", "must be an object {personalization}")
    personalization = override.get("personalization")
    personalization = {} if personalization is None else personalization
    if not isinstance(personalization, dict):
        raise InvalidInput("$.override.personalization", "must be an object of persona, deviceType, trafficSource")
    merged = {**context, **{k: v for k, v in personalization.items() if k in ("persona", "deviceType", "trafficSource")}}
    if user_id is not None:
        merged.setdefault("userId", user_id)
    return session_id, user_id, DictContext(merged)


def evaluate(trigger: TriggerDef, context: DictContext, session_id: str | None, at: int, now: int) -> dict[str, Any]:
    """The test route's answer: every check in the order the session actor makes them."""
    compiled = CompiledTrigger(trigger)
    status = public_status(trigger, now)
    event_type = context.value("eventType")
    type_ok = isinstance(event_type, str) and event_type.lower() == compiled.conditions.event_type
    schedule_ok = compiled.in_schedule(at)
    personalization = []
    for key, allowed in compiled.personalization.items():
        actual = context.value(key)
        personalization.append({"field": key, "allowed": sorted(allowed), "actual": actual, "passed": actual in allowed})
    conditions_ok, filters = compiled.conditions.explain(context)
    variant = None
    if compiled.test_id is not None and session_id is not None:
        variant = abtest.assign(compiled.test_id, session_id, compiled.variant_names, compiled.split)
    would_fire = (status == "active" and compiled.active and type_ok and schedule_ok
                  and all(p["passed"] for p in personalization) and conditions_ok and variant != abtest.CONTROL)
    reasons: dict[str, Any] = {
        "status": {"status": status, "passed": status == "active"},
        "eventType": {"expected": compiled.conditions.event_type, "actual": event_type, "passed": type_ok},
        "schedule": {"at": iso_ms(at), "passed": schedule_ok,
                     "startDate": trigger.schedule.start_date, "endDate": trigger.schedule.end_date,
                     "timeZone": trigger.schedule.time_zone},
        "personalization": personalization,
        "filters": msgspec.to_builtins(filters),
        "match": "any" if compiled.conditions.match_any else "all",
    }
    if variant is not None:
        reasons["variant"] = {"variant": variant, "passed": variant != abtest.CONTROL}
    return {
        "triggerId": trigger.trigger_id,
        "wouldFire": would_fire,
        "variant": variant,
        "reasons": reasons,
        "note": "once-per-session and cooldown depend on the session's history and are not checked here; nothing is recorded",
    }
