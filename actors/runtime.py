"""The actor runtime: one task per live key, a bounded mailbox, ask with a deadline, supervision.

Actor state is a projection of the event log (snapshot + the events after it), so an actor can be
thrown away at any moment and rebuilt: that is what supervision (restart after a crash),
passivation (exit after an idle TTL) and drain (snapshot everything on shutdown) rely on.

Every actor task runs in the nursery owned by :meth:`ActorSystem.run`; nothing here starts a task
without an owner. Mailboxes are bounded (MAILBOX_SIZE): a full mailbox is back-pressure that the
edge turns into 503 + Retry-After, never an unbounded queue.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Final, Protocol

import msgspec
import trio

from protocol.record import Event
from storage.base import History, Snapshot

log = logging.getLogger("pulse.actors")

MAILBOX_SIZE: Final = 64  # messages per actor; a message carries a batch of events
IDLE_TTL_S: Final = 300.0  # an actor with no message for this long snapshots itself and exits
MAX_RESTARTS: Final = 5  # more crashes than this within RESTART_WINDOW_S stop the actor ...
RESTART_WINDOW_S: Final = 60.0  # ... and asks to it fail with ActorCrashed for this long
RECEIVE_TIMEOUT_S: Final = 30.0  # a receive() that hangs longer is treated as a crash
ACTIVATE_TIMEOUT_S: Final = 30.0  # snapshot load + replay; longer is a crash
SNAPSHOT_SAVE_TIMEOUT_S: Final = 10.0  # a snapshot that cannot be saved in time is skipped
RETRY_AFTER_S: Final = 1  # what the edge should put in Retry-After for MailboxFull
# An actor that folded less than this long ago is taking a stream of messages: an ask then goes
# through its mailbox (so what arrives meanwhile is folded with it) instead of being folded at once
# in the asker's task. A burst of requests woken by one group commit spans about a millisecond.
HOT_WINDOW_S: Final = 0.002

ActorKey = tuple[str, str, str]  # (kind, project, id)


class ActorStore(Protocol):
    """The store methods actors use: snapshots and per-key replay (see storage.base.Store)."""

    async def load_snapshot(self, project: str, kind: str, key: str) -> Snapshot | None: ...
    async def save_snapshot(self, project: str, kind: str, key: str, snapshot: Snapshot) -> None: ...
    async def load_history(self, project: str, kind: str, key: str) -> History: ...
    async def session_events(self, project: str, session_id: str, after_seq: int) -> list[Event]: ...
    async def user_events(self, project: str, user_id: str, after_seq: int) -> list[Event]: ...


class Actor(Protocol):
    async def activate(self) -> None:
        """Load the snapshot and replay the events after it."""

    async def receive(self, msg: Any) -> Any:
        """Handle one message; the return value is the ask's reply. Raising is a crash.

        An actor may also have ``receive_all(msgs: list) -> list``, synchronous: the runtime then
        calls it instead, with every message taken from the mailbox at once, for one reply per
        message (raising is a crash of all of them); see ActorSystem."""

    def snapshot(self) -> Snapshot | None:
        """The state to save on passivation/drain; None when the stored snapshot is still current."""


ActorFactory = Callable[[ActorKey, ActorStore], Actor]


# errors ------------------------------------------------------------------------------------------
class ActorError(Exception):
    """Base of the errors an ask can raise; ``key`` is the actor's key (None for SystemClosed)."""

    def __init__(self, message: str, key: ActorKey | None = None) -> None:
        super().__init__(message)
        self.key = key


class MailboxFull(ActorError):
    """The actor's mailbox stayed full until the ask's timeout: back-pressure (503 + Retry-After)."""

    retry_after_s: int = RETRY_AFTER_S

    def __init__(self, key: ActorKey) -> None:
        super().__init__(f"mailbox of actor {key!r} is full", key)


class AskTimeout(ActorError):
    """The message was delivered but no reply came before the ask's timeout."""

    def __init__(self, key: ActorKey) -> None:
        super().__init__(f"actor {key!r} did not reply in time", key)


class ActorCrashed(ActorError):
    """The actor raised while handling this ask (``__cause__`` is the error), or it is stopped."""

    def __init__(self, key: ActorKey, detail: str = "crashed") -> None:
        super().__init__(f"actor {key!r} {detail}", key)


