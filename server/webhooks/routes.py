"""The webhook routes (docs/automation.md, "Webhooks"). Every route needs the project's secret key
(or open loopback access): a webhook sends the project's data elsewhere.

POST   /api/v1/behavioral/webhooks                              register {url, events, secret?}
GET    /api/v1/behavioral/webhooks                              list (secrets never shown again)
DELETE /api/v1/behavioral/webhooks/{id}                         remove it and its deliveries
GET    /api/v1/behavioral/webhooks/{id}/deliveries?status=&limit=
GET    /api/v1/behavioral/webhooks/{id}/dead-letters?limit=
POST   /api/v1/behavioral/webhooks/{id}/dead-letters/replay     {deliveryId?}: one, or all
"""

from __future__ import annotations

import secrets
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any, Final

import msgspec
from quart import Response, request
from quart_trio import QuartTrio

from protocol.errors import InvalidInput
from server.context import Pulse
from server.webhooks import signing
from storage.webhook_records import DEAD, STATUSES, Delivery, Webhook

BASE: Final = "/api/v1/behavioral/webhooks"
MAX_URL: Final = 2048
MAX_EVENTS: Final = 100
MAX_EVENT_NAME: Final = 200
MAX_WEBHOOKS: Final = 100  # per project
DEFAULT_LIST: Final = 100
MAX_LIST: Final = 1000
FIELDS: Final = ("url", "events", "secret")

Json = Callable[..., Response]


def register(app: QuartTrio, pulse: Pulse, access: Callable[[], Awaitable[Any]], json_response: Json) -> None:
    def not_found(webhook_id: str) -> Response:
        body = {"success": False, "error": {"code": "not_found", "reason": f"no webhook {webhook_id!r}"}}
        return json_response(body, 404)

    async def own_hook(project: str, webhook_id: str) -> Webhook | None:
        return next((h for h in await pulse.store.list_webhooks(project) if h.id == webhook_id), None)

    @app.post(BASE)
    async def create_webhook() -> Response:
        granted = await access()
        project = granted.project.id
        url, events, secret = parse_registration(await request.get_data())
        if len(await pulse.store.list_webhooks(project)) >= MAX_WEBHOOKS:
            raise InvalidInput("$", f"a project has at most {MAX_WEBHOOKS} webhooks", status=409, code="conflict")
        generated = secret is None
        hook = Webhook(id="wh_" + secrets.token_hex(8), project=project, url=url, events=events,
                       secret=secret or signing.new_secret(), created_at=pulse.webhooks.now_ms())
        await pulse.store.create_webhook(hook)
        await pulse.webhooks.refresh()  # this node delivers from now on; others within REFRESH_S
        # The secret is answered here, once: list answers never show it.
        return json_response({"success": True, "webhook": {**webhook_json(hook), "secret": hook.secret,
                                                           "secretGenerated": generated}}, 201)

    @app.get(BASE)
    async def list_webhooks() -> Response:
        granted = await access()
        hooks = await pulse.store.list_webhooks(granted.project.id)
        return json_response({"success": True, "webhooks": [webhook_json(h) for h in hooks]})

    @app.delete(BASE + "/<webhook_id>")
    async def delete_webhook(webhook_id: str) -> Response:
        granted = await access()
        if not await pulse.store.delete_webhook(granted.project.id, webhook_id):
            return not_found(webhook_id)
        await pulse.webhooks.refresh()
        return json_response({"success": True, "deleted": webhook_id})

    @app.get(BASE + "/<webhook_id>/deliveries")
    async def deliveries(webhook_id: str) -> Response:
        granted = await access()
        status = request.args.get("status") or DEAD
        if status not in STATUSES:
            raise InvalidInput("status", f"must be one of {', '.join(STATUSES)}; got {status!r}")
        return await listing(granted.project.id, webhook_id, status)

    @app.get(BASE + "/<webhook_id>/dead-letters")
    async def dead_letters(webhook_id: str) -> Response:
        granted = await access()
        return await listing(granted.project.id, webhook_id, DEAD)

    async def listing(project: str, webhook_id: str, status: str) -> Response:
        limit = _limit(request.args.get("limit"))
        if await own_hook(project, webhook_id) is None:
            return not_found(webhook_id)
        rows = await pulse.store.list_deliveries(project, webhook_id, status, limit)
        return json_response({"success": True, "webhookId": webhook_id, "status": status,
                              "deliveries": [delivery_json(d) for d in rows]})

    @app.post(BASE + "/<webhook_id>/dead-letters/replay")
    async def replay(webhook_id: str) -> Response:
        granted = await access()
        project = granted.project.id
        delivery_id = parse_replay(await request.get_data())
        hook = await own_hook(project, webhook_id)
        if hook is None:
            return not_found(webhook_id)
        if hook.disabled_reason is not None:
            raise InvalidInput("$", f"the webhook is {hook.disabled_reason}; register the receiver again",
                               status=409, code="conflict")
        if delivery_id is not None:
            found = await pulse.store.get_delivery(project, delivery_id)
            if found is None or found.webhook_id != webhook_id:
                raise InvalidInput("$.deliveryId", f"no delivery {delivery_id!r} of webhook {webhook_id!r}",
                                   status=404, code="not_found")
            if found.status != DEAD:
                raise InvalidInput("$.deliveryId", f"delivery {delivery_id!r} is {found.status}, not dead",
                                   status=409, code="conflict")
        count = await pulse.store.replay_deliveries(project, webhook_id, delivery_id, pulse.webhooks.now_ms())
        pulse.webhooks.wake()
        return json_response({"success": True, "webhookId": webhook_id, "replayed": count})


