"""The actor runtime: one task per live key, a bounded mailbox, ask with a deadline, supervision.

Actor state is a projection of the event log (snapshot + the events after it), so an actor can be
thrown away at any moment and rebuilt: that is what supervision (restart after a crash),
passivation (exit after an idle TTL) and drain (snapshot everything on shutdown) rely on.

Every actor task runs in the nursery owned by :meth:`ActorSystem.run`; nothing here starts a task
without an owner. Mailboxes are bounded trio memory channels: a full mailbox is back-pressure that
the edge turns into 503 + Retry-After, never an unbounded queue.
"""

from __future__ import annotations

import heapq
import logging
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, Final, Generic, Protocol, TypeVar

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
SEEN_KEPT: Final = 512  # applied seqs above the floor a projection remembers (and snapshots)

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
        """Handle one message; the return value is the ask's reply. Raising is a crash."""

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
class _Envelope:
    """A message plus its one-shot reply slot. The actor fills the slot exactly once."""

    __slots__ = ("msg", "done", "value", "error")

    def __init__(self, msg: Any) -> None:
        self.msg = msg
        self.done = trio.Event()
        self.value: Any = None
        self.error: ActorError | None = None

    def resolve(self, value: Any) -> None:
        if not self.done.is_set():
            self.value = value
            self.done.set()

    def fail(self, error: ActorError) -> None:
        if not self.done.is_set():
            self.error = error
            self.done.set()


class _Cell:
    """One live activation of a key: its mailbox, its current instance, its crash history."""

    __slots__ = (
        "key", "send", "recv", "instance", "crash_times", "last_error", "retiring", "stopped",
        "current", "finished", "room", "discard_snapshot",
    )  # fmt: skip

    def __init__(self, key: ActorKey, mailbox_size: int) -> None:
        self.key = key
        self.send, self.recv = trio.open_memory_channel[_Envelope](mailbox_size)
        self.instance: Actor | None = None
        self.crash_times: deque[float] = deque()
        self.last_error: BaseException | None = None
        self.retiring = False  # out of the registry; finishing what is left in the mailbox
        self.stopped = False  # too many crashes
        self.current: _Envelope | None = None  # the message being handled
        self.finished = trio.Event()
        self.room: trio.Event | None = None  # set when a message leaves a full mailbox
        self.discard_snapshot = False  # retired because its state may be stale: do not save it


