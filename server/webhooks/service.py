"""The webhook service of one node: records notifications durably, then delivers them.

Path of a notification:

1. ``notify`` (sync, on the caller's task: a trigger firing, the pipeline after a commit) looks the
   project's subscribed webhooks up in the in-memory Registry, encodes the body once, and puts one
   row per webhook on a bounded buffer (BUFFER_ROWS). It never awaits: a full buffer drops the
   row and counts it (``notifications_dropped``, in /metrics). Nothing is durable yet.
2. The recorder takes everything buffered and stores it in one ``record_deliveries`` call: from
   its commit on, the delivery is durable (pending, due now) and survives a crash or restart. A
   crash before that loses what was in the buffer (at most BUFFER_ROWS rows, usually the last few
   milliseconds of notifications).
3. The dispatcher claims due rows with a lease (``lease_ms``: two attempt timeouts + 10 s) in the store, never more than MAX_IN_FLIGHT
   at once on this node nor PER_RECEIVER per webhook, and runs one attempt per row. The attempt's
   end is stored only while this node still holds the lease; a node that dies mid-attempt leaves
   the lease to expire, and the row is due again (for any node): delivery is at least once, and the
   receiver deduplicates by ``webhook-id``.
"""

from __future__ import annotations

import datetime
import logging
import os
import random
import secrets
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Final, Protocol

import msgspec
import trio

from protocol.record import Event
from protocol.views import stored_event
from server.webhooks import backoff, signing
from server.webhooks.registry import REFRESH_S, Registry
from server.webhooks.sender import DEFAULT_TIMEOUT_S, Attempt, HttpSender
from storage.base import Store, StoreError
from storage.webhook_records import (
    DEAD,
    DELIVERED,
    PENDING,
    Claim,
    Delivery,
    NewDelivery,
    Outcome,
    QueueDepth,
    Webhook,
)

log = logging.getLogger("pulse.webhooks")

BUFFER_ROWS: Final = 10_000  # notifications accepted and not yet recorded
RECORD_BATCH: Final = 1_000  # rows per store call
RECORD_TRIES: Final = 3  # store calls per batch before it is given up (and counted lost)
RECORD_RETRY_S: Final = 1.0
MAX_IN_FLIGHT: Final = 64  # attempts at once on this node, all receivers together
PER_RECEIVER: Final = 4  # attempts at once to one webhook: a slow receiver holds at most these
POLL_S: Final = 1.0  # how often due rows are looked for without a local reason to (other nodes' rows)
DEPTH_S: Final = 5.0  # how often the queue depth gauges are re-read
PRUNE_EVERY_S: Final = 3_600.0
KEEP_DELIVERED_MS: Final = 7 * 86_400_000  # delivered rows kept this long (the receiver's audit)
FINISH_TRIES: Final = 3
RELEASE_S: Final = 0.5  # shutdown: time to give a cancelled attempt's row back
STOP_S: Final = 1.0  # shutdown: time for the buffer to be recorded and attempts to end
RETRY_WINDOW_ENV: Final = "PULSE_WEBHOOK_RETRY_WINDOW"  # seconds (default one day)
TIMEOUT_ENV: Final = "PULSE_WEBHOOK_TIMEOUT"  # seconds per attempt (default 10)


