"""GET /metrics: this node's figures in the Prometheus text format (docs/metrics.md).

A custom collector reads, at scrape time, the counters Pulse keeps anyway (actors/metrics.py, the
actor system, the hub, the store's write queue, the Redis bus and the cluster router). The only
things counted for this route while serving are the coarse bucket counts of the latency histograms
and the answers per status code (actors/metrics.py: one bisect and one dict increment).

Every series carries a ``node`` label, the node id (``--node-id``, or host-pid-random): one process
is one node, and with ``--workers`` each worker is its own node. Counters are totals since the
process started (``_total``); gauges are current values.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable, Iterator
from typing import Any, Final

from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from actors.metrics import EXPORT_BOUNDS_MS, Histogram
from actors.runtime import MAILBOX_SIZE
from server.context import Pulse
from storage.write_queue import WriteQueueFront

# The Redis bus's stats (storage/redis_bus.py RedisBus.stats) that are current values; its other
# numeric entries are totals since start and are exported as counters.
_BUS_GAUGES: Final = {
    "connected": "1 while the link to Redis is up",
    "alone": "1 while this node serves every key by itself (no link to Redis, and no grace left)",
    "live_nodes": "Nodes alive in the cluster, as this node last read the membership",
    "publish_queue": "Stream entries accepted by the bus and not yet sent to Redis",
}
_BUS_NOT_EXPORTED: Final = frozenset({"last_error"})  # text, shown by /api/v1/behavioral/health
_BUS_COUNTERS: Final = {
    "reconnects": "New links to Redis after the first one",
    "membership_changes": "Changes of the cluster's live nodes seen by this node",
    "published": "Stream entries (one request's messages each) written to Redis",
    "publish_refused": "Stream entries refused at once: Redis not connected or the publish queue full",
    "publish_failures": "Stream entries whose write to Redis failed (delivered to this node's subscribers only)",
    "publish_unconfirmed": "Stream entries being written when the link broke (may or may not have reached Redis)",
    "received": "Stream entries received from Redis",
    "duplicates_dropped": "Stream entries received again after a gap fill had delivered them, skipped",
    "gap_filled": "Stream entries read back from Redis to fill a gap after a reconnect",
    "gaps_unfillable": "Gaps that could not be filled: the stream was trimmed past them",
    "callback_errors": "Errors raised by the handlers of received entries",
    "bad_messages": "Received entries that could not be decoded",
    "absences": "Times this node stood still longer than the node TTL and was dropped by the others",
    "outages_within_grace": "Redis outages after which this node's actors may be stale",
    "solo_periods_seen": "Times another node was seen back from serving every key alone",
    "rpc_calls": "Node-to-node calls made by this node",
    "rpc_timeouts": "Node-to-node calls that got no reply in time",
    "rpc_unreachable": "Node-to-node calls refused at once (outgoing queue full)",
    "rpc_remote_errors": "Node-to-node calls answered with an error",
    "rpc_handled": "Node-to-node calls from other nodes handled here",
    "rpc_handler_errors": "Node-to-node calls from other nodes whose handling failed",
    "rpc_refused_busy": "Node-to-node calls from other nodes refused: request queue full",
    "rpc_expired": "Node-to-node calls from other nodes that waited past their caller's deadline",
    "rpc_replies_dropped": "Replies to other nodes that could not be sent",
    "rpc_bad_frames": "Node-to-node frames that could not be decoded",
}
_ROUTER_COUNTERS: Final = {
    "forwarded": "Batches of actor messages forwarded to the nodes that own the actors",
    "served": "Batches of actor messages from other nodes handled here",
    "reroutes": "Rounds of actor messages sent again because an owner moved meanwhile",
    "rebuilds": "Times this node retired its actors (to rebuild them from the log) after membership changes",
    "actorsRebuilt": "Actors retired by those rebuilds",
}


class PulseCollector(Collector):
    """Reads one node's figures when Prometheus scrapes; keeps no state of its own."""

    def __init__(self, pulse: Pulse) -> None:
        self.pulse = pulse

    def collect(self) -> Iterator[Metric]:
        node = self.pulse.node_id
        yield from self._node(node)
        yield from self._ingest(node)
        yield from self._http(node)
        yield from self._connections(node)
        yield from self._actors(node)
        yield from self._queues(node)
        yield from self._drops(node)
        yield from self._webhooks(node)
        yield from self._workflows(node)
        if self.pulse.bus is not None:
            yield from self._cluster(node)

    def _node(self, node: str) -> Iterable[Metric]:
        settings = self.pulse.settings
        info = GaugeMetricFamily("pulse_node_info", "Always 1: this node's id and how it is set up",
                                 labels=["node", "storage", "bus", "edge"])
        info.add_metric([node, settings.storage_name, "redis" if self.pulse.bus is not None else "local", settings.edge], 1)
        yield info
        yield _gauge("pulse_start_time_seconds", "When this node started (Unix time, seconds)", node, self.pulse.started_at)
        yield _gauge("pulse_draining", "1 while the node shuts down (new streams refused)", node, int(self.pulse.draining))

    def _ingest(self, node: str) -> Iterable[Metric]:
        metrics = self.pulse.metrics
        events = CounterMetricFamily(
            "pulse_ingested_events",
            "Events received by the ingest routes, by outcome: stored (durable), duplicate (eventId seen "
            "before, not stored again) or rejected (invalid, answered with the reason)",
            labels=["node", "outcome"],
        )
        events.add_metric([node, "stored"], metrics.events_stored)
        events.add_metric([node, "duplicate"], metrics.events_duplicate)
        events.add_metric([node, "rejected"], metrics.events_rejected)
        yield events
        yield _counter("pulse_event_processing_failures", "Stored events whose live processing (actors) failed",
                       node, metrics.processing_failures)
        yield _histogram(
            "pulse_ingest_duration_seconds",
            "Ingest requests from receipt until their events are stored and processed",
            node, metrics.processing,
        )

    def _http(self, node: str) -> Iterable[Metric]:
        metrics = self.pulse.metrics
        responses = CounterMetricFamily("pulse_http_responses", "HTTP answers by status code (streams not counted)",
                                        labels=["node", "status"])
        for status, count in sorted(metrics.statuses.items()):
            responses.add_metric([node, str(status)], count)
        yield responses
        yield _histogram("pulse_http_response_duration_seconds",
                         "Time to answer HTTP requests, every route (streams not counted)", node, metrics.responses)

    def _connections(self, node: str) -> Iterable[Metric]:
        metrics = self.pulse.metrics
        connections = GaugeMetricFamily("pulse_open_connections", "Open streaming connections by transport",
                                        labels=["node", "transport"])
        connections.add_metric([node, "websocket"], metrics.open_websockets)
        connections.add_metric([node, "sse"], metrics.open_sse)
        yield connections
        yield _gauge("pulse_websockets_max", "WebSockets this node accepts (--max-websockets); more are refused",
                     node, self.pulse.settings.max_websockets)
        yield _gauge("pulse_stream_subscribers", "Stream subscriptions registered with the hub (WebSocket and SSE)",
                     node, self.pulse.hub.subscriber_count())

    def _actors(self, node: str) -> Iterable[Metric]:
        stats = self.pulse.actors.stats()
        live = GaugeMetricFamily("pulse_actors", "Live actors by kind", labels=["node", "kind"])
        for kind, count in sorted(stats.live_actors.items()):
            live.add_metric([node, kind], count)
        yield live
        yield _gauge("pulse_actors_stopped", "Actors stopped after repeated crashes (cooling down)", node, stats.stopped)
        yield _gauge("pulse_actor_mailbox_messages", "Messages waiting in all actor mailboxes", node,
                     stats.mailbox_depth_total)
        yield _gauge("pulse_actor_mailbox_max_messages", "Messages waiting in the fullest actor mailbox", node,
                     stats.mailbox_depth_max)
        yield _gauge("pulse_actor_mailbox_capacity", "Messages one actor mailbox holds before ingestion waits",
                     node, MAILBOX_SIZE)
        yield _counter("pulse_actor_messages_handled", "Messages handled by actors", node, stats.messages_handled)
        yield _counter("pulse_actor_crashes", "Actor crashes (an exception while handling or activating)", node,
                       stats.crashes)
        yield _counter("pulse_actor_restarts", "Actor restarts after a crash", node, stats.restarts)
        yield _counter("pulse_actor_passivations", "Actors passivated after being idle", node, stats.passivations)

    def _queues(self, node: str) -> Iterable[Metric]:
        store = self.pulse.store
        if isinstance(store, WriteQueueFront):  # the group-commit stores; others have no write queue
            yield _gauge("pulse_store_write_queue", "Writes waiting for the store's writer (group commit)", node,
                         store.queue_depth())

    def _drops(self, node: str) -> Iterable[Metric]:
        metrics = self.pulse.metrics
        drops = CounterMetricFamily(
            "pulse_drops",
            "Things Pulse dropped or refused on purpose, by reason (units per reason: docs/metrics.md)",
            labels=["node", "reason"],
        )
        counted = {**metrics.drops, "rejected_event": metrics.events_rejected, "websocket_refused": metrics.ws_refused}
        for reason, count in sorted(counted.items()):
            drops.add_metric([node, reason], count)
        yield drops

    def _webhooks(self, node: str) -> Iterable[Metric]:
        """The webhook service's totals (server/webhooks/service.py) and its durable queue's depth
        (re-read from the store every few seconds, not at scrape time: the scrape never waits on it)."""
        service = self.pulse.webhooks
        counts = service.counts
        notifications = CounterMetricFamily(
            "pulse_webhook_notifications",
            "Webhook notifications by outcome: accepted (buffered), dropped (buffer full), lost (the store "
            "refused them), recorded (durable deliveries), deduplicated (a dedup key recorded before)",
            labels=["node", "outcome"],
        )
        for outcome in ("accepted", "dropped", "lost"):
            notifications.add_metric([node, outcome], counts["notifications_" + outcome])
        notifications.add_metric([node, "recorded"], counts["deliveries_recorded"])
        notifications.add_metric([node, "deduplicated"], counts["notifications_deduplicated"])
        yield notifications
        attempts = CounterMetricFamily("pulse_webhook_attempts", "Webhook delivery attempts by outcome",
                                       labels=["node", "outcome"])
        attempts.add_metric([node, "delivered"], counts["attempts_delivered"])
        attempts.add_metric([node, "failed"], counts["attempts_failed"])
        yield attempts
        yield _counter("pulse_webhook_retries", "Failed webhook deliveries scheduled for another attempt", node,
                       counts["retries_scheduled"])
        yield _counter("pulse_webhook_dead_letters", "Webhook deliveries that went to the dead-letter list here",
                       node, counts["deliveries_dead"])
        yield _counter("pulse_webhook_disabled", "Webhooks disabled because their receiver answered 410 Gone", node,
                       counts["webhooks_disabled"])
        depth = GaugeMetricFamily("pulse_webhook_queue", "Webhook deliveries in the store by status (all nodes)",
                                  labels=["node", "status"])
        depth.add_metric([node, "pending"], service.depth.pending)
        depth.add_metric([node, "delivering"], service.depth.delivering)
        depth.add_metric([node, "dead"], service.depth.dead)
        yield depth
        yield _gauge("pulse_webhook_in_flight", "Webhook delivery attempts in flight on this node", node,
                     service.in_flight)

    def _workflows(self, node: str) -> Iterable[Metric]:
        """The workflow scheduler's totals (server/workflow_scheduler.py) and the store's action
        backlog (re-read every few seconds, not at scrape time)."""
        scheduler = self.pulse.workflows
        if scheduler is None:
            return
        counts = scheduler.counts
        actions = CounterMetricFamily(
            "pulse_workflow_actions",
            "Workflow actions by outcome on this node: scheduled (stored), deduplicated (a firing seen twice), "
            "schedule_failed (lost: the store refused them), run (done here), fenced (ended after its lease passed "
            "to another node), reclaimed (claimed after an expired lease), released (given back at shutdown), "
            "errors (a run failed; it runs again after its lease), timeouts, skipped (its workflow was deleted, paused "
            "or rejected since it fired)",
            labels=["node", "outcome"],
        )
        for outcome, key in (("scheduled", "actions_scheduled"), ("deduplicated", "actions_deduplicated"),
                             ("schedule_failed", "schedule_failed"), ("run", "actions_run"),
                             ("fenced", "actions_fenced"), ("reclaimed", "actions_reclaimed"),
                             ("released", "actions_released"), ("errors", "run_errors"),
                             ("timeouts", "run_timeouts"), ("skipped", "actions_skipped")):
            actions.add_metric([node, outcome], counts[key])
        yield actions
        yield _counter("pulse_workflow_webhooks", "workflow_action webhook deliveries recorded by workflow actions",
                       node, counts["webhooks_recorded"])
        yield _counter("pulse_workflow_stream_pushes", "workflow actions pushed to conversion_triggers streams", node,
                       counts["stream_pushed"])
        depth = GaugeMetricFamily("pulse_workflow_action_queue", "Workflow actions in the store by status (all nodes)",
                                  labels=["node", "status"])
        depth.add_metric([node, "scheduled"], scheduler.depth[0])
        depth.add_metric([node, "running"], scheduler.depth[1])
        yield depth

    def _cluster(self, node: str) -> Iterable[Metric]:
        bus = self.pulse.bus
        for key, value in bus.stats().items():
            if key in _BUS_NOT_EXPORTED:
                continue
            if key in _BUS_GAUGES:
                yield _gauge(f"pulse_bus_{key}", _BUS_GAUGES[key], node, int(value))
            else:  # a counter added to the bus later shows up too, described by its name
                doc = _BUS_COUNTERS.get(key, f"Redis bus counter {key!r} (storage/redis_bus.py)")
                yield _counter(f"pulse_bus_{key}", doc, node, value)
        router = self.pulse.router.stats()
        yield _gauge("pulse_cluster_nodes", "Nodes the actor router places actors on", node, len(router["nodes"]))
        for key, doc in _ROUTER_COUNTERS.items():
            yield _counter(f"pulse_cluster_{_snake(key)}", doc, node, router[key])


