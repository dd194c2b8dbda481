"""Start-up and shutdown of one Pulse node: store, actors, hub, then hypercorn in front.

Shutdown (SIGINT/SIGTERM): stop accepting, tell streams to reconnect (1001 / end of SSE), let
in-flight requests finish (hypercorn's graceful timeout), drain actor mailboxes and write their
snapshots, then cancel the store, which flushes its writer before closing. Bounded: under 10 s.
"""

from __future__ import annotations

import gc
import logging
import os
import secrets
import signal
import socket
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, Final, cast

import trio
from hypercorn.config import Config

from actors.automation.index import TriggerIndex
from actors.automation.workflow_rules import WorkflowRules
from actors.cluster import OP_APPLY, OP_VIEW, ActorRouter
from actors.fanout import Fanout
from actors.hub import Hub
from actors.identity.directory import IdentityDirectory
from actors.insights.service import InsightService
from actors.metrics import Metrics
from actors.pipeline import IngestPipeline
from actors.privacy.consent import ConsentBook
from actors.privacy.sampling import AdaptiveSampler
from actors.runtime import ActorSystem
from actors.session import SessionActor, SessionSummary, SessionView
from actors.user import UserActor, UserSummary, UserView
from server.anomalies import watch_from_env
from server.app import PulseApp
from server.context import Pulse
from server.cors import Cors
from server.edge import server as pulse_edge
from server.edge import stock as stock_edge
from server.edge.websocket import use_pulse_websockets
from server.privacy.deletion import DeletionCounters
from server.privacy.ingest_gate import sample as sample_events
from server.privacy.policies import PolicyBook
from server.privacy.retention import RetentionJob
from server.settings import Settings
from server.suggestions import SuggestionCache
from server.uptime import LifetimeRecorder
from server.webhooks.service import WebhookService
from server.workflow_scheduler import WorkflowScheduler
from storage.base import Project, Store
from storage.sqlite import SqliteStore

log = logging.getLogger("pulse")

# Shutdown budget, under the 10 s a supervisor waits: requests 3 s + actors 2 s + store flush <= 5 s.
GRACEFUL_TIMEOUT_S: Final = 3.0  # in-flight requests get this long after we stop accepting
DRAIN_TIMEOUT_S: Final = 2.0  # actor mailboxes + snapshots
WEBHOOK_STOP_S: Final = 1.0  # buffered webhook notifications recorded (usually none: it returns at once)
SUPERVISOR_POLL_S: Final = 1.0  # how often a worker checks that its supervisor is alive


def hypercorn_config(settings: Settings) -> Config:
    config = Config()
    config.bind = [f"[{settings.host}]:{settings.port}" if ":" in settings.host else f"{settings.host}:{settings.port}"]
    config.accesslog = None
    # hypercorn uses a Logger given as is; its records reach Pulse's root handler (text or JSON)
    config.errorlog = logging.getLogger("hypercorn.error")
    config.loglevel = "WARNING"
    config.graceful_timeout = GRACEFUL_TIMEOUT_S
    config.keep_alive_timeout = 75
    config.websocket_ping_interval = settings.ws_ping_interval
    config.websocket_max_message_size = 5 * 1024 * 1024
    config.backlog = 4096
    # with several workers on one port, hypercorn sets SO_REUSEPORT: the kernel spreads connections
    # (it also warns that `workers` means nothing to serve(); main() silences that one warning)
    config.workers = settings.workers
    return config


