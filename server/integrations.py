"""The integration connectors' state and the incremental sync (seed "System Integration APIs").

Connectors, each read when asked (nothing cached, nothing constant):

- ``webhook:<id>``: a registered receiver. Health from its real deliveries created in the last
  WINDOW_MS: none failing -> healthy; some failing (retrying or dead) and some delivered -> degraded;
  failing and none delivered, or disabled (410 Gone) -> unhealthy. ``lastSync`` is its newest
  successful delivery.
- ``database``: the same read (and empty commit) probe as /api/v1/behavioral/health.
- ``bus``: Redis when configured (connected or not, live nodes); ``not_configured`` on one node.
- ``streams``: open WebSockets and SSE streams and stream subscribers of this process.

``dataConsistency`` (percent): of the deliveries created in the window that have had an outcome,
the share delivered: delivered / (delivered + dead + retrying). None when there were none.

Sync: per receiver a cursor (storage ``sync_cursors``: the last event seq exported). A sync sends
the project's events after it, oldest first by seq, in batches of BATCH_EVENTS (at most
MAX_BATCHES per receiver per call; ``more`` says when events remain), each batch one durable
delivery of kind ``sync_batch`` recorded straight in the webhook store (signed and retried like
every delivery), then moves the cursor by compare-and-set. Syncs on one node run one at a time
(a lock), so two syncs never send an event twice; two nodes syncing the same receiver at the
same instant can both record a batch before one wins the cursor (the other stops): that batch
overlaps, under its own webhook-id, and receivers deduplicate by the events' ids. A crash between
the record and the cursor move re-sends the same range under the same dedup key, which the store
records once: not twice.
"""

from __future__ import annotations

import secrets
import time
from typing import Any, Final

import trio

from protocol.errors import InvalidInput
from protocol.normalize import iso_ms
from protocol.views import stored_event
from server.context import Pulse
from server.health import DEGRADED, HEALTHY, UNHEALTHY, probe_database, websocket_check
from server.webhooks.service import encode_body
from storage.approval_records import CursorAdvance, ReceiverHealth
from storage.webhook_records import NewDelivery, Webhook

WINDOW_MS: Final = 24 * 3_600_000  # the deliveries the receivers' health and dataConsistency count
BATCH_EVENTS: Final = 250  # events per sync_batch delivery
MAX_BATCHES: Final = 20  # per receiver per sync call
SYNC_KIND: Final = "sync_batch"
SYNC_KEYS: Final = frozenset({"systems", "syncType", "dataTypes"})
EXPORTED_TYPES: Final = ("behavioral_events",)
KNOWN_TYPES: Final = ("behavioral_events", "user_profiles", "performance_metrics")  # the seed's names
_SEVERITY: Final = {HEALTHY: 0, DEGRADED: 1, UNHEALTHY: 2}

_sync_locks: dict[str, trio.Lock] = {}  # project -> this node's sync lock


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def receiver_health_state(hook: Webhook, counts: ReceiverHealth | None) -> tuple[str, str | None]:
    """(health, why) of one receiver from its deliveries in the window."""
    if hook.disabled_reason is not None:
        return UNHEALTHY, f"disabled: {hook.disabled_reason}"
    if counts is None:
        return HEALTHY, None
    failing = counts.retrying + counts.dead
    if not failing:
        return HEALTHY, None
    error = counts.last_error or (f"HTTP {counts.last_status}" if counts.last_status else "failed attempts")
    if counts.delivered:
        return DEGRADED, f"{failing} of {failing + counts.delivered} deliveries failing ({error})"
    return UNHEALTHY, f"no delivery succeeded; {failing} failing ({error})"


def consistency(rows: list[ReceiverHealth]) -> tuple[float | None, dict[str, int]]:
    delivered = sum(r.delivered for r in rows)
    dead = sum(r.dead for r in rows)
    retrying = sum(r.retrying for r in rows)
    decided = delivered + dead + retrying
    basis = {"delivered": delivered, "dead": dead, "retrying": retrying, "inFlight": sum(r.in_flight for r in rows)}
    return (round(100.0 * delivered / decided, 2) if decided else None), basis


