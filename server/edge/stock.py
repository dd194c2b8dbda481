"""``--edge hypercorn``: everything served by stock, unpatched ``hypercorn.trio.serve``.

For comparison with the Pulse edge (server/edge/server.py) and as a fallback. Stock hypercorn
gives a WebSocket app a plain receive channel; Pulse's WebSocket handler needs an inbox it can be
woken from (server/ws.py), so ``pumped_inbox`` runs one more task per socket that moves messages
from the channel into one. Pings are hypercorn's own (a task per socket); permessage-deflate is
hypercorn's (accepted whenever offered). It costs memory per socket: this edge is not for 100k.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any, Final

import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve

from server.edge.websocket import WebSocketInbox, use_stock_websockets

INBOX_SIZE: Final = 10  # hypercorn's max_app_queue_size


async def serve(
    app: Any,
    config: Config,
    *,
    shutdown_trigger: Callable[[], Awaitable[Any]],
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    use_stock_websockets()
    await hypercorn_serve(app, config, shutdown_trigger=shutdown_trigger, task_status=task_status)


@asynccontextmanager
async def pumped_inbox(receive: Callable[[], Awaitable[MutableMapping[str, Any]]]) -> AsyncIterator[WebSocketInbox]:
    """An inbox fed from a stock receive channel by a task of its own, for as long as the block runs."""
    inbox = WebSocketInbox(None, INBOX_SIZE)

    async def pump() -> None:
        while True:
            message = await receive()
            await inbox.put(dict(message))
            if message["type"] == "websocket.disconnect":
                return

    async with trio.open_nursery() as nursery:
        nursery.start_soon(pump)
        try:
            yield inbox
        finally:
            nursery.cancel_scope.cancel()
