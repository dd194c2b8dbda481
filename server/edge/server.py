"""The Pulse edge: accept, connections, deadlines and shutdown, around hypercorn's protocol classes.

hypercorn's own trio server (``hypercorn.trio.serve``) restarts a keep-alive timer task twice per
request, takes a lock and a shielded scope for every write and spawns a task per request: at
~440 µs of CPU per small request, about a third of Pulse's time went to that glue and h11
(DESIGN.md). Here Pulse owns the sockets:

- accept: each listening socket in one task, up to ACCEPT_BATCH connections per wake-up;
- one task per connection (server/edge/connection.py): hot ingest requests are served natively
  (server/edge/native.py); everything else by hypercorn's HTTP/1.1 (and h2c) protocol classes,
  which run the ASGI app (Quart and Pulse's streams) exactly as hypercorn would;
- deadlines (keep-alive, a request's arrival) and WebSocket pings on timer wheels
  (server/edge/wheel.py), not a task or a cancel scope per connection;
- shutdown: stop accepting, close idle connections, let requests in flight finish within the
  graceful timeout, then cancel what is left; the app's lifespan runs around all of it.

``--edge hypercorn`` serves through stock ``hypercorn.trio.serve`` instead (server/edge/stock.py).
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any, Final

import trio
from hypercorn.app_wrappers import ASGIWrapper
from hypercorn.config import Config
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import parse_socket_addr, repr_socket_addr

from server.context import Pulse
from server.edge.connection import Connection
from server.edge.native import DateHeader
from server.edge.websocket import expire_ping, ping_tick
from server.edge.wheel import DeadlineWheel

log = logging.getLogger("pulse.edge")

ACCEPT_BATCH: Final = 64  # connections accepted per wake-up before letting other tasks run
DEADLINE_TICK_S: Final = 0.5  # resolution of keep-alive and request deadlines
# accept() errors that mean "out of a resource for now": wait and retry (as trio.serve_listeners)
ACCEPT_CAPACITY_ERRNOS: Final = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
ACCEPT_RETRY_S: Final = 0.1


class EdgeContext(WorkerContext):
    """hypercorn's worker context (shutdown events, request counting) plus the ping wheel its
    WebSocket streams use (server/edge/websocket.py)."""

    def __init__(self) -> None:
        super().__init__(None)
        self.pings: DeadlineWheel | None = None


class Edge:
    """What the connections of one server share."""

    def __init__(self, pulse: Pulse | None, app: Any, config: Config, nursery: trio.Nursery, state: dict[str, Any]) -> None:
        self.pulse = pulse  # None: no native path (an app that is not Pulse's, in tests)
        self.app = app
        self.config = config
        self.nursery = nursery  # every connection and app task runs in it
        # the lifespan state every connection's scopes start from (shared, as stock hypercorn does)
        self.connection_state = ConnectionState(state.copy())
        self.context = EdgeContext()
        self.stopping = self.context.terminated
        self.keep_alive_s = float(config.keep_alive_timeout)
        self.date = DateHeader()
        self.address: Any = None
        self._cors: dict[str | None, list[tuple[bytes, bytes]]] = {}
        self.deadlines = DeadlineWheel(nursery, self.stopping, DEADLINE_TICK_S,
                                       lambda conn, now: conn.expire(now), lambda conn: conn.at_shutdown())
        interval = config.websocket_ping_interval
        if interval:
            self.context.pings = DeadlineWheel(nursery, self.stopping, ping_tick(interval), expire_ping)

    def cors_headers(self, origin: str | None) -> list[tuple[bytes, bytes]]:
        """The CORS headers for ``origin``, computed once per origin (a handful per deployment)."""
        headers = self._cors.get(origin)
        if headers is None:
            assert self.pulse is not None
            headers = self.pulse.cors.headers_for(origin)
            if len(self._cors) < 1024:
                self._cors[origin] = headers
        return list(headers)

    async def accept(self, listener: socket.socket) -> None:
        while True:
            try:
                for _ in range(ACCEPT_BATCH):
                    sock, peer = listener.accept()
                    sock.setblocking(False)
                    if sock.family in (socket.AF_INET, socket.AF_INET6):
                        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    self.nursery.start_soon(Connection(self, sock, parse_socket_addr(sock.family, peer)).run)
                await trio.lowlevel.checkpoint()
            except BlockingIOError:
                await trio.lowlevel.wait_readable(listener)
            except OSError as exc:
                if exc.errno not in ACCEPT_CAPACITY_ERRNOS:
                    raise
                log.error("accept failed (%s): retrying in %g s", errno.errorcode.get(exc.errno or 0, exc), ACCEPT_RETRY_S)
                await trio.sleep(ACCEPT_RETRY_S)


async def serve(
    app: Any,
    config: Config,
    *,
    pulse: Pulse | None,
    shutdown_trigger: Callable[[], Awaitable[Any]],
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``config.bind`` until ``shutdown_trigger`` returns; task_status gets the
    bound URLs (as hypercorn.trio.serve). The hot ingest routes are served natively with
    ``pulse``'s pipeline; without it, every request goes to hypercorn's protocol classes."""
    state: dict[str, Any] = {}
    lifespan = Lifespan(ASGIWrapper(app), config, state)
    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        async with trio.open_nursery() as connections:
            edge = Edge(pulse, app, config, connections, state)
            listeners = config.create_sockets().insecure_sockets
            binds = []
            for sock in listeners:
                sock.listen(config.backlog)
                edge.address = parse_socket_addr(sock.family, sock.getsockname())
                binds.append(f"http://{repr_socket_addr(sock.family, sock.getsockname())}")
            try:
                async with trio.open_nursery() as accepting:
                    for sock in listeners:
                        accepting.start_soon(edge.accept, sock)
                    task_status.started(binds)
                    await shutdown_trigger()
                    accepting.cancel_scope.cancel()
            finally:
                for sock in listeners:
                    sock.close()
                await edge.context.terminated.set()  # idle connections close; the rest finish
                connections.cancel_scope.deadline = trio.current_time() + config.graceful_timeout
        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()