async def status(pulse: Pulse, project: str) -> dict[str, Any]:
    now = now_ms()
    hooks = await pulse.store.list_webhooks(project)
    counts = await pulse.store.receiver_health(project, now - WINDOW_MS)
    by_hook = {c.webhook_id: c for c in counts}
    cursors = {c.webhook_id: c for c in await pulse.store.sync_cursors(project)}
    integrations: dict[str, Any] = {}
    for hook in hooks:
        found = by_hook.get(hook.id)
        health, why = receiver_health_state(hook, found)
        cursor = cursors.get(hook.id)
        last_ok = found.last_delivered_ms if found is not None else None
        integrations[f"webhook:{hook.id}"] = {
            "type": "webhook_receiver",
            "url": hook.url,
            "status": "disabled" if hook.disabled_reason is not None else "active",
            "lastSync": None if last_ok is None else iso_ms(last_ok),
            "dataFlow": "outbound",
            "health": health,
            **({"reason": why} if why else {}),
            "deliveries": {"delivered": found.delivered if found else 0, "dead": found.dead if found else 0,
                           "retrying": found.retrying if found else 0, "inFlight": found.in_flight if found else 0,
                           "windowHours": WINDOW_MS // 3_600_000},
            "lastError": found.last_error if found else None,
            "lastStatus": found.last_status if found else None,
            "export": None if cursor is None else {"afterSeq": cursor.after_seq, "lastExport": iso_ms(cursor.synced_ms),
                                                    "eventsSent": cursor.events_sent},
        }
    started = time.perf_counter()
    database = await probe_database(pulse.store)
    probe_ms = round((time.perf_counter() - started) * 1000, 3)
    integrations["database"] = {
        "type": "database", "status": "active" if database.state == HEALTHY else "failing",
        "lastSync": iso_ms(now) if database.state == HEALTHY else None, "dataFlow": "bidirectional",
        "health": database.state, **({"reason": database.reason} if database.reason else {}), "probeMs": probe_ms,
    }  # fmt: skip
    bus = pulse.bus
    if bus is None:
        integrations["bus"] = {"type": "redis", "status": "not_configured", "lastSync": None, "dataFlow": "bidirectional",
                               "health": HEALTHY, "reason": "one node: events move in process"}
    else:
        integrations["bus"] = {
            "type": "redis", "status": "active" if bus.connected else "disconnected",
            "lastSync": iso_ms(now) if bus.connected else None, "dataFlow": "bidirectional",
            "health": HEALTHY if bus.connected else DEGRADED, "liveNodes": list(bus.live_nodes()),
            **({} if bus.connected else {"reason": f"redis is not connected: {bus.last_error}"}),
        }  # fmt: skip
    metrics = pulse.metrics
    sockets = websocket_check(metrics.open_websockets, pulse.settings.max_websockets)
    integrations["streams"] = {
        "type": "streams", "status": "active", "lastSync": None, "dataFlow": "outbound", "health": sockets.state,
        **({"reason": sockets.reason} if sockets.reason else {}), "websockets": metrics.open_websockets,
        "sse": metrics.open_sse, "subscribers": pulse.hub.subscriber_count(),
    }  # fmt: skip
    worst = max((_SEVERITY.get(c["health"], 1) for c in integrations.values()), default=0)
    value, basis = consistency(counts)
    return {
        "integrations": integrations,
        "overallHealth": (HEALTHY, DEGRADED, UNHEALTHY)[worst],
        "dataConsistency": value,
        "dataConsistencyBasis": {**basis, "windowHours": WINDOW_MS // 3_600_000,
                                 "formula": "100 * delivered / (delivered + dead + retrying)"},
        "checkedAt": iso_ms(now),
    }


def parse_sync(body: object, hooks: list[Webhook]) -> tuple[list[Webhook], list[dict[str, str]]]:
    """The receivers to sync and the data types that are named but not exported (reported)."""
    if not isinstance(body, dict):
        raise InvalidInput("$", "must be a JSON object {systems?, syncType?, dataTypes?}")
    unknown = sorted(set(body) - SYNC_KEYS)
    if unknown:
        raise InvalidInput(f"$.{unknown[0]}", f"unknown key; a sync has {', '.join(sorted(SYNC_KEYS))}")
    kind = body.get("syncType", "incremental")
    if kind != "incremental":
        raise InvalidInput("$.syncType", "only \"incremental\" (events since each receiver's last sync)")
    types = body.get("dataTypes", list(EXPORTED_TYPES))
    if not isinstance(types, list) or not types:
        raise InvalidInput("$.dataTypes", f"a non-empty list of {', '.join(KNOWN_TYPES)}")
    skipped = []
    for i, name in enumerate(types):
        if name not in KNOWN_TYPES:
            raise InvalidInput(f"$.dataTypes[{i}]", f"unknown data type {name!r}; one of {', '.join(KNOWN_TYPES)}")
        if name not in EXPORTED_TYPES:
            skipped.append({"dataType": name, "reason": "not exported by the sync: only behavioral_events are"})
    if not any(name in EXPORTED_TYPES for name in types):
        raise InvalidInput("$.dataTypes", "must include behavioral_events (the only data type the sync exports)")
    enabled = [h for h in hooks if h.disabled_reason is None]
    systems = body.get("systems")
    if systems is None:
        return enabled, skipped
    if not isinstance(systems, list) or not systems:
        raise InvalidInput("$.systems", "a non-empty list of webhook ids (GET /api/v1/behavioral/webhooks)")
    by_id = {h.id: h for h in hooks}
    chosen = []
    for i, hook_id in enumerate(systems):
        hook = by_id.get(hook_id) if isinstance(hook_id, str) else None
        if hook is None:
            raise InvalidInput(f"$.systems[{i}]", f"no webhook {hook_id!r} in this project")
        if hook.disabled_reason is not None:
            raise InvalidInput(f"$.systems[{i}]", f"webhook {hook_id!r} is disabled: {hook.disabled_reason}")
        if hook not in chosen:
            chosen.append(hook)
    return chosen, skipped


async def _sync_receiver(pulse: Pulse, project: str, hook: Webhook, after: int) -> dict[str, Any]:
    first = after
    sent = 0
    deliveries: list[str] = []
    more = False
    raced = False
    for batch_index in range(MAX_BATCHES):
        events = await pulse.store.events_after(project, after, limit=BATCH_EVENTS)
        if not events:
            break
        last = events[-1].seq
        now = now_ms()
        data = {"webhookId": hook.id, "fromSeq": events[0].seq, "toSeq": last, "count": len(events),
                "events": [stored_event(e) for e in events]}
        delivery = NewDelivery(id="msg_" + secrets.token_urlsafe(18), webhook_id=hook.id, project=project, kind=SYNC_KIND,
                               dedup_key=f"sync:{after}:{last}", body=encode_body(SYNC_KIND, data, now), created_at=now)
        if await pulse.store.record_deliveries([delivery]):
            deliveries.append(delivery.id)
        moved = await pulse.store.advance_sync_cursor(CursorAdvance(
            project=project, webhook_id=hook.id, expected_seq=after, after_seq=last, synced_ms=now, sent=len(events)))
        if not moved:  # another node's sync moved it first: it owns the rest
            raced = True
            break
        sent += len(events)
        after = last
        if len(events) < BATCH_EVENTS:
            break
        more = batch_index == MAX_BATCHES - 1
    return {"webhookId": hook.id, "url": hook.url, "afterSeqBefore": first, "afterSeq": after, "eventsSent": sent,
            "deliveryIds": deliveries, "more": more, **({"raced": True} if raced else {})}


async def sync(pulse: Pulse, project: str, body: object) -> dict[str, Any]:
    hooks = await pulse.store.list_webhooks(project)
    chosen, skipped = parse_sync(body, hooks)
    started = now_ms()
    lock = _sync_locks.setdefault(project, trio.Lock())
    receivers = []
    async with lock:
        cursors = {c.webhook_id: c.after_seq for c in await pulse.store.sync_cursors(project)}
        for hook in chosen:
            receivers.append(await _sync_receiver(pulse, project, hook, cursors.get(hook.id, 0)))
    if any(r["deliveryIds"] for r in receivers):
        pulse.webhooks.wake()  # the dispatcher claims the new rows now, not at its next poll
    return {
        "syncId": "sync_" + secrets.token_hex(8),
        "syncType": "incremental",
        "status": "partial" if any(r["more"] or r.get("raced") for r in receivers) else "completed",
        "receivers": receivers,
        "eventsSent": sum(r["eventsSent"] for r in receivers),
        "deliveries": sum(len(r["deliveryIds"]) for r in receivers),
        "skipped": skipped,
        "startedAt": iso_ms(started),
        "finishedAt": iso_ms(now_ms()),
    }
