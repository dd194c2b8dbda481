"""One process's share of a run: start users at the spawn rate, keep every slot filled until the stop,
hand the stats over once a second, and stop by itself.

Slots: user number n (0 <= n < users, over all processes) runs the scenario ``assign`` gives it;
process w of P takes the numbers w, w + P, w + 2P... and spawns them at spawn_rate / P. When a
user ends by itself (a visitor leaves) or fails, its slot starts a new user (after a pause if it
failed), so the number of users stays as asked until the stop.

Stop: at ``duration`` users stop starting tasks and finish (``on_stop``: acks and deliveries on their
way get DRAIN_S, closing CLOSE_S); at duration + DRAIN_S + CLOSE_S + 1 whatever is left is
cancelled. ``stop()`` (Ctrl-C, --max-requests) brings both forward to now.
"""

from __future__ import annotations

import gc
import importlib
import logging
import math
import random
from collections.abc import Awaitable, Callable, Iterator
from typing import Final

import msgspec
import trio
import trio_websocket

from loadtest import stats as names
from loadtest.clients import HttpPool, LoadError, SourceAddresses
from loadtest.plan import Target
from loadtest.scenario import CLOSE_S, DRAIN_S, Environment, User
from loadtest.scenarios import BUILT_IN, PRESETS
from loadtest.stats import Delta, Stats

log = logging.getLogger("pulse.loadtest")

REPORT_INTERVAL_S: Final = 1.0
RETRY_FIRST_S: Final = 1.0  # a failed user's slot waits before its next user: 1 s, 2 s, 4 s... (+-50%)
RETRY_MAX_S: Final = 30.0  # like a browser's reconnect back-off, so refusals do not become a connect storm
LOGGED_PER_ERROR: Final = 3  # unexpected errors: tracebacks logged per exception type, then only counted
GC_THRESHOLD: Final = (20_000, 20, 100)  # fewer young collections while thousands of users churn messages


class RunConfig(msgspec.Struct, kw_only=True):
    """Everything a process needs to run its share (sent to worker processes as msgpack)."""

    target: Target
    mix: dict[str, int]  # scenario (built-in name or module:Class) -> weight
    users: int  # all processes together
    spawn_rate: float  # users started per second, all processes together
    duration: float  # seconds
    max_requests: int  # all processes together; the run stops within a second of reaching it
    http_connections: int  # per process
    source_addresses: list[str]
    seed: int
    run_id: str
    processes: int = 1
    worker: int = 0


def scenario_class(spec: str) -> type[User]:
    """A built-in scenario by name, or ``package.module:ClassName`` for your own User subclass."""
    if spec in BUILT_IN:
        return BUILT_IN[spec]
    module_name, _, class_name = spec.partition(":")
    if not class_name:
        known = ", ".join([*BUILT_IN, *PRESETS])
        raise ValueError(f"unknown scenario {spec!r}: use one of {known}, or module:Class")
    try:
        found = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot load scenario {spec!r}: {exc}") from None
    if not (isinstance(found, type) and issubclass(found, User)):
        raise ValueError(f"scenario {spec!r} is not a loadtest.scenario.User subclass")
    return found


def parse_mix(text: str) -> dict[str, int]:
    """``visitor`` / ``mixed`` / ``visitor=8,backend=1,my.module:Shopper=2`` -> {scenario: weight}."""
    if text in PRESETS:
        return dict(PRESETS[text])
    mix: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        spec, _, weight = part.partition("=")
        try:
            mix[spec.strip()] = int(weight) if weight else 1
        except ValueError:
            raise ValueError(f"scenario weight must be an integer, got {part!r}") from None
        if mix[spec.strip()] < 1:
            raise ValueError(f"scenario weight must be >= 1, got {part!r}")
        scenario_class(spec.strip())  # fail now, not in a worker
    if not mix:
        raise ValueError("no scenario given")
    return mix


def assign(mix: dict[str, int], users: int) -> list[str]:
    """The scenario of every user number: counts proportional to the weights (largest remainder),
    interleaved (smooth weighted round robin) so that a ramp brings every scenario up together."""
    total = sum(mix.values())
    quotas = {name: users * weight / total for name, weight in mix.items()}
    counts = {name: math.floor(q) for name, q in quotas.items()}
    for name in sorted(quotas, key=lambda n: quotas[n] - counts[n], reverse=True)[: users - sum(counts.values())]:
        counts[name] += 1
    given = dict.fromkeys(counts, 0)
    slots = []
    for n in range(users):
        name = max(counts, key=lambda c: counts[c] * (n + 1) / users - given[c])
        given[name] += 1
        slots.append(name)
    return slots


def _leaves(group: BaseException) -> Iterator[BaseException]:
    if isinstance(group, BaseExceptionGroup):
        for inner in group.exceptions:
            yield from _leaves(inner)
    else:
        yield group


OnInterval = Callable[[Delta], Awaitable[None]]