class ActorSystem:
    """Spawns actors on demand by key and routes asks to their mailboxes."""

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
        self._handled = 0
        self._restarts = 0
        self._crashes = 0
        self._passivations = 0
        # False while this node cannot be sure it is the only owner of its actors (a cluster without
        # Redis): a snapshot then could claim events that another node applied elsewhere.
        self.snapshots_enabled = True

    # lifecycle -----------------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the nursery every actor task runs in, until cancelled. Use ``nursery.start``."""
        if self._nursery is not None:
            raise RuntimeError("actor system is already running")
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None
            self._closing = True

    async def drain(self, *, deadline: float) -> None:
        """Graceful shutdown, bounded by ``deadline`` seconds.

        New asks raise SystemClosed from now on; every live actor handles what is already in its
        mailbox, saves its snapshot and exits. Cancel run()'s scope afterwards to end the rest.
        """
        self._closing = True
        cells = [*self._cells.values(), *self._retiring.values()]
        for cell in cells:
            cell.send.close()  # the actor sees EndOfChannel once its mailbox is empty
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
        deadline = trio.current_time() + timeout
        envelope = _Envelope(msg)
        await self._deliver(key, envelope, deadline)
        with trio.move_on_at(deadline):
            await envelope.done.wait()
        if not envelope.done.is_set():
            raise AskTimeout(key)
        if envelope.error is not None:
            raise envelope.error
        return envelope.value

    async def ask_many(
        self,
        requests: list[tuple[ActorKey, Any]],
        *,
        timeout: float,  # noqa: ASYNC109 (one deadline for delivery and replies; MailboxFull vs AskTimeout)
        return_exceptions: bool = False,
    ) -> list[Any]:
        """Ask several actors at once (one message per key of a batch); replies in request order.

        All messages are enqueued first (no task per request unless a mailbox is full), then the
        replies are awaited under one deadline. With ``return_exceptions`` an ActorError takes the
        place of its reply; otherwise the first failing request's error is raised after every
        request has finished or timed out, so no reply is abandoned half-way.
        """
        deadline = trio.current_time() + timeout
        envelopes = [_Envelope(msg) for _, msg in requests]
        errors: list[ActorError | None] = [None] * len(requests)
        blocked: list[int] = []
        for i, (key, _) in enumerate(requests):
            try:
                if not self._deliver_nowait(key, envelopes[i]):
                    blocked.append(i)
            except ActorError as exc:
                errors[i] = exc
        if blocked:

            async def deliver(i: int) -> None:
                try:
                    await self._deliver(requests[i][0], envelopes[i], deadline)
                except ActorError as exc:
                    errors[i] = exc

            async with trio.open_nursery() as nursery:
                for i in blocked:
                    nursery.start_soon(deliver, i)
        with trio.move_on_at(deadline):
            for i, envelope in enumerate(envelopes):
                if errors[i] is None:
                    await envelope.done.wait()
        replies: list[Any] = []
        for i, envelope in enumerate(envelopes):
            error = errors[i]
            if error is None and not envelope.done.is_set():
                error = AskTimeout(requests[i][0])
            elif error is None and envelope.error is not None:
                error = envelope.error
            if error is not None and not return_exceptions:
                raise error
            replies.append(error if error is not None else envelope.value)
        return replies

    def _deliver_nowait(self, key: ActorKey, envelope: _Envelope) -> bool:
        """Put ``envelope`` in the mailbox without waiting; False if the mailbox is full."""
        for _ in range(3):  # a cell closed under us was retiring: route to a fresh activation
            cell = self._cell(key)
            try:
                cell.send.send_nowait(envelope)
                return True
            except trio.WouldBlock:
                return False
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                self._forget(cell)
        raise ActorCrashed(key, "keeps closing its mailbox")

    async def _deliver(self, key: ActorKey, envelope: _Envelope, deadline: float) -> None:
        """Put ``envelope`` in the mailbox, waiting for room until ``deadline`` (then MailboxFull)."""
        if self._deliver_nowait(key, envelope):
            return
        while trio.current_time() < deadline:
            cell = self._cell(key)
            with trio.move_on_at(deadline):
                try:
                    await cell.send.send(envelope)
                    return
                except (trio.ClosedResourceError, trio.BrokenResourceError):
                    # the actor retired or stopped while we waited: re-route (the next _cell call
                    # spawns a fresh activation, or raises ActorCrashed / SystemClosed)
                    self._forget(cell)
                    await trio.lowlevel.checkpoint()
        raise MailboxFull(key)

    def _full_cell(self, key: ActorKey) -> _Cell | None:
        cell = self._cells.get(key)
        if cell is None:
            return None
        stats = cell.send.statistics()
        return cell if stats.current_buffer_used >= stats.max_buffer_size else None

    async def wait_for_room(self, keys: Iterable[ActorKey], *, timeout: float) -> bool:  # noqa: ASYNC109
        """Wait until none of ``keys`` has a full mailbox; False if that takes longer than timeout.

        The ingest path calls this before committing, so pushing back never leaves an event
        stored but unprocessed, and a client's retry after a 503 cannot store it twice.
        """
        with trio.move_on_after(timeout):
            for key in keys:
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
                    if cell.retiring and cell.recv.statistics().current_buffer_used == 0:
                        return  # crashed on the last leftover: nothing left to do or to save
                    await self._activate(cell, factory)
                    continue
                envelope = await self._next(cell)
                if envelope is not None:
                    await self._handle(cell, envelope)
                elif not cell.retiring:
                    self._begin_retire(cell)
                else:
                    await self._save_snapshot(cell)
                    return
        finally:
            self._finish(cell)

    async def _next(self, cell: _Cell) -> _Envelope | None:
        """The next message, or None when idle for the TTL / the mailbox is closed and empty."""
        if cell.retiring:
            try:
                return cell.recv.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                return None
        with trio.move_on_after(self._idle_ttl) as idle:
            try:
                envelope = await cell.recv.receive()
            except trio.EndOfChannel:  # drain() closed the mailbox and it is now empty
                return None
            if cell.room is not None:
                cell.room.set()
                cell.room = None
            return envelope
        if idle.cancelled_caught:
            self._passivations += 1
        return None

    def _begin_retire(self, cell: _Cell) -> None:
        """Leave the registry before closing the mailbox, so no later ask can land in a dead cell."""
        cell.retiring = True
        self._forget(cell)
        self._retiring[cell.key] = cell
        cell.send.close()

    async def _activate(self, cell: _Cell, factory: ActorFactory) -> None:
        try:
            instance = factory(cell.key, self._store)
            with trio.fail_after(self._activate_timeout):
                await instance.activate()
        except Exception as exc:
            self._crashed(cell, exc, "activating")
            return
        cell.instance = instance

    async def _handle(self, cell: _Cell, envelope: _Envelope) -> None:
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
            if getattr(cell.instance, "empty", False) and not cell.retiring:
                # a read of a key that has no events (a mistyped id): do not keep an actor for it
                self._begin_retire(cell)
        finally:
            cell.current = None
        self._handled += 1

    def _crashed(self, cell: _Cell, exc: Exception, doing: str) -> None:
        """Count and log a crash; discard the instance (restart) or stop the actor if over the limit."""
        self._crashes += 1
        cell.instance = None
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
            cell.send.close()
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
        cell.send.close()

        def error() -> ActorError:
            if not cell.stopped:
                return SystemClosed(f"actor {cell.key!r} shut down before handling the message")
            crashed = ActorCrashed(cell.key, "is stopped after repeated crashes")
            crashed.__cause__ = cell.last_error
            return crashed

        if cell.current is not None:
            cell.current.fail(error())
        while True:
            try:
                cell.recv.receive_nowait().fail(error())
            except (trio.WouldBlock, trio.EndOfChannel):
                break
        cell.recv.close()
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
            depth = cell.recv.statistics().current_buffer_used
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