class Sender(Protocol):
    timeout_s: float

    async def send(self, url: str, key: bytes, delivery: Delivery) -> Attempt: ...
    async def aclose(self) -> None: ...


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def _env_seconds(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if not raw:
        return default
    value = float(raw)
    if not value > 0:
        raise ValueError(f"{name} must be a positive number of seconds, got {raw!r}")
    return value


class WebhookService:
    def __init__(self, store: Store, node_id: str, *, sender: Sender | None = None,
                 now_ms: Callable[[], int] = wall_ms, retry_window_ms: int | None = None,
                 rng: random.Random | None = None) -> None:  # fmt: skip
        self.store = store
        self.node_id = node_id
        timeout_s = _env_seconds(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)
        self.sender: Sender = sender or HttpSender(timeout_s)
        self.now_ms = now_ms
        self.retry_window_ms = retry_window_ms or int(_env_seconds(RETRY_WINDOW_ENV, backoff.DEFAULT_WINDOW_MS / 1000)
                                                      * 1000)
        # A claimed row waits at most one attempt for its receiver's slot, then makes its own.
        self.lease_ms = int(2 * self.sender.timeout_s * 1000) + 10_000
        self.rng = rng or random.Random()
        self.registry = Registry()
        self.counts: Counter[str] = Counter()  # totals since start, exported by server/prometheus.py
        self.depth = QueueDepth(0, 0, 0)
        self.in_flight = 0
        self._per_hook: Counter[str] = Counter()
        self._limiters: dict[str, trio.CapacityLimiter] = {}
        self._send, self._receive = trio.open_memory_channel[NewDelivery](BUFFER_ROWS)
        self._wake = trio.Event()  # set when rows may be due: recorded, replayed, or an attempt ended
        self._next_due: int | None = None  # the soonest retry this node scheduled
        self._stopping = False
        self._recording = False  # a batch is being stored
        self._recorded = trio.Event()  # set after each batch (stop waits on it)

    # the entry points -------------------------------------------------------------------------
    def notify(self, project_id: str, kind: str, data: dict[str, Any], dedup_key: str) -> None:
        """Queue a ``kind`` notification for every webhook of the project that wants it. Never
        blocks; durable once recorded (see the module doc). ``dedup_key``: the same key for the same
        webhook is delivered once, however often it is notified (retries, several nodes)."""
        hooks = self.registry.subscribed(project_id, kind)
        if hooks:
            self._queue(hooks, project_id, kind, data, dedup_key)

    def _queue(self, hooks: list[Webhook], project_id: str, kind: str, data: Any, dedup_key: str) -> None:
        """One buffered row per webhook; ``data``: anything msgspec encodes (a dict, a Struct)."""
        body = encode_body(kind, data, self.now_ms())
        for hook in hooks:
            row = NewDelivery(id="msg_" + secrets.token_urlsafe(18), webhook_id=hook.id, project=project_id,
                              kind=kind, dedup_key=dedup_key, body=body, created_at=self.now_ms())
            try:
                self._send.send_nowait(row)
            except trio.WouldBlock:
                self.counts["notifications_dropped"] += 1
            else:
                self.counts["notifications_accepted"] += 1

    def events_committed(self, events: list[Event]) -> None:
        """The pipeline's hook, after a commit, with the new events of one request (one project):
        a delivery per event whose type some webhook of the project wants. One dict get when none."""
        if not events:
            return
        types = self.registry.event_types.get(events[0].project)
        if not types:
            return
        for event in events:
            if event.name in types:
                hooks = self.registry.subscribed(event.project, event.name)
                if hooks:  # the stored event as GET /api/events shows it (seed 004)
                    self._queue(hooks, event.project, event.name, stored_event(event), "event:" + event.id)

    # running ----------------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await self.refresh()
        except StoreError as exc:  # the refresh loop tries again
            log.warning("webhooks: cannot read the registry yet: %s", exc)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._refresh_loop)
            nursery.start_soon(self._record_loop)
            nursery.start_soon(self._depth_loop)
            task_status.started()
            try:
                await self._dispatch_loop()
            finally:
                with trio.move_on_after(STOP_S) as scope:
                    scope.shield = True
                    await self.sender.aclose()

    async def stop(self, deadline_s: float = STOP_S) -> None:
        """Stop claiming; give the buffer up to ``deadline_s`` to be recorded. Attempts in flight
        are cancelled and their rows given back, due at once (``_release``); a row whose release
        cannot be stored keeps its lease and is tried again when it expires."""
        self._stopping = True
        self._wake.set()
        with trio.move_on_after(deadline_s):
            while self._receive.statistics().current_buffer_used or self._recording:
                self._recorded = trio.Event()
                await self._recorded.wait()

    async def refresh(self) -> None:
        self.registry.replace(await self.store.list_webhooks(None))

    def wake(self) -> None:
        self._wake.set()

    async def _refresh_loop(self) -> None:
        while True:
            await trio.sleep(REFRESH_S)
            try:
                await self.refresh()
            except StoreError as exc:
                log.warning("webhooks: registry refresh failed: %s", exc)

    async def _record_loop(self) -> None:
        while True:
            row = await self._receive.receive()
            self._recording = True
            batch = [row]
            while len(batch) < RECORD_BATCH:
                try:
                    batch.append(self._receive.receive_nowait())
                except trio.WouldBlock:
                    break
            await self._record(batch)
            self._recording = False
            self._recorded.set()

    async def _record(self, batch: list[NewDelivery]) -> None:
        for attempt in range(RECORD_TRIES):
            try:
                new = await self.store.record_deliveries(batch)
            except StoreError as exc:
                log.warning("webhooks: recording %d deliveries failed (try %d): %s", len(batch), attempt + 1, exc)
                await trio.sleep(RECORD_RETRY_S)
                continue
            self.counts["deliveries_recorded"] += new
            self.counts["notifications_deduplicated"] += len(batch) - new
            self._wake.set()
            return
        self.counts["notifications_lost"] += len(batch)
        log.error("webhooks: %d notifications lost: the store refused them %d times", len(batch), RECORD_TRIES)

    async def _depth_loop(self) -> None:
        pruned_at = trio.current_time()
        while True:
            try:
                self.depth = await self.store.webhook_queue_depth()
                if trio.current_time() - pruned_at >= PRUNE_EVERY_S:
                    pruned_at = trio.current_time()
                    self.counts["deliveries_pruned"] += await self.store.prune_deliveries(
                        self.now_ms() - KEEP_DELIVERED_MS)
            except StoreError as exc:
                log.warning("webhooks: reading the queue depth failed: %s", exc)
            await trio.sleep(DEPTH_S)

    async def _dispatch_loop(self) -> None:
        async with trio.open_nursery() as attempts:
            while not self._stopping:
                self._wake = trio.Event()
                claimed = await self._claim()
                for delivery in claimed:
                    self.in_flight += 1
                    self._per_hook[delivery.webhook_id] += 1
                    attempts.start_soon(self._attempt, delivery)
                if claimed and self.in_flight < MAX_IN_FLIGHT:
                    continue  # there may be more due
                await self._sleep_until_due()
            attempts.cancel_scope.cancel()

    async def _claim(self) -> list[Delivery]:
        free = MAX_IN_FLIGHT - self.in_flight
        if free <= 0:
            return []
        saturated = tuple(hook for hook, n in self._per_hook.items() if n >= PER_RECEIVER)
        claim = Claim(owner=self.node_id, now_ms=self.now_ms(), lease_ms=self.lease_ms, limit=free,
                      per_webhook=PER_RECEIVER, exclude=saturated)
        try:
            return await self.store.claim_deliveries(claim)
        except StoreError as exc:
            log.warning("webhooks: claiming due deliveries failed: %s", exc)
            return []

    async def _sleep_until_due(self) -> None:
        now = self.now_ms()
        wait_s = POLL_S
        if self._next_due is not None:
            wait_s = min(wait_s, max(0.0, (self._next_due - now) / 1000))
            if self._next_due <= now + int(POLL_S * 1000):
                self._next_due = None  # this wait covers it
        with trio.move_on_after(wait_s):
            await self._wake.wait()

    async def _attempt(self, delivery: Delivery) -> None:
        try:
            limiter = self._limiters.get(delivery.webhook_id)
            if limiter is None:
                limiter = self._limiters[delivery.webhook_id] = trio.CapacityLimiter(PER_RECEIVER)
            async with limiter:
                await self._deliver(delivery)
        except trio.Cancelled:
            await self._release(delivery)
            raise
        except Exception:  # a bug or a store outage mid-attempt: the lease expires and it is retried
            log.exception("webhooks: attempt of %s failed unexpectedly", delivery.id)
            self.counts["attempt_errors"] += 1
        finally:
            self.in_flight -= 1
            self._per_hook[delivery.webhook_id] -= 1
            if not self._per_hook[delivery.webhook_id]:
                del self._per_hook[delivery.webhook_id]
            self._wake.set()

    async def _release(self, delivery: Delivery) -> None:
        """A cancelled attempt (shutdown) gives its row back, due now, instead of leaving it leased
        until ``lease_ms``: the next start (or another node) retries it at once. The receiver may have
        got it already; it deduplicates by webhook-id."""
        outcome = Outcome(id=delivery.id, owner=self.node_id, status=PENDING, next_attempt_at=self.now_ms(),
                          error="attempt interrupted by shutdown", http_status=None, now_ms=self.now_ms())
        with trio.move_on_after(RELEASE_S) as scope:
            scope.shield = True
            try:
                await self.store.finish_delivery(outcome)
            except StoreError:
                pass  # the lease expires instead

    async def _deliver(self, delivery: Delivery) -> None:
        hook = self.registry.get(delivery.webhook_id)
        if hook is None:  # registered on another node since the last refresh, or deleted
            await self.refresh()
            hook = self.registry.get(delivery.webhook_id)
        if hook is None:
            self.counts["deliveries_orphaned"] += 1  # deleted with its deliveries: nothing to record
            return
        # The client's timeout bounds each read and write; this bounds the whole attempt (a receiver
        # dripping bytes cannot hold it past the lease).
        with trio.move_on_after(self.sender.timeout_s) as deadline:
            result = await self.sender.send(hook.url, signing.secret_key(hook.secret), delivery)
        if deadline.cancelled_caught:
            result = Attempt(False, False, None, f"no complete answer within {self.sender.timeout_s:g} s")
        now = self.now_ms()
        if result.ok:
            status, due = DELIVERED, now
            self.counts["attempts_delivered"] += 1
        else:
            self.counts["attempts_failed"] += 1
            retry_at = None if result.gone else backoff.next_attempt(
                now, delivery.retry_from, delivery.attempts, self.retry_window_ms, self.rng, result.retry_after_ms)
            if retry_at is None:
                status, due = DEAD, now
                self.counts["deliveries_dead"] += 1
            else:
                status, due = PENDING, retry_at
                self.counts["retries_scheduled"] += 1
                self._next_due = due if self._next_due is None else min(self._next_due, due)
        outcome = Outcome(id=delivery.id, owner=self.node_id, status=status, next_attempt_at=due,
                          error=result.error, http_status=result.http_status, now_ms=now)
        await self._finish(outcome)
        if result.gone:
            reason = f"disabled: the receiver answered 410 Gone to delivery {delivery.id}"
            await self.store.disable_webhook(hook.id, reason, now)
            self.counts["webhooks_disabled"] += 1
            await self.refresh()

    async def _finish(self, outcome: Outcome) -> None:
        for attempt in range(FINISH_TRIES):
            try:
                if not await self.store.finish_delivery(outcome):
                    self.counts["outcomes_fenced"] += 1  # the lease had passed to another claim
                return
            except StoreError as exc:
                log.warning("webhooks: recording the outcome of %s failed (try %d): %s", outcome.id, attempt + 1, exc)
                await trio.sleep(RECORD_RETRY_S)
        # The lease expires and the row is tried again: at least once, never lost.
        self.counts["outcomes_unrecorded"] += 1


def encode_body(kind: str, data: Any, now_ms: int) -> bytes:
    """The Standard Webhooks payload: ``{"type", "timestamp" (ISO 8601 UTC), "data"}``."""
    when = datetime.datetime.fromtimestamp(now_ms / 1000, tz=datetime.UTC)
    stamp = when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return msgspec.json.encode({"type": kind, "timestamp": stamp, "data": data})