def _gauge(name: str, doc: str, node: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=["node"])
    family.add_metric([node], value)
    return family


def _counter(name: str, doc: str, node: str, value: float) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=["node"])
    family.add_metric([node], value)
    return family


def _histogram(name: str, doc: str, node: str, histogram: Histogram) -> HistogramMetricFamily:
    """A Prometheus histogram (seconds) from one of Pulse's (milliseconds): cumulative counts at
    EXPORT_BOUNDS_MS, kept since start beside the fine buckets."""
    buckets: list[tuple[str, float]] = []
    seen = 0
    for bound_ms, count in zip(EXPORT_BOUNDS_MS, histogram.export_counts, strict=False):
        seen += count
        buckets.append((floatToGoString(bound_ms / 1000), seen))
    buckets.append(("+Inf", histogram.total))
    family = HistogramMetricFamily(name, doc, labels=["node"])
    family.add_metric([node], buckets, histogram.sum / 1000)
    return family


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


def registry_for(pulse: Pulse) -> CollectorRegistry:
    """A private registry (never the global one: several apps may live in one test process) with
    Pulse's figures and the standard process_* metrics (CPU, memory, open files) of this process."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PulseCollector(pulse))
    ProcessCollector(registry=registry)
    return registry


def exposition(registry: CollectorRegistry, accept: str, accept_encoding: str) -> tuple[bytes, dict[str, Any]]:
    """The scrape's body and headers: the Prometheus text format 0.0.4 unless the scraper asks for
    OpenMetrics (Prometheus does, in its Accept header); gzipped when accepted."""
    encode, content_type = choose_encoder(accept)
    body = encode(registry)
    headers = {"Content-Type": content_type, "Cache-Control": "no-store", "Vary": "Accept, Accept-Encoding"}
    if gzip_accepted(accept_encoding):
        body = gzip.compress(body, compresslevel=1)
        headers["Content-Encoding"] = "gzip"
    return body, headers
