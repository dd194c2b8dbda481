"""An in-memory stand-in for the Store's webhook methods, for the scheduler's virtual-time tests.

The real backends' threads and asyncio loop would let trio's autojump clock leap over their work;
this one answers at once. It keeps the same contract, which test_store_webhooks.py checks on the
real backends: due rows, leases, per-receiver bound, fencing.
"""

from __future__ import annotations

from collections import Counter

import msgspec

from storage.webhook_records import (
    DEAD,
    DELIVERING,
    PENDING,
    Claim,
    Delivery,
    NewDelivery,
    Outcome,
    QueueDepth,
    Webhook,
)


class MemoryWebhookStore:
    def __init__(self) -> None:
        self.hooks: dict[str, Webhook] = {}
        self.rows: dict[str, Delivery] = {}
        self.claims: list[tuple[str, int, str]] = []  # (owner, now_ms, delivery id) of every claimed row
        self.killed: set[str] = set()  # owners whose process is gone (kill -9): their writes never arrive

    async def list_webhooks(self, project: str | None) -> list[Webhook]:
        return [h for h in self.hooks.values() if project is None or h.project == project]

    async def disable_webhook(self, webhook_id: str, reason: str, now_ms: int) -> None:
        self.hooks[webhook_id] = msgspec.structs.replace(self.hooks[webhook_id], disabled_reason=reason)
        for d in list(self.rows.values()):
            if d.webhook_id == webhook_id and d.status in (PENDING, DELIVERING):
                self.rows[d.id] = msgspec.structs.replace(d, status=DEAD, last_error=reason, finished_at=now_ms,
                                                          lease_owner=None, lease_until=None)

    async def record_deliveries(self, rows: list[NewDelivery]) -> int:
        keys = {(d.webhook_id, d.dedup_key) for d in self.rows.values()}
        new = 0
        for r in rows:
            if (r.webhook_id, r.dedup_key) in keys:
                continue
            keys.add((r.webhook_id, r.dedup_key))
            self.rows[r.id] = Delivery(
                id=r.id, webhook_id=r.webhook_id, project=r.project, kind=r.kind, dedup_key=r.dedup_key, body=r.body,
                status=PENDING, attempts=0, created_at=r.created_at, retry_from=r.created_at,
                next_attempt_at=r.created_at, lease_owner=None, lease_until=None, last_error=None, last_status=None,
                finished_at=None,
            )  # fmt: skip
            new += 1
        return new

    async def claim_deliveries(self, claim: Claim) -> list[Delivery]:
        due = sorted(
            (d for d in self.rows.values()
             if d.webhook_id not in claim.exclude
             and ((d.status == PENDING and d.next_attempt_at <= claim.now_ms)
                  or (d.status == DELIVERING and d.lease_until is not None and d.lease_until <= claim.now_ms))),
            key=lambda d: (d.next_attempt_at, d.id),
        )  # fmt: skip
        per: Counter[str] = Counter()
        taken: list[Delivery] = []
        for d in due:
            if len(taken) == claim.limit:
                break
            if per[d.webhook_id] == claim.per_webhook:
                continue
            per[d.webhook_id] += 1
            leased = msgspec.structs.replace(d, status=DELIVERING, lease_owner=claim.owner,
                                             lease_until=claim.now_ms + claim.lease_ms, attempts=d.attempts + 1)
            self.rows[d.id] = leased
            self.claims.append((claim.owner, claim.now_ms, d.id))
            taken.append(leased)
        return taken

    async def finish_delivery(self, outcome: Outcome) -> bool:
        if outcome.owner in self.killed:
            return False
        d = self.rows.get(outcome.id)
        if d is None or d.status != DELIVERING or d.lease_owner != outcome.owner:
            return False
        finished = outcome.now_ms if outcome.status != PENDING else None
        self.rows[d.id] = msgspec.structs.replace(
            d, status=outcome.status, next_attempt_at=outcome.next_attempt_at, last_error=outcome.error,
            last_status=outcome.http_status, finished_at=finished, lease_owner=None, lease_until=None,
        )  # fmt: skip
        return True

    async def webhook_queue_depth(self) -> QueueDepth:
        count = Counter(d.status for d in self.rows.values())
        return QueueDepth(count[PENDING], count[DELIVERING], count[DEAD])

    async def prune_deliveries(self, before_ms: int) -> int:
        return 0