# projection actors -------------------------------------------------------------------------------
class ApplyEvents(msgspec.Struct, frozen=True):
    """Apply a batch of (already committed) events of one key; the reply is the actor's view.
    ``steps``: also report the state after each event (for stream messages; costs per event)."""

    events: list[Event]
    steps: bool = False


class GetView(msgspec.Struct, frozen=True):
    """Reply with the actor's current view without changing it."""


def event_order(event: Event) -> tuple[int, int]:
    """Events are applied by (timestamp, seq): client time first, store order to break ties."""
    return (event.timestamp, event.seq)


StateT = TypeVar("StateT", bound=msgspec.Struct)
ViewT = TypeVar("ViewT")

_STATE_ENCODER: Final = msgspec.msgpack.Encoder()


class _SnapshotBody(msgspec.Struct, array_like=True):
    """What a snapshot stores: the state (MessagePack) and the applied seqs above its upto_seq."""

    state: msgspec.Raw
    seen: list[int]


_SNAPSHOT_DECODER: Final = msgspec.msgpack.Decoder(_SnapshotBody)


class ProjectionActor(Generic[StateT, ViewT]):
    """An actor whose state is a fold over the events of its key: snapshot + replay + live batches.

    Subclasses give ``state_type`` and implement ``initial_state``, ``load_events``, ``apply`` and
    ``view``. The skip rule lives here: the ingest path commits events before delivering them, so
    the batch that triggered an activation (and any batch racing with it) may hold events the
    replay already applied, and a forwarded batch may be delivered twice after a retry. Each event
    is applied once: an event is skipped when its seq is covered by the snapshot or is among the
    seqs already applied (the highest SEEN_KEPT of them are remembered; the lowest ones evicted
    raise the floor). A snapshot stores the floor as its ``upto_seq`` and the remembered seqs with
    the state, so a later activation replays every event above the floor that it does not have:
    an event with a lower seq committed late (by another node) is not skipped.
    Seqs are not a commit order across nodes (two nodes commit concurrently), which is why this is
    a set and not "seq <= highest applied". Events with ``seq == 0`` were never stored, cannot have
    been replayed, and are applied.
    """

    state_type: ClassVar[type[msgspec.Struct]]  # msgpack-encoded in snapshots

    def __init__(self, key: ActorKey, store: ActorStore) -> None:
        self.key = key
        self.kind, self.project, self.ident = key
        self.store = store
        self.state: StateT = self.initial_state()
        self.replayed_upto = 0  # max seq covered by the snapshot and the activation replay
        self.applied_upto = 0  # max seq applied so far: the snapshot's upto_seq
        self.dirty = True  # state differs from the stored snapshot
        self.empty = True  # no event applied or replayed yet: nothing worth keeping in memory
        self._floor = 0  # every seq <= floor is applied (the snapshot's, or evicted from _seen)
        self._seen: set[int] = set()  # seqs above the floor applied
        self._seen_heap: list[int] = []  # the same seqs, lowest first: evicted into the floor

    def initial_state(self) -> StateT:
        raise NotImplementedError

    async def load_events(self, after_seq: int) -> list[Event]:
        """The stored events of this key with seq > after_seq (oldest first). Activation reads
        them with the snapshot (store.load_history); this is for rebuilding past a bad snapshot."""
        raise NotImplementedError

    def apply(self, events: list[Event]) -> None:
        """Fold ``events`` (already ordered by event_order) into ``self.state``. Must not raise."""
        raise NotImplementedError

    def summary(self) -> Any:
        """The reply to ApplyEvents: what the ingest path publishes. Cheaper than view() where
        the view carries lists (pages, sessions); the default is the view itself."""
        return self.view()

    def view(self) -> ViewT:
        raise NotImplementedError

    # the Actor protocol ---------------------------------------------------------------------------
    async def activate(self) -> None:
        upto = 0
        history = await self.store.load_history(self.project, self.kind, self.ident)
        snap = history.snapshot
        seen: list[int] = []
        if snap is not None:
            try:
                stored = _SNAPSHOT_DECODER.decode(snap.state)
                self.state = msgspec.msgpack.decode(stored.state, type=self.state_type)  # type: ignore[assignment]
                upto, seen = snap.upto_seq, stored.seen
            except msgspec.DecodeError as exc:  # an old or corrupt snapshot: rebuild from the log
                log.warning("actor %r ignores its unreadable snapshot: %r", self.key, exc)
                self.state = self.initial_state()
                history = History(None, await self.load_events(0))
        self._floor = upto
        self._seen = set(seen)
        self._seen_heap = sorted(self._seen)
        events = [e for e in history.events if e.seq not in self._seen]
        if events:
            events.sort(key=event_order)
            self.apply(events)
            self._remember(events)
            upto = max(upto, max(event.seq for event in events))
        upto = max(upto, max(seen, default=0))
        self.replayed_upto = self.applied_upto = upto
        self.dirty = bool(events)  # an unknown key or an up-to-date snapshot: nothing new to save
        self.empty = snap is None and not events

    def _remember(self, events: list[Event]) -> None:
        for event in events:
            if event.seq and event.seq not in self._seen:
                self._seen.add(event.seq)
                heapq.heappush(self._seen_heap, event.seq)
        while len(self._seen_heap) > SEEN_KEPT:
            lowest = heapq.heappop(self._seen_heap)
            self._seen.discard(lowest)
            self._floor = max(self._floor, lowest)

    def _unapplied(self, events: list[Event]) -> list[Event]:
        fresh: list[Event] = []
        batch: set[int] = set()
        for e in events:
            if e.seq == 0:
                fresh.append(e)
            elif e.seq > self._floor and e.seq not in self._seen and e.seq not in batch:
                batch.add(e.seq)
                fresh.append(e)
        return fresh

    async def receive(self, msg: Any) -> ViewT:
        if isinstance(msg, ApplyEvents):
            fresh = self._unapplied(msg.events)
            if fresh:
                self.empty = False
                fresh.sort(key=event_order)
                self.apply(fresh)
                self._remember(fresh)
                self.applied_upto = max(self.applied_upto, max(event.seq for event in fresh))
                self.dirty = True
            return self.summary()
        if isinstance(msg, GetView):
            return self.view()
        raise TypeError(f"actor {self.key!r} cannot handle a {type(msg).__name__!r} message")

    def snapshot(self) -> Snapshot | None:
        """None when nothing changed since the stored snapshot: a read-only activation (a GetView
        on an idle session) must not rewrite it on passivation."""
        if not self.dirty:
            return None
        body = _SnapshotBody(state=msgspec.Raw(_STATE_ENCODER.encode(self.state)), seen=sorted(self._seen))
        return Snapshot(state=_STATE_ENCODER.encode(body), upto_seq=self._floor)