class SystemClosed(ActorError):
    """The system is draining or not running: no new asks are accepted."""

    def __init__(self, detail: str = "actor system is closed") -> None:
        super().__init__(detail)


# stats -------------------------------------------------------------------------------------------
class ActorStats(msgspec.Struct, kw_only=True, rename="camel"):
    live_actors: dict[str, int]  # per kind
    live_total: int
    mailbox_depth_total: int
    mailbox_depth_max: int
    messages_handled: int
    restarts: int
    crashes: int
    passivations: int
    stopped: int  # actors in cool-down after too many crashes


# internals ---------------------------------------------------------------------------------------
class _Reply:
    """One asker waiting for the replies to its envelopes: woken once, when the last one is in."""

    __slots__ = ("task", "pending")

    def __init__(self) -> None:
        self.task: trio.lowlevel.Task | None = None
        self.pending = 0  # delivered envelopes not resolved yet

    def abort(self, _: Any) -> trio.lowlevel.Abort:
        self.task = None  # the ask's deadline (or its caller's cancellation) ended the wait
        return trio.lowlevel.Abort.SUCCEEDED

    async def wait(self) -> None:
        """Until every delivered envelope is resolved; the caller holds the deadline."""
        if self.pending:
            self.task = trio.lowlevel.current_task()
            await trio.lowlevel.wait_task_rescheduled(self.abort)


class _Envelope:
    """A message plus its one-shot reply slot. The actor fills the slot exactly once."""

    __slots__ = ("msg", "done", "value", "error", "reply")

    def __init__(self, msg: Any, reply: _Reply) -> None:
        self.msg = msg
        self.done = False
        self.value: Any = None
        self.error: ActorError | None = None
        self.reply = reply

    def resolve(self, value: Any) -> None:
        if not self.done:
            self.value = value
            self._done()

    def fail(self, error: ActorError) -> None:
        if not self.done:
            self.error = error
            self._done()

    def _done(self) -> None:
        self.done = True
        reply = self.reply
        reply.pending -= 1
        if not reply.pending and reply.task is not None:
            task, reply.task = reply.task, None
            trio.lowlevel.reschedule(task)


class _Cell:
    """One live activation of a key: its mailbox, its current instance, its crash history.

    The mailbox is a bounded deque with one consumer (the actor task, parked in ``waiter`` while it
    is empty): a memory channel would cost an exception per empty poll, and the actor takes
    everything queued at once anyway.
    """

    __slots__ = (
        "key", "queue", "limit", "closed", "waiter", "backlog", "instance", "fold", "crash_times",
        "last_error", "retiring", "stopped", "current", "finished", "room", "discard_snapshot",
        "idle_since",
    )  # fmt: skip

    def __init__(self, key: ActorKey, mailbox_size: int) -> None:
        self.key = key
        self.queue: deque[_Envelope] = deque()  # the mailbox: at most ``limit`` envelopes
        self.limit = mailbox_size
        self.closed = False  # no more deliveries: retiring, stopped, draining or finished
        self.waiter: trio.lowlevel.Task | None = None  # the actor task, parked on an empty mailbox
        self.backlog: list[_Envelope] | None = None  # taken from the mailbox, not handled (a crash)
        self.instance: Actor | None = None
        self.fold: Callable[[list[Any]], list[Any]] | None = None  # instance.receive_all, if any
        self.crash_times: deque[float] = deque()
        self.last_error: BaseException | None = None
        self.retiring = False  # out of the registry; finishing what is left in the mailbox
        self.stopped = False  # too many crashes
        self.current: _Envelope | None = None  # the message being handled (async receive)
        self.finished = trio.Event()
        self.room: trio.Event | None = None  # set when a full mailbox is emptied (or closed)
        self.discard_snapshot = False  # retired because its state may be stale: do not save it
        self.idle_since = math.inf  # when the actor task parked on its empty mailbox (inf: busy)

    def put(self, envelope: _Envelope) -> bool:
        """Queue ``envelope`` (False if the mailbox is full) and wake the actor task."""
        queue = self.queue
        if len(queue) >= self.limit:
            return False
        queue.append(envelope)
        task = self.waiter
        if task is not None:
            self.waiter = None
            trio.lowlevel.reschedule(task)
        return True

    def close(self) -> None:
        self.closed = True
        task = self.waiter
        if task is not None:
            self.waiter = None
            trio.lowlevel.reschedule(task)
        self._room()

    def take(self) -> list[_Envelope] | None:
        """The backlog and everything queued, oldest first; None when there is nothing."""
        queue = self.queue
        group = self.backlog
        if group is not None:
            self.backlog = None
            group.extend(queue)
        elif not queue:
            return None
        else:
            group = list(queue)
        queue.clear()
        self._room()
        return group

    def _room(self) -> None:
        if self.room is not None:
            self.room.set()
            self.room = None

    def _abort(self, _: Any) -> trio.lowlevel.Abort:
        self.waiter = None
        return trio.lowlevel.Abort.SUCCEEDED

    async def wait(self) -> None:
        """Park until a message arrives or the mailbox closes (the caller saw it empty and open)."""
        self.waiter = trio.lowlevel.current_task()
        await trio.lowlevel.wait_task_rescheduled(self._abort)


