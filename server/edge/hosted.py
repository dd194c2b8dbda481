"""What a connection served by hypercorn's protocol classes needs from the edge (server/edge/).

hypercorn's H11Protocol/H2Protocol are sans-IO-like: they take bytes (``handle(RawData)``), and
call back with bytes to write (``send``) and app tasks to start (a TaskGroup's ``spawn_app``).
These are the two Pulse gives them:

- ``ConnectionTasks``: the app tasks of a connection run in the server's connection nursery,
  counted, instead of in a nursery per connection (~1.1 KiB for the whole life of every socket;
  this, ~70 bytes). The connection waits for them (``wait_done``) before it closes, as it waited
  for its nursery. The app runs in one frame, with hypercorn's error handling; a WebSocket's
  receive side is a WebSocketInbox (server/edge/websocket.py).
- ``SendLock``: a FIFO lock for a connection's writers (the app's task, and the reader answering
  a ping), taken without a checkpoint when free, without trio.Lock's ParkingLot (~330 bytes).
"""

from __future__ import annotations

from typing import Any

import trio
from trio.lowlevel import Abort, Task

from server.edge.websocket import PulseWSStream, open_inbox


class ConnectionTasks:
    """The TaskGroup hypercorn's protocol classes spawn a connection's app tasks in."""

    __slots__ = ("nursery", "running", "waiter")

    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        self.running = 0
        self.waiter: Task | None = None

    async def spawn_app(self, app: Any, config: Any, scope: Any, send: Any) -> Any:
        receive, put = _app_channel(config, scope, send)
        self.running += 1
        self.nursery.start_soon(self._run_app, app, config, scope, receive, send)
        return put

    def spawn(self, func: Any, *args: Any) -> None:
        self.running += 1
        self.nursery.start_soon(self._run, func, args)

    async def wait_done(self) -> None:
        while self.running:
            self.waiter = trio.lowlevel.current_task()
            await trio.lowlevel.wait_task_rescheduled(self._abort)

    async def _run_app(self, app: Any, config: Any, scope: Any, receive: Any, send: Any) -> None:
        try:
            try:
                await app(scope, receive, send)
            except trio.Cancelled:
                raise
            except BaseExceptionGroup as error:
                _, others = error.split(trio.Cancelled)
                if others is None:
                    raise
                await config.log.exception("Error in ASGI Framework")
            except Exception:
                await config.log.exception("Error in ASGI Framework")
            finally:
                await send(None)
        finally:
            self._done()

    async def _run(self, func: Any, args: Any) -> None:
        try:
            await func(*args)
        finally:
            self._done()

    def _done(self) -> None:
        self.running -= 1
        waiter = self.waiter
        if not self.running and waiter is not None:
            self.waiter = None
            trio.lowlevel.reschedule(waiter)

    def _abort(self, _: Any) -> Abort:
        self.waiter = None
        return Abort.SUCCEEDED


def _app_channel(config: Any, scope: Any, send: Any) -> tuple[Any, Any]:
    """The app's receive and hypercorn's put: an inbox for a WebSocket, else a memory channel."""
    stream = getattr(send, "__self__", None)  # hypercorn passes its stream's bound app_send
    if scope["type"] == "websocket" and isinstance(stream, PulseWSStream):
        inbox = open_inbox(stream, config.max_app_queue_size)
        scope["extensions"]["pulse.inbox"] = inbox  # for the app: inbox.wake()
        return inbox.receive, inbox.put
    put_channel, receive_channel = trio.open_memory_channel[Any](config.max_app_queue_size)
    return receive_channel.receive, put_channel.send


class SendLock:
    """A FIFO lock held while a connection's bytes are written."""

    __slots__ = ("held", "waiters")

    def __init__(self) -> None:
        self.held = False
        self.waiters: list[Task] | None = None

    async def acquire(self) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        if not self.held:
            self.held = True
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        task = trio.lowlevel.current_task()
        if self.waiters is None:
            self.waiters = [task]
        else:
            self.waiters.append(task)

        def abort(_: Any) -> Abort:
            assert self.waiters is not None
            self.waiters.remove(task)
            return Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)  # release() handed the lock over

    def release(self) -> None:
        if self.waiters:
            trio.lowlevel.reschedule(self.waiters.pop(0))  # still held: now by that task
            if not self.waiters:
                self.waiters = None
        else:
            self.held = False