def parse_registration(raw: str | bytes) -> tuple[str, tuple[str, ...], str | None]:
    """(url, events, secret or None) from a registration body; InvalidInput names the bad field."""
    body = _object(raw)
    for name in body:
        if name not in FIELDS:
            raise InvalidInput(f"$.{name}", f"unknown field; expected {', '.join(FIELDS)}")
    url = body.get("url")
    if not isinstance(url, str) or not url:
        raise InvalidInput("$.url", "required: an http or https URL")
    if len(url) > MAX_URL:
        raise InvalidInput("$.url", f"longer than {MAX_URL} characters")
    try:
        parts = urllib.parse.urlsplit(url)  # raises ValueError on a bad IPv6 host or a netloc NFKC changes
    except ValueError as exc:
        raise InvalidInput("$.url", f"not a URL: {exc}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise InvalidInput("$.url", f"must be an http or https URL, got scheme {parts.scheme or 'none'!r}")
    try:
        parts.port  # noqa: B018 (raises ValueError on a bad port)
    except ValueError as exc:
        raise InvalidInput("$.url", f"bad port: {exc}") from None
    if not parts.hostname:
        raise InvalidInput("$.url", "has no host")
    events = body.get("events")
    if not isinstance(events, list) or not events:
        raise InvalidInput("$.events", "required: a non-empty list of trigger_fired, workflow_action or event types")
    if len(events) > MAX_EVENTS:
        raise InvalidInput("$.events", f"at most {MAX_EVENTS} entries, got {len(events)}")
    for i, name in enumerate(events):
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_EVENT_NAME or "\x00" in name:
            raise InvalidInput(f"$.events[{i}]", f"must be an event kind or type name of 1 to {MAX_EVENT_NAME} characters")
    secret = body.get("secret")
    if secret is not None:
        if not isinstance(secret, str):
            raise InvalidInput("$.secret", "must be a string whsec_<base64>")
        try:
            signing.secret_key(secret)
        except signing.BadSecret as exc:
            raise InvalidInput("$.secret", str(exc)) from None
    return url, tuple(dict.fromkeys(events)), secret


def parse_replay(raw: str | bytes) -> str | None:
    body = _object(raw) if raw.strip() else {}
    for name in body:
        if name != "deliveryId":
            raise InvalidInput(f"$.{name}", "unknown field; expected deliveryId (or no body: replay all)")
    delivery_id = body.get("deliveryId")
    if delivery_id is not None and (not isinstance(delivery_id, str) or not delivery_id):
        raise InvalidInput("$.deliveryId", "must be a delivery id string")
    return delivery_id


def _object(raw: str | bytes) -> dict[str, Any]:
    try:
        body = msgspec.json.decode(raw or b"null")
    except msgspec.DecodeError as exc:
        raise InvalidInput("$", f"malformed json: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidInput("$", "expected a JSON object")
    return body


def _limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_LIST
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput("limit", f"expected an integer, got {raw!r}") from None
    if not 1 <= value <= MAX_LIST:
        raise InvalidInput("limit", f"must be between 1 and {MAX_LIST}, got {value}")
    return value


def webhook_json(hook: Webhook) -> dict[str, Any]:
    return {
        "id": hook.id,
        "url": hook.url,
        "events": list(hook.events),
        "createdAt": hook.created_at,
        "status": "disabled" if hook.disabled_reason else "active",
        "disabledReason": hook.disabled_reason,
    }


def delivery_json(d: Delivery) -> dict[str, Any]:
    return {
        "id": d.id,  # the webhook-id header of every attempt
        "type": d.kind,
        "dedupKey": d.dedup_key,
        "status": d.status,
        "attempts": d.attempts,
        "createdAt": d.created_at,
        "nextAttemptAt": d.next_attempt_at if d.status == "pending" else None,
        "lastError": d.last_error,
        "lastStatus": d.last_status,
        "finishedAt": d.finished_at,
        "payload": msgspec.json.decode(d.body),
    }