async def _watch_signals(pulse: Pulse, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """The first SIGINT/SIGTERM starts the shutdown. The receiver stays open until the process
    ends, so a second signal (Ctrl-C reaches a whole process group; a supervisor forwards SIGTERM
    too) cannot kill a node in the middle of its drain."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for signum in signals:
            if pulse.shutdown.is_set():
                log.info("received %s again: already shutting down", signal.Signals(signum).name)
                continue
            log.info("received %s: shutting down", signal.Signals(signum).name)
            pulse.begin_shutdown()


async def _watch_supervisor(pulse: Pulse, supervisor_pid: int) -> None:
    """A worker whose supervisor is gone (killed with SIGKILL: it could not forward a signal)
    drains and exits instead of serving the port on its own."""
    while os.getppid() == supervisor_pid:  # noqa: ASYNC110 (no event exists for a parent's death)
        await trio.sleep(SUPERVISOR_POLL_S)
    log.warning("supervisor %d is gone: shutting down", supervisor_pid)
    pulse.begin_shutdown()


def banner(settings: Settings, binds: list[str], project: Project, node_id: str) -> str:
    url = binds[0] if binds else f"http://{settings.host}:{settings.port}"
    access = "open on loopback (no key needed for the default project)" if settings.open_access else "keys required"
    if settings.database_url:
        data = f"{_redact(settings.database_url)} (PostgreSQL)"
    else:
        data = f"{settings.data_dir.resolve()}/pulse.db (SQLite, WAL)"
    bus = f"{_redact(settings.redis_url)} (Redis), node {node_id}" if settings.redis_url else "in-process (one node)"
    return "\n".join(
        [
            f"Pulse listening on {url}  (docs: {url}/docs)",
            f"  data:        {data}",
            f"  bus:         {bus}",
            f"  access:      {access}",
            f"  project:     {project.name} ({project.id})",
            f"  public key:  {project.public_key}   (ingest only; safe in a browser)",
            f"  secret key:  {project.secret_key}   (read + admin)",
        ]
    )


def _redact(url: str) -> str:
    """A URL without its password, for logs."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not at or ":" not in creds:
        return url
    return f"{scheme}{sep}{creds.split(':', 1)[0]}:***@{host}"


def default_node_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"


def make_store(settings: Settings) -> Store:
    if settings.database_url:
        from storage.postgres import PostgresStore  # imports trio_asyncio before asyncpg

        return PostgresStore(settings.database_url)
    return SqliteStore(settings.data_dir, synchronous=settings.synchronous)


@asynccontextmanager
async def backend_loop(settings: Settings) -> AsyncIterator[None]:
    """PostgreSQL's driver is asyncio: run everything inside trio-asyncio's loop (DESIGN.md)."""
    if not settings.database_url:
        yield
        return
    import trio_asyncio

    async with trio_asyncio.open_loop():
        yield


async def run_server(settings: Settings, *, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
    warnings.filterwarnings("ignore", message="The config `workers` has no affect when using serve")
    async with backend_loop(settings):
        await _run_node(settings, task_status)


async def _run_node(settings: Settings, task_status: trio.TaskStatus[list[str]]) -> None:
    if settings.edge == "pulse":
        use_pulse_websockets(settings.ws_compression, settings.ws_ping_timeout)
    node_id = settings.node_id or default_node_id()
    metrics = Metrics()
    hub = Hub(metrics)
    store = make_store(settings)
    bus = None
    if settings.redis_url:
        from storage.redis_bus import RedisBus

        bus = RedisBus(
            settings.redis_url, node_id, stream_maxlen=settings.stream_retention,
            stream_max_bytes=settings.stream_retention_bytes, link_grace_s=settings.redis_grace,
        )  # fmt: skip
    async with trio.open_nursery() as services:
        await services.start(store.run)
        lifetime = LifetimeRecorder(store, node_id)  # the health's availability (server/uptime.py)
        await services.start(lifetime.run)
        if bus is not None:
            await services.start(bus.run)  # started even when Redis is down: it reconnects by itself
        policies = PolicyBook(store)  # consent default, rate limits, sampling, retention (docs/privacy.md)
        await services.start(policies.run)  # loaded now, then reloaded: other nodes' changes
        # every user's consent (actors/privacy/consent.py): loaded now, then the other nodes' changes
        consent = ConsentBook(store, lambda project: policies.get(project).consent_default)
        await services.start(consent.run)
        insights = InsightService(store)
        triggers = TriggerIndex()  # every project's triggers, for the session actors (actors/automation/)
        if bus is not None:  # approval limits are split between the live nodes (actors/automation/approval.py)
            triggers.limits.nodes = lambda: len(bus.live_nodes()) or 1
        await services.start(partial(triggers.run, store))  # loaded now, then reloaded: other nodes' changes
        workflow_rules = WorkflowRules(triggers)  # workflows: another rule source of the same engine
        await services.start(partial(workflow_rules.run, store))
        sessions = partial(SessionActor, insights=insights, triggers=triggers)
        actors = ActorSystem(store, {"session": sessions, "user": UserActor}, idle_ttl=settings.idle_ttl)
        await services.start(actors.run)
        router = ActorRouter(
            actors,
            bus,
            {
                ("session", OP_APPLY): SessionSummary,
                ("session", OP_VIEW): SessionView,
                ("user", OP_APPLY): UserSummary,
                ("user", OP_VIEW): UserView,
            },
        )
        fanout = Fanout(hub, metrics, bus)
        fanout.on_journey(insights)  # in a cluster, journeys completed anywhere reach every node's models
        await services.start(insights.run)
        pipeline = IngestPipeline(store, actors, router, fanout, metrics)
        pipeline.start_from(await store.max_seq())
        identity = IdentityDirectory(store, pipeline.linked_users)  # linked sessions reach their user's streams
        await services.start(identity.run)  # loaded now, then reloaded every second: other nodes' links
        pipeline.consent = consent  # the consent stage, before the commit
        webhooks = WebhookService(store, node_id)  # durable signed deliveries (server/webhooks/)
        await services.start(webhooks.run)
        pipeline.after_commit = webhooks.events_committed  # deliveries for the event types webhooks chose
        pipeline.on_trigger_fired = lambda project, data, key: webhooks.notify(project, "trigger_fired", data, key)
        workflows = WorkflowScheduler(store, workflow_rules, node_id, fanout=fanout, webhooks=webhooks)
        await services.start(workflows.run)  # durable delayed actions, claimed with a lease
        pipeline.on_workflow_fired = workflows.schedule
        pulse = Pulse(
            settings=settings,
            store=store,
            actors=actors,
            hub=hub,
            metrics=metrics,
            pipeline=pipeline,
            cors=Cors(settings),
            node_id=node_id,
            bus=bus,
            router=router,
            fanout=fanout,
            insights=insights,
            webhooks=webhooks,
            triggers=triggers,
            policies=policies,
            workflows=workflows,
            identity=identity,
            consent=consent,
        )
        pulse.sampler = AdaptiveSampler(latency_ms=settings.sampling_latency_ms)
        if bus is not None:  # each node refills its buckets at rate / live nodes (server/privacy/rate_limit.py)
            pulse.limits.nodes = lambda: len(bus.live_nodes()) or 1
        pipeline.sample = partial(sample_events, pulse)  # adaptive sampling, a project option
        pulse.deletions = DeletionCounters()  # data erasures (server/privacy/deletion.py)
        pulse.retention = RetentionJob(store, interval=settings.retention_interval, bus=bus)
        await services.start(pulse.retention.run)  # at start, then every --retention-interval
        pulse.suggestions = SuggestionCache(store, transitions=insights.transitions)  # funnels from the journeys
        await services.start(pulse.suggestions.run)
        app = PulseApp(pulse)
        await services.start(watch_from_env(store, hub).run)  # live anomalies (server/anomalies.py)
        await services.start(partial(_watch_signals, pulse))  # until the very end of the process
        if settings.supervisor_pid is not None:
            services.start_soon(_watch_supervisor, pulse, settings.supervisor_pid)
        async with trio.open_nursery() as edge:
            config = hypercorn_config(settings)
            if settings.edge == "pulse":
                serve = partial(pulse_edge.serve, app, config, pulse=pulse, shutdown_trigger=pulse.shutdown.wait)
            else:  # stock hypercorn.trio.serve, for comparison and as a fallback
                serve = partial(stock_edge.serve, cast(Any, app), config, shutdown_trigger=pulse.shutdown.wait)
            binds = await edge.start(serve)
            project = await store.default_project()
            if settings.worker_index:  # the first worker prints the whole banner; the others one line
                print(f"Pulse worker {settings.worker_index} ready (node {node_id})", flush=True)
            else:
                print(banner(settings, binds, project, node_id), flush=True)
            # Long-lived start-up objects never die: keep them out of the GC's generations (DESIGN.md).
            gc.collect()
            gc.freeze()
            gc.set_threshold(50_000, 50, 100)
            task_status.started(binds)
            await pulse.shutdown.wait()
            hub.close_all()  # every socket's writer ends and closes with 1001 (reconnect)
        # hypercorn has returned: no request is in flight any more
        await actors.drain(deadline=DRAIN_TIMEOUT_S)  # a duration in seconds
        hub.close_all()
        await webhooks.stop(WEBHOOK_STOP_S)  # buffered notifications recorded; no new claims
        await lifetime.stop()  # a clean stop, recorded while the store is still open
        services.cancel_scope.cancel()  # the bus leaves the cluster; the store flushes and closes
    log.info("pulse stopped")
