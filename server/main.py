"""Start-up and shutdown of one Pulse node: store, actors, hub, then hypercorn in front.

Shutdown (SIGINT/SIGTERM): stop accepting, tell streams to reconnect (1001 / end of SSE), let
in-flight requests finish (hypercorn's graceful timeout), drain actor mailboxes and write their
snapshots, then cancel the store, which flushes its writer before closing. Bounded: under 10 s.
"""

from __future__ import annotations

import gc
import logging
import signal
from functools import partial
from typing import Any, Final, cast

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from actors.hub import Hub
from actors.metrics import Metrics
from actors.pipeline import IngestPipeline
from actors.runtime import ActorSystem
from actors.session import SessionActor
from actors.user import UserActor
from server import hypercorn_tuning
from server.app import PulseApp
from server.context import Pulse
from server.cors import Cors
from server.settings import Settings
from storage.base import Project
from storage.sqlite import SqliteStore

log = logging.getLogger("pulse")

# Shutdown budget, under the 10 s a supervisor waits: requests 3 s + actors 2 s + store flush <= 5 s.
GRACEFUL_TIMEOUT_S: Final = 3.0  # in-flight requests get this long after we stop accepting
DRAIN_TIMEOUT_S: Final = 2.0  # actor mailboxes + snapshots


def hypercorn_config(settings: Settings) -> Config:
    config = Config()
    config.bind = [f"[{settings.host}]:{settings.port}" if ":" in settings.host else f"{settings.host}:{settings.port}"]
    config.accesslog = None
    config.errorlog = "-"
    config.loglevel = "WARNING"
    config.graceful_timeout = GRACEFUL_TIMEOUT_S
    config.keep_alive_timeout = 75
    config.websocket_ping_interval = settings.ws_ping_interval
    config.websocket_max_message_size = 5 * 1024 * 1024
    config.backlog = 4096
    return config


async def _watch_signals(pulse: Pulse) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("received %s: shutting down", signal.Signals(signum).name)
            break
    pulse.begin_shutdown()


def banner(settings: Settings, binds: list[str], project: Project) -> str:
    url = binds[0] if binds else f"http://{settings.host}:{settings.port}"
    access = "open on loopback (no key needed for the default project)" if settings.open_access else "keys required"
    return "\n".join(
        [
            f"Pulse listening on {url}  (docs: {url}/docs)",
            f"  data:        {settings.data_dir.resolve()}/pulse.db (SQLite, WAL)",
            f"  access:      {access}",
            f"  project:     {project.name} ({project.id})",
            f"  public key:  {project.public_key}   (ingest only; safe in a browser)",
            f"  secret key:  {project.secret_key}   (read + admin)",
        ]
    )


async def run_server(settings: Settings, *, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
    hypercorn_tuning.install(compression=settings.ws_compression, ping_timeout=settings.ws_ping_timeout)
    metrics = Metrics()
    hub = Hub(metrics)
    store = SqliteStore(settings.data_dir, synchronous=settings.synchronous)
    async with trio.open_nursery() as services:
        await services.start(store.run)
        actors = ActorSystem(store, {"session": SessionActor, "user": UserActor}, idle_ttl=settings.idle_ttl)
        await services.start(actors.run)
        pipeline = IngestPipeline(store, actors, hub, metrics)
        pipeline.start_from(await store.max_seq())
        pulse = Pulse(
            settings=settings,
            store=store,
            actors=actors,
            hub=hub,
            metrics=metrics,
            pipeline=pipeline,
            cors=Cors(settings),
        )
        app = PulseApp(pulse)
        signal_scope = trio.CancelScope()

        async def watch_signals() -> None:
            with signal_scope:
                await _watch_signals(pulse)

        async with trio.open_nursery() as edge:
            edge.start_soon(watch_signals)
            binds = await edge.start(partial(serve, cast(Any, app), hypercorn_config(settings), shutdown_trigger=pulse.shutdown.wait))
            project = await store.default_project()
            print(banner(settings, binds, project), flush=True)
            # Long-lived start-up objects never die: keep them out of the GC's generations (DESIGN.md).
            gc.collect()
            gc.freeze()
            gc.set_threshold(50_000, 50, 100)
            task_status.started(binds)
            await pulse.shutdown.wait()
            signal_scope.cancel()
            hub.close_all()  # every socket's writer ends and closes with 1001 (reconnect)
        # hypercorn has returned: no request is in flight any more
        await actors.drain(deadline=DRAIN_TIMEOUT_S)  # a duration in seconds
        hub.close_all()
        services.cancel_scope.cancel()  # the store flushes its writer (shielded) and closes
    log.info("pulse stopped")