class Runner:
    def __init__(self, config: RunConfig, on_interval: OnInterval) -> None:
        self.config = config
        self.on_interval = on_interval
        self.stats = Stats()
        self.rng = random.Random(f"{config.seed}-{config.worker}")
        self.active = 0  # users running now
        self.ramping = False
        self.requests_sent = 0
        self.max_requests = math.ceil(config.max_requests / config.processes)
        self.env: Environment | None = None
        self._cancel = trio.CancelScope()
        self._logged: dict[str, int] = {}

    def stop(self) -> None:
        """Stop now: no new tasks, DRAIN_S + CLOSE_S for users to finish, then cancel."""
        now = trio.current_time()
        if self.env is not None:
            self.env.end_at = min(self.env.end_at, now)
            gc.disable()  # see _tune_gc
        self._cancel.deadline = min(self._cancel.deadline, now + DRAIN_S + CLOSE_S + 1)

    async def run(self) -> None:
        config = self.config
        slots = assign(config.mix, config.users)
        classes = {spec: scenario_class(spec) for spec in config.mix}
        ordinals, seen = [], dict.fromkeys(config.mix, 0)
        for spec in slots:
            ordinals.append(seen[spec])
            seen[spec] += 1
        sources = SourceAddresses(config.source_addresses, start=config.worker)
        http = HttpPool(config.target, sources, config.http_connections)
        start = trio.current_time()
        self.env = env = Environment(config.target, self.stats, http, sources, rng=self.rng, run_id=config.run_id,
                                     worker=config.worker, end_at=start + config.duration)
        self._cancel.deadline = min(self._cancel.deadline, env.end_at + DRAIN_S + CLOSE_S + 1)
        threshold, enabled = gc.get_threshold(), gc.isenabled()
        gc.collect()
        gc.freeze()  # what was built before the run is never scanned again
        gc.set_threshold(*GC_THRESHOLD)
        self.ramping = True
        try:
            async with trio.open_nursery() as outer:
                outer.start_soon(self._report_every_second)
                outer.start_soon(self._no_gc_from_the_stop)
                with self._cancel:
                    async with trio.open_nursery() as users:
                        interval = config.processes / config.spawn_rate
                        for k, number in enumerate(range(config.worker, config.users, config.processes)):
                            if env.stopping:
                                break
                            spec = slots[number]
                            users.start_soon(self._slot, classes[spec], number, ordinals[number])
                            await trio.sleep_until(start + (k + 1) * interval)
                        self.ramping = False
                        gc.freeze()
                outer.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await http.aclose()
            gc.unfreeze()
            gc.set_threshold(*threshold)
            if enabled:
                gc.enable()
        await self.on_interval(self.stats.take(users=0))

    async def _report_every_second(self) -> None:
        next_at = trio.current_time() + REPORT_INTERVAL_S
        while True:
            await trio.sleep_until(next_at)
            next_at += REPORT_INTERVAL_S
            self._tune_gc()
            delta = self.stats.take(users=self.active)
            self.requests_sent += delta.counts.get(names.REQUESTS, 0)
            if self.requests_sent >= self.max_requests:
                self.stop()
            await self.on_interval(delta)

    def _tune_gc(self) -> None:
        """CPython's collector scans every live object of a generation: with thousands of users
        that is pauses of up to a second (measured: 0.76 s for one gen-1 collection with 4,500
        sockets), which stall every socket of the process and bias every latency it measures.
        While users ramp up, what they build lives until the stop: freeze it (out of all future
        scans) once a second. During the stop (bounded: DRAIN_S + CLOSE_S + 1) thousands of
        sockets close at once and their garbage is collected after the run instead."""
        if self.ramping:
            gc.freeze()

    async def _no_gc_from_the_stop(self) -> None:
        assert self.env is not None
        await trio.sleep_until(self.env.end_at)  # stop() disables it itself when it comes earlier
        gc.disable()

    async def _slot(self, cls: type[User], number: int, ordinal: int) -> None:
        env = self.env
        assert env is not None
        visit = failed_in_a_row = 0
        while not env.stopping:
            self.stats.count(names.USERS_STARTED)
            self.active += 1
            reasons: list[str] = []
            ended = False
            try:
                async with trio.open_nursery() as nursery:
                    ended = await cls(env, number, ordinal, visit, nursery).live()
                    nursery.cancel_scope.cancel()  # the sockets' reader tasks
            except* Exception as group:
                reasons = [self._reason(exc) for exc in _leaves(group)]
            finally:
                self.active -= 1
            visit += 1
            if reasons:
                self.stats.fail(reasons[0])  # one failed user, one failure: the first thing that went wrong
                pause = min(RETRY_MAX_S, RETRY_FIRST_S * 2**failed_in_a_row) * self.rng.uniform(0.5, 1.5)
                failed_in_a_row += 1
                await trio.sleep_until(min(env.end_at, trio.current_time() + pause))
            else:
                failed_in_a_row = 0
                if ended:
                    self.stats.count(names.USERS_FINISHED)

    def _reason(self, exc: BaseException) -> str:
        if isinstance(exc, LoadError):
            return exc.reason
        if isinstance(exc, trio_websocket.ConnectionRejected):
            return f"ws_rejected_{exc.status_code}"
        if isinstance(exc, trio_websocket.HandshakeError):
            return "ws_handshake_error"
        # A bug in a scenario (ours or the user's): count it, and show the first few tracebacks.
        name = type(exc).__name__
        self._logged[name] = self._logged.get(name, 0) + 1
        if self._logged[name] <= LOGGED_PER_ERROR:
            log.error("simulated user failed unexpectedly", exc_info=exc)
        return f"error_{name}"