class ActorSystem:
    """Spawns actors on demand by key and routes asks to their mailboxes.

    Timers cost nothing per message. The idle TTL is a timestamp per actor, checked by one sweeper
    (``run``) that sleeps until the earliest time any actor could become due (a heap with one
    lower bound per actor, moved forward when it is found early) and retires the actors idle for
    the TTL. The receive timeout guards ``receive``, the one handler that can wait: a per-message
    ``fail_after`` there. ``receive_all`` (the projection actors' fold) is synchronous and so needs
    none: nothing in it can wait, and no deadline could interrupt a CPU loop anyway. An actor with
    ``receive_all`` takes every message queued at each wake-up and folds them at once: a busy
    actor gets cheaper per message, not dearer. When such an actor is parked on an empty mailbox
    and has not folded for HOT_WINDOW_S, an ask folds its message right away in the asker's task
    (the actor task could only do the same, later, after two task switches).
    """

    def __init__(
        self,
        store: ActorStore,
        factories: dict[str, ActorFactory],
        *,
        mailbox_size: int = MAILBOX_SIZE,
        idle_ttl: float = IDLE_TTL_S,
        max_restarts: int = MAX_RESTARTS,
        restart_window: float = RESTART_WINDOW_S,
        receive_timeout: float = RECEIVE_TIMEOUT_S,
        activate_timeout: float = ACTIVATE_TIMEOUT_S,
    ) -> None:
        if mailbox_size < 1:
            raise ValueError(f"mailbox_size must be >= 1, got {mailbox_size!r}")
        self._store = store
        self._factories = dict(factories)
        self._mailbox_size = mailbox_size
        self._idle_ttl = idle_ttl
        self._max_restarts = max_restarts
        self._restart_window = restart_window
        self._receive_timeout = receive_timeout
        self._activate_timeout = activate_timeout
        self._nursery: trio.Nursery | None = None
        self._closing = False
        self._cells: dict[ActorKey, _Cell] = {}
        self._retiring: dict[ActorKey, _Cell] = {}  # out of the registry, snapshot not yet saved
        self._stopped: dict[ActorKey, float] = {}  # key -> end of its cool-down (trio time)
        self._due: list[tuple[float, int, _Cell]] = []  # heap: (no idle retirement before, tiebreak, cell)
        self._due_order = itertools.count()
        self._sweep_scope: trio.CancelScope | None = None  # the sweeper's sleep
        self._handled = 0
        self._restarts = 0
        self._crashes = 0
        self._passivations = 0
        # False while this node cannot be sure it is the only owner of its actors (a cluster without
        # Redis): a snapshot then could claim events that another node applied elsewhere.
        self.snapshots_enabled = True

    # lifecycle -----------------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the nursery every actor task runs in, and sweep idle actors, until cancelled.
        Use ``nursery.start``."""
        if self._nursery is not None:
            raise RuntimeError("actor system is already running")
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await self._sweep()
        finally:
            self._nursery = None
            self._closing = True

    async def _sweep(self) -> None:
        """Passivate every actor that has been parked on its empty mailbox for the idle TTL."""
        due = self._due
        while True:
            with trio.CancelScope(deadline=due[0][0] if due else math.inf) as scope:
                self._sweep_scope = scope
                await trio.sleep_forever()
            self._sweep_scope = None
            now = trio.current_time()
            while due and due[0][0] <= now:
                cell = heapq.heappop(due)[2]
                if cell.closed or self._cells.get(cell.key) is not cell:
                    continue  # retired, stopped or finished: no longer watched
                if cell.waiter is not None:  # parked on an empty mailbox, nothing on its way
                    if cell.idle_since + self._idle_ttl <= now:
                        self._passivations += 1
                        self._begin_retire(cell)
                    else:
                        self._watch(cell, cell.idle_since + self._idle_ttl)
                else:  # busy: idle from now at the earliest
                    self._watch(cell, now + self._idle_ttl)

    def _watch(self, cell: _Cell, when: float) -> None:
        due = self._due
        if len(due) > 2 * len(self._cells) + 1024:
            # Actors retired early (a read of an unknown key, a handover) leave their entry until
            # it is due: drop them all at once, so churn cannot pile up dead cells for a TTL.
            due[:] = [entry for entry in due if self._cells.get(entry[2].key) is entry[2]]
            heapq.heapify(due)
        heapq.heappush(due, (when, next(self._due_order), cell))
        scope = self._sweep_scope
        if scope is not None and when < scope.deadline:
            scope.deadline = when

    async def drain(self, *, deadline: float) -> None:
        """Graceful shutdown, bounded by ``deadline`` seconds.

        New asks raise SystemClosed from now on; every live actor handles what is already in its
        mailbox, saves its snapshot and exits. Cancel run()'s scope afterwards to end the rest.
        """
        self._closing = True
        cells = [*self._cells.values(), *self._retiring.values()]
        for cell in cells:
            cell.close()  # the actor finishes what is queued, then sees the mailbox closed
        with trio.move_on_after(deadline):
            for cell in cells:
                await cell.finished.wait()
        if left := sum(not cell.finished.is_set() for cell in cells):
            log.warning("actor drain deadline of %rs passed with %d actors still running", deadline, left)

    def retire_where(self, predicate: Callable[[ActorKey], bool], *, save: bool) -> int:
        """Retire every live actor whose key matches (its ownership moved to another node, or its
        state may have diverged): it handles what is already in its mailbox, saves its snapshot when
        ``save``, and exits; the next ask activates it afresh from snapshot + log. Returns how many."""
        retired = 0
        for cell in [c for c in self._cells.values() if predicate(c.key)]:
            cell.discard_snapshot = not save
            self._begin_retire(cell)
            retired += 1
        return retired

    async def forget(self, key: ActorKey, *, timeout: float) -> bool:  # noqa: ASYNC109 (a bound, not a deadline to pass on)
        """Stop the actor of ``key`` WITHOUT saving its snapshot: its data is being erased, and a
        snapshot written after the erasure would bring it back. Waits (at most ``timeout`` s) until
        the activation is gone, including one that was already retiring and might be saving; True
        if there was one. A later ask activates afresh from what the store still holds."""
        found = False
        cell = self._cells.get(key)
        if cell is not None:
            cell.discard_snapshot = True
            self._begin_retire(cell)
            found = True
        retiring = self._retiring.get(key)
        if retiring is not None:
            retiring.discard_snapshot = True
            found = True
            with trio.move_on_after(timeout):
                await retiring.finished.wait()
        return found

    @property
    def closing(self) -> bool:
        """Draining or stopped: new asks fail with SystemClosed."""
        return self._closing or self._nursery is None

    # asking --------------------------------------------------------------------------------------
    async def ask(self, key: ActorKey, msg: Any, *, timeout: float) -> Any:  # noqa: ASYNC109 (see ask_many)
        """Deliver ``msg`` to the actor ``key`` (spawned if needed) and return its reply.

        Raises MailboxFull if the mailbox stays full until ``timeout``, AskTimeout if the reply does
        not come in time, ActorCrashed if the actor raised on this message (or is cooling down after
        too many crashes), SystemClosed while draining.
        """
        (reply,) = await self.ask_many([(key, msg)], timeout=timeout)
        return reply

    async def ask_many(
        self,
        requests: list[tuple[ActorKey, Any]],
        *,
        timeout: float,  # noqa: ASYNC109 (one deadline for delivery and replies; MailboxFull vs AskTimeout)
        return_exceptions: bool = False,
    ) -> list[Any]:
        """Ask several actors at once (one message per key of a batch); replies in request order.

        A message to an actor parked on an empty mailbox is folded right here (see the class);
        the others are enqueued (no task per request unless a mailbox is full), then their replies
        are awaited under one deadline, and only if there are any. With ``return_exceptions`` an
        ActorError takes the place of its reply; otherwise the first failing request's error is
        raised after every request has finished or timed out, so no reply is abandoned half-way.
        """
        replies: list[Any] = []
        reply = _Reply()
        blocked: list[int] | None = None
        now: float | None = None  # read when first needed
        for i, (key, msg) in enumerate(requests):
            cell = self._cells.get(key)
            if cell is not None and cell.waiter is not None and cell.fold is not None and not self._closing:
                if now is None:
                    now = trio.current_time()
                if now - cell.idle_since >= HOT_WINDOW_S:
                    replies.append(self._fold_here(cell, msg, now))
                    continue
            envelope = _Envelope(msg, reply)
            replies.append(envelope)
            try:
                if self._deliver_nowait(key, envelope):
                    reply.pending += 1
                else:
                    blocked = blocked or []
                    blocked.append(i)
            except ActorError as exc:
                replies[i] = exc
        if reply.pending or blocked:
            deadline = trio.current_time() + timeout
            if blocked:

                async def deliver(i: int) -> None:
                    try:
                        await self._deliver(requests[i][0], replies[i], deadline)
                        reply.pending += 1
                    except ActorError as exc:
                        replies[i] = exc

                async with trio.open_nursery() as nursery:
                    for i in blocked:
                        nursery.start_soon(deliver, i)
            with trio.move_on_at(deadline):
                await reply.wait()
            for i, value in enumerate(replies):
                if type(value) is _Envelope:
                    if not value.done:
                        replies[i] = AskTimeout(requests[i][0])
                    else:
                        replies[i] = value.error if value.error is not None else value.value
        if not return_exceptions:
            for value in replies:
                if isinstance(value, ActorError):
                    raise value
        return replies

    def _fold_here(self, cell: _Cell, msg: Any, now: float) -> Any:
        """Fold ``msg`` in the asker's task: the actor is parked on an empty mailbox, so nothing
        is ahead of it, and the fold is synchronous, so nothing can come between. Only for an
        actor that has not folded for HOT_WINDOW_S: messages to a busy one queue up behind this
        one and its task folds them all at once (a fold costs less per message, the more it takes)."""
        assert cell.fold is not None
        try:
            (reply,) = cell.fold([msg])
        except Exception as exc:
            crashed = ActorCrashed(cell.key)
            crashed.__cause__ = exc
            self._crashed(cell, exc, f"handling {type(msg).__name__}")
            if cell.waiter is not None:  # wake the actor task: it restarts the actor (or ends)
                task, cell.waiter = cell.waiter, None
                trio.lowlevel.reschedule(task)
            return crashed
        finally:
            self._handled += 1
        cell.idle_since = now  # the fold took no (trio) time: nothing could run meanwhile
        if getattr(cell.instance, "empty", False):
            self._begin_retire(cell)  # a read of a key that has no events: do not keep an actor for it
        return reply

    def _deliver_nowait(self, key: ActorKey, envelope: _Envelope) -> bool:
        """Put ``envelope`` in the mailbox without waiting; False if the mailbox is full."""
        for _ in range(3):  # a cell closed under us was retiring: route to a fresh activation
            cell = self._cell(key)
            if not cell.closed:
                return cell.put(envelope)
            self._forget(cell)
        raise ActorCrashed(key, "keeps closing its mailbox")

    async def _deliver(self, key: ActorKey, envelope: _Envelope, deadline: float) -> None:
        """Put ``envelope`` in the mailbox, waiting for room until ``deadline`` (then MailboxFull)."""
        with trio.move_on_at(deadline):
            while True:
                cell = self._cell(key)
                if cell.closed:
                    # the actor retired or stopped while we waited: re-route (the next _cell call
                    # spawns a fresh activation, or raises ActorCrashed / SystemClosed)
                    self._forget(cell)
                    await trio.lowlevel.checkpoint()
                elif cell.put(envelope):
                    return
                else:
                    if cell.room is None:
                        cell.room = trio.Event()
                    await cell.room.wait()
        raise MailboxFull(key)

    def _full_cell(self, key: ActorKey) -> _Cell | None:
        cell = self._cells.get(key)
        return cell if cell is not None and len(cell.queue) >= cell.limit else None

    async def wait_for_room(self, keys: Iterable[ActorKey], *, timeout: float) -> bool:  # noqa: ASYNC109
        """Wait until none of ``keys`` has a full mailbox; False if that takes longer than timeout.

        The ingest path calls this before committing, so pushing back never leaves an event
        stored but unprocessed, and a client's retry after a 503 cannot store it twice.
        Returns at once, without a checkpoint, when no mailbox of ``keys`` is full.
        """
        full = [key for key in keys if self._full_cell(key) is not None]
        if not full:
            return True
        with trio.move_on_after(timeout):
            for key in full:
                while (cell := self._full_cell(key)) is not None:
                    if cell.room is None:
                        cell.room = trio.Event()
                    await cell.room.wait()
            return True
        return False

    def _forget(self, cell: _Cell) -> None:
        if self._cells.get(cell.key) is cell:
            del self._cells[cell.key]

    def _cell(self, key: ActorKey) -> _Cell:
        """The live cell of ``key``, spawning its task on first use."""
        cell = self._cells.get(key)
        if cell is not None:
            return cell
        if self._closing or self._nursery is None:
            raise SystemClosed()
        until = self._stopped.get(key)
        if until is not None:
            if trio.current_time() < until:
                raise ActorCrashed(key, "is stopped after repeated crashes (cooling down)")
            del self._stopped[key]
        factory = self._factories.get(key[0])
        if factory is None:
            raise ValueError(f"no actor factory for kind {key[0]!r} (key {key!r})")
        cell = _Cell(key, self._mailbox_size)
        self._cells[key] = cell
        self._nursery.start_soon(self._run_cell, cell, factory, name=f"actor {key!r}")
        self._watch(cell, trio.current_time() + self._idle_ttl)  # idle no earlier than that
        return cell

    # the actor task ------------------------------------------------------------------------------
    async def _run_cell(self, cell: _Cell, factory: ActorFactory) -> None:
        try:
            previous = self._retiring.get(cell.key)
            if previous is not None:
                # let the previous activation save its snapshot first, so we start from it
                with trio.move_on_after(SNAPSHOT_SAVE_TIMEOUT_S + self._activate_timeout):
                    await previous.finished.wait()
            while not cell.stopped:
                if cell.instance is None:
                    if cell.retiring and cell.backlog is None and not cell.queue:
                        return  # crashed on the last leftover: nothing left to do or to save
                    await self._activate(cell, factory)
                    continue
                group = cell.take()
                if group is not None:
                    await self._handle(cell, group)
                elif not cell.closed:
                    cell.idle_since = trio.current_time()
                    await cell.wait()
                    cell.idle_since = math.inf
                else:  # passivated, retired or drained, and everything queued is handled
                    if not cell.retiring:
                        self._begin_retire(cell)
                    await self._save_snapshot(cell)
                    return
        finally:
            self._finish(cell)

    def _begin_retire(self, cell: _Cell) -> None:
        """Leave the registry before closing the mailbox, so no later ask can land in a dead cell."""
        cell.retiring = True
        self._forget(cell)
        self._retiring[cell.key] = cell
        cell.close()

    async def _activate(self, cell: _Cell, factory: ActorFactory) -> None:
        try:
            instance = factory(cell.key, self._store)
            with trio.fail_after(self._activate_timeout):
                await instance.activate()
        except Exception as exc:
            self._crashed(cell, exc, "activating")
            return
        cell.instance = instance
        cell.fold = getattr(instance, "receive_all", None)

    async def _handle(self, cell: _Cell, group: list[_Envelope]) -> None:
        """Handle the messages taken from the mailbox: in one fold when the actor has one."""
        instance = cell.instance
        assert instance is not None
        if cell.fold is not None:
            try:
                replies = cell.fold([envelope.msg for envelope in group])
            except Exception as exc:  # every message of the fold failed with it (their events
                # are committed: the restarted actor replays them from the log)
                for envelope in group:
                    crashed = ActorCrashed(cell.key)
                    crashed.__cause__ = exc
                    envelope.fail(crashed)
                self._crashed(cell, exc, f"handling {len(group)} messages")
            else:
                for envelope, reply in zip(group, replies, strict=True):
                    envelope.resolve(reply)
            self._handled += len(group)
        else:
            for index, envelope in enumerate(group):
                if cell.instance is None:  # crashed on the one before: the restart handles the rest
                    cell.backlog = group[index:]
                    return
                await self._receive(cell, envelope)
        if getattr(cell.instance, "empty", False) and not cell.retiring:
            # a read of a key that has no events (a mistyped id): do not keep an actor for it
            self._begin_retire(cell)

    async def _receive(self, cell: _Cell, envelope: _Envelope) -> None:
        assert cell.instance is not None
        cell.current = envelope
        try:
            with trio.fail_after(self._receive_timeout):
                reply = await cell.instance.receive(envelope.msg)
        except Exception as exc:
            crashed = ActorCrashed(cell.key)
            crashed.__cause__ = exc
            envelope.fail(crashed)
            self._crashed(cell, exc, f"handling {type(envelope.msg).__name__}")
        else:
            envelope.resolve(reply)
        finally:
            cell.current = None
        self._handled += 1

    def _crashed(self, cell: _Cell, exc: Exception, doing: str) -> None:
        """Count and log a crash; discard the instance (restart) or stop the actor if over the limit."""
        self._crashes += 1
        cell.instance = None
        cell.fold = None
        cell.last_error = exc
        now = trio.current_time()
        cell.crash_times.append(now)
        while cell.crash_times and cell.crash_times[0] < now - self._restart_window:
            cell.crash_times.popleft()
        if len(cell.crash_times) > self._max_restarts:
            log.error(
                "actor %r crashed %s (%d crashes in %rs): stopped", cell.key, doing,
                len(cell.crash_times), self._restart_window, exc_info=exc,
            )  # fmt: skip
            cell.stopped = True
            self._forget(cell)
            self._stopped[cell.key] = now + self._restart_window
            cell.close()
        else:
            log.error("actor %r crashed %s: restarting", cell.key, doing, exc_info=exc)
            self._restarts += 1

    async def _save_snapshot(self, cell: _Cell) -> None:
        """Best effort: a snapshot that cannot be written only means a longer replay next time."""
        if cell.instance is None or cell.discard_snapshot or not self.snapshots_enabled:
            return
        kind, project, ident = cell.key
        try:
            snapshot = cell.instance.snapshot()
            if snapshot is None:
                return
            with trio.fail_after(SNAPSHOT_SAVE_TIMEOUT_S):
                await self._store.save_snapshot(project, kind, ident, snapshot)
        except Exception as exc:
            log.warning("actor %r could not save its snapshot: %r", cell.key, exc, exc_info=exc)

    def _finish(self, cell: _Cell) -> None:
        """Synchronous cleanup (runs on cancellation too): nothing waiting on this cell hangs."""
        self._forget(cell)
        cell.close()

        def error() -> ActorError:
            if not cell.stopped:
                return SystemClosed(f"actor {cell.key!r} shut down before handling the message")
            crashed = ActorCrashed(cell.key, "is stopped after repeated crashes")
            crashed.__cause__ = cell.last_error
            return crashed

        if cell.current is not None:
            cell.current.fail(error())
        for envelope in cell.take() or ():
            envelope.fail(error())
        if self._retiring.get(cell.key) is cell:
            del self._retiring[cell.key]
        cell.finished.set()

    # monitoring ----------------------------------------------------------------------------------
    def stats(self) -> ActorStats:
        now = trio.current_time()
        for key in [key for key, until in self._stopped.items() if until <= now]:
            del self._stopped[key]
        per_kind: dict[str, int] = {}
        depth_total = depth_max = 0
        for key, cell in self._cells.items():
            per_kind[key[0]] = per_kind.get(key[0], 0) + 1
            depth = len(cell.queue)
            depth_total += depth
            depth_max = max(depth_max, depth)
        return ActorStats(
            live_actors=per_kind,
            live_total=len(self._cells),
            mailbox_depth_total=depth_total,
            mailbox_depth_max=depth_max,
            messages_handled=self._handled,
            restarts=self._restarts,
            crashes=self._crashes,
            passivations=self._passivations,
            stopped=len(self._stopped),
        )
