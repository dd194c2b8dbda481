"""Locust-style scenarios on trio: a scenario is a ``User`` subclass with weighted ``@task`` methods
and a ``wait_time`` between them.

    class Shopper(User):
        name = "shopper"
        wait_time = between(1, 3)

        @task(3)
        async def browse(self) -> None: ...

        @task(1)
        async def buy(self) -> None: ...

A user runs ``on_start``, then picks a task at random by weight, runs it, thinks for ``wait_time``,
and so on until the run stops (then ``on_stop``) or a task raises ``StopUser`` (a visitor leaving).
While it thinks, ``idle`` follows its subscription (an SSE stream is read there; a WebSocket's
messages are dispatched by trio-websocket's reader as they arrive), so a user is one task (plus
that reader per socket). Every user has its own nursery for the tasks of its sockets; whatever happens,
its sockets are closed when it ends.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, Final, TypeVar, overload

import trio

from loadtest.channels import Channel, OnMessage, SseChannel, WsChannel
from loadtest.clients import HttpPool, LoadError, SourceAddresses, SseStream
from loadtest.plan import Target
from loadtest.stats import REQUESTS, Stats

DRAIN_S: Final = 2.0  # after the stop, how long users may wait for acks and deliveries on their way
CLOSE_S: Final = 1.0  # and then to close their sockets

TaskFn = Callable[[Any], Awaitable[None]]
WaitTime = Callable[["User"], float]
F = TypeVar("F", bound=TaskFn)


class StopUser(Exception):
    """Raised by a task: this user is done (its slot starts a new user if the run goes on)."""


@overload
def task(weight: F) -> F: ...


@overload
def task(weight: int = 1) -> Callable[[F], F]: ...


def task(weight: int | F = 1) -> F | Callable[[F], F]:
    """Mark an async method as a task: ``@task`` or ``@task(3)`` (picked 3 times as often)."""
    if callable(weight):
        weight.task_weight = 1  # type: ignore[attr-defined]
        return weight
    if weight < 1:
        raise ValueError(f"task weight must be >= 1, got {weight!r}")

    def mark(fn: F) -> F:
        fn.task_weight = weight  # type: ignore[attr-defined]
        return fn

    return mark


def between(low: float, high: float) -> WaitTime:
    """Think for a uniformly random time in [low, high] seconds."""
    return lambda user: user.rng.uniform(low, high)


def constant(seconds: float) -> WaitTime:
    return lambda user: seconds


def constant_pacing(seconds: float) -> WaitTime:
    """Start a task every ``seconds`` whatever the task took (as long as it took less)."""
    def wait(user: User) -> float:
        return max(0.0, seconds - (trio.current_time() - user.task_started))

    return wait


class Environment:
    """What all the users of one process share."""

    def __init__(self, target: Target, stats: Stats, http: HttpPool, sources: SourceAddresses, *,
                 rng: random.Random, run_id: str, worker: int, end_at: float) -> None:
        self.target = target
        self.stats = stats
        self.http = http
        self.sources = sources
        self.rng = rng
        self.run_id = run_id  # in every id the generator makes, so runs never share sessions or users
        self.worker = worker
        self.end_at = end_at  # trio time at which users stop starting tasks

    @property
    def stopping(self) -> bool:
        return trio.current_time() >= self.end_at


class User:
    name: ClassVar[str] = "user"
    sockets: ClassVar[int] = 0  # sockets one user holds at once, besides the shared HTTP pool
    wait_time: ClassVar[WaitTime] = constant(1.0)
    tasks: ClassVar[list[TaskFn]] = []  # each task repeated by its weight (built per subclass)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        found: dict[str, TaskFn] = {}
        for klass in reversed(cls.__mro__):  # subclasses override their bases' tasks by name
            for attr, value in vars(klass).items():
                if callable(value) and hasattr(value, "task_weight"):
                    found[attr] = value
        cls.tasks = [fn for fn in found.values() for _ in range(fn.task_weight)]  # type: ignore[attr-defined]

    def __init__(self, env: Environment, number: int, ordinal: int, visit: int, nursery: trio.Nursery) -> None:
        self.env = env
        self.stats = env.stats
        self.rng = env.rng
        self.number = number  # the user's slot, unique over all processes
        self.ordinal = ordinal  # its rank among the slots of its scenario (0, 1, 2... over all processes)
        self.visit = visit  # how many users this slot had before this one
        self.nursery = nursery  # for the tasks of this user's sockets
        self.task_started = 0.0
        self.channels: list[Channel] = []

    # -- what scenarios override -------------------------------------------------------------------

    async def on_start(self) -> None:
        """Before the first task: connect, subscribe."""

    async def on_stop(self) -> None:
        """After the last task, when the run stops (not when a task raised StopUser or failed)."""

    async def idle(self, until: float) -> None:
        """Think until ``until`` (trio time). Users with a subscription read it meanwhile."""
        await trio.sleep_until(until)

    # -- the life of a user ------------------------------------------------------------------------

    async def live(self) -> bool:
        """Run the user; returns True when it ended by itself (StopUser), False at the run's stop.
        Raises LoadError (or trio-websocket's ConnectionRejected, in a group) when it failed."""
        if not self.tasks:
            raise TypeError(f"{type(self).__name__} has no @task methods")
        graceful = False  # only a user that leaves by itself says goodbye on its sockets (see aclose)
        try:
            with trio.move_on_at(self.env.end_at) as starting:
                await self.on_start()
            if starting.cancelled_caught:  # still connecting at the stop: nothing to measure any more
                self.stats.count("users_still_starting_at_stop")
                return False
            while not self.env.stopping:
                self.task_started = trio.current_time()
                await self.rng.choice(self.tasks)(self)
                await self.idle(min(trio.current_time() + self.wait_time(), self.env.end_at))
            await self.on_stop()
            return False
        except StopUser:
            graceful = True
            return True
        finally:
            await self.close(graceful)

    async def close(self, graceful: bool = False) -> None:
        channels, self.channels = self.channels, []
        for channel in channels:
            with trio.CancelScope(shield=True):
                await channel.aclose(graceful)

    # -- helpers for scenarios ---------------------------------------------------------------------

    async def open_ws(self, path: str, on_message: OnMessage) -> WsChannel:
        channel = await WsChannel.open(self.nursery, self.env.target, path, self.env.sources, self.stats, on_message,
                                       f"messages.{self.name}")
        self.channels.append(channel)
        return channel

    async def open_sse(self, path: str, on_message: OnMessage) -> SseChannel:
        sse = await SseStream.open(self.env.target, path, self.env.sources)
        channel = SseChannel(sse, self.stats, on_message, f"messages.{self.name}")
        self.channels.append(channel)
        return channel

    async def http(self, method: bytes, path: str, body: bytes = b"", *, histogram: str,
                   content_type: bytes = b"application/json", headers: tuple[tuple[bytes, bytes], ...] = ()) -> bytes:
        """One HTTP request through the process's pool; its latency goes to ``histogram``. A non-2xx
        answer is the failure ``http_<status>`` and raises nothing: the user goes on, as a browser would."""
        self.stats.count(REQUESTS)
        started = time.perf_counter_ns()
        status, answer = await self.env.http.request(method, path, body, content_type=content_type, headers=headers)
        if 200 <= status < 300:
            self.stats.latency_ns(histogram, time.perf_counter_ns() - started)
            return answer
        self.stats.fail(f"http_{status}")
        return b""


__all__ = ["DRAIN_S", "CLOSE_S", "Environment", "LoadError", "StopUser", "User", "between", "constant",
           "constant_pacing", "task"]
