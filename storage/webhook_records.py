"""The records the Store keeps for webhooks (issue 13 item 4); tables in storage/webhooks_schema.py.

Times are unix milliseconds. A delivery's ``id`` is its Standard Webhooks ``webhook-id``.
"""

from __future__ import annotations

from typing import Final, Literal, Protocol

import msgspec

PENDING: Final = "pending"
DELIVERING: Final = "delivering"
DELIVERED: Final = "delivered"
DEAD: Final = "dead"
DeliveryStatus = Literal["pending", "delivering", "delivered", "dead"]
STATUSES: Final = (PENDING, DELIVERING, DELIVERED, DEAD)


class Webhook(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    project: str
    url: str
    events: tuple[str, ...]  # trigger_fired, workflow_action, or event type names
    secret: str  # whsec_<base64>
    created_at: int
    disabled_reason: str | None = None  # set when the receiver answered 410 Gone


class NewDelivery(msgspec.Struct, frozen=True, kw_only=True):
    """A notification to record as a pending delivery (due at once)."""

    id: str
    webhook_id: str
    project: str
    kind: str
    dedup_key: str
    body: bytes  # the exact JSON sent and signed
    created_at: int


class Delivery(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    webhook_id: str
    project: str
    kind: str
    dedup_key: str
    body: bytes
    status: str
    attempts: int  # attempts started (counted when claimed)
    created_at: int
    retry_from: int  # the retry window counts from here (created_at, or the last replay)
    next_attempt_at: int
    lease_owner: str | None
    lease_until: int | None
    last_error: str | None
    last_status: int | None  # the receiver's last HTTP status (None: no answer)
    finished_at: int | None  # delivered or dead at


class Claim(msgspec.Struct, frozen=True, kw_only=True):
    """What a node asks for when it claims due deliveries."""

    owner: str  # the node id, written as lease_owner
    now_ms: int
    lease_ms: int
    limit: int  # rows at most
    per_webhook: int  # rows at most per receiver
    exclude: tuple[str, ...] = ()  # receivers already at their concurrency bound on this node


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """The end of one attempt. Stored only while ``owner`` still holds the lease (fencing)."""

    id: str
    owner: str
    status: str  # DELIVERED, PENDING (retry at next_attempt_at) or DEAD
    next_attempt_at: int
    error: str | None
    http_status: int | None
    now_ms: int


class QueueDepth(msgspec.Struct, frozen=True):
    pending: int
    delivering: int
    dead: int



class WebhookStore(Protocol):
    """The Store's webhook methods (part of storage.base.Store; both backends implement them)."""

    async def create_webhook(self, hook: Webhook) -> None: ...
    async def list_webhooks(self, project: str | None) -> list[Webhook]:
        """The project's webhooks, oldest first; every project's when ``project`` is None."""
    async def delete_webhook(self, project: str, webhook_id: str) -> bool:
        """Remove the webhook and its deliveries; False when the project has no such webhook."""
    async def disable_webhook(self, webhook_id: str, reason: str, now_ms: int) -> None:
        """Mark it disabled (it answered 410 Gone); its open deliveries become dead with ``reason``."""
    async def record_deliveries(self, rows: list[NewDelivery]) -> int:
        """Store the deliveries as pending, due now, committed when this returns (one transaction);
        a (webhook_id, dedup_key) already recorded is skipped. Returns how many were new."""
    async def claim_deliveries(self, claim: Claim) -> list[Delivery]:
        """Atomically lease due deliveries (pending and due, or delivering with an expired lease) to
        ``claim.owner``: status delivering, attempts + 1. Concurrent claims (other nodes) never
        get the same row while its lease holds."""
    async def finish_delivery(self, outcome: Outcome) -> bool:
        """Record an attempt's end, only if ``outcome.owner`` still holds the row (else False)."""
    async def replay_deliveries(self, project: str, webhook_id: str, delivery_id: str | None, now_ms: int) -> int:
        """Put dead deliveries (one, or all of the webhook's) back to pending, due now, with a new
        retry window. Returns how many."""
    async def list_deliveries(self, project: str, webhook_id: str, status: str, limit: int) -> list[Delivery]:
        """The webhook's deliveries in ``status``, newest first."""
    async def get_delivery(self, project: str, delivery_id: str) -> Delivery | None: ...
    async def webhook_queue_depth(self) -> QueueDepth: ...
    async def prune_deliveries(self, before_ms: int) -> int:
        """Forget delivered rows finished before ``before_ms``; returns how many."""
