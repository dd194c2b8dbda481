"""Projection actors: an actor whose state is a fold over its key's events (actors/runtime.py runs it).

ApplyEvents and GetView are the messages; ProjectionActor holds the skip rule (each event applied
once, whatever the order and the retries) and the snapshot format. The session and user actors
(actors/session.py, actors/user.py) are projections.
"""

from __future__ import annotations

import heapq
import logging
from typing import Any, ClassVar, Final, Generic, TypeVar

import msgspec

from actors.runtime import ActorKey, ActorStore
from protocol.record import Event
from storage.base import History, Snapshot

log = logging.getLogger("pulse.actors")

SEEN_KEPT: Final = 512  # applied seqs above the floor a projection remembers (and snapshots)


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
        seen, heap = self._seen, self._seen_heap
        for event in events:
            seq = event.seq
            if seq and seq not in seen:
                seen.add(seq)
                heapq.heappush(heap, seq)
        while len(heap) > SEEN_KEPT:
            lowest = heapq.heappop(heap)
            seen.discard(lowest)
            if lowest > self._floor:
                self._floor = lowest

    def _unapplied(self, events: list[Event]) -> list[Event]:
        floor, seen = self._floor, self._seen
        if len(events) == 1:  # a single event: no batch to dedup against
            seq = events[0].seq
            return events if seq == 0 or (seq > floor and seq not in seen) else []
        fresh: list[Event] = []
        batch: set[int] = set()
        for e in events:
            seq = e.seq
            if seq == 0:
                fresh.append(e)
            elif seq > floor and seq not in seen and seq not in batch:
                batch.add(seq)
                fresh.append(e)
        return fresh

    async def receive(self, msg: Any) -> ViewT:
        (reply,) = self.receive_all([msg])
        return reply  # type: ignore[no-any-return]

    def receive_all(self, msgs: list[Any]) -> list[Any]:
        """Every message taken from the mailbox at once, in order (synchronous: see ActorSystem).

        A run of consecutive ApplyEvents is applied as one batch (one sort, one fold, one summary)
        and each of them is answered with the summary after the whole run: every event it carried
        is applied by then, and no reply is built for a state nobody asked about. A GetView ends
        a run, so it sees the events asked before it (and not the ones asked after it).
        """
        if len(msgs) == 1:
            msg = msgs[0]
            if type(msg) is ApplyEvents:
                return [self.apply_events(msg)]
        replies: list[Any] = []
        i, n = 0, len(msgs)
        while i < n:
            msg = msgs[i]
            if isinstance(msg, ApplyEvents):
                j = i + 1
                while j < n and isinstance(msgs[j], ApplyEvents):
                    j += 1
                if j == i + 1:
                    replies.append(self.apply_events(msg))
                else:
                    run: list[ApplyEvents] = msgs[i:j]
                    events = [event for m in run for event in m.events]
                    merged = ApplyEvents(events=events, steps=any(m.steps for m in run))
                    replies.extend(self.reply_each(self.apply_events(merged), run))
                i = j
            elif isinstance(msg, GetView):
                replies.append(self.view())
                i += 1
            else:
                raise TypeError(f"actor {self.key!r} cannot handle a {type(msg).__name__!r} message")
        return replies

    def apply_events(self, msg: ApplyEvents) -> Any:
        """Apply the events not applied yet (the skip rule) in event order; the reply is summary()."""
        fresh = self._unapplied(msg.events)
        if fresh:
            self.empty = False
            if len(fresh) > 1:
                fresh.sort(key=event_order)
            self.apply(fresh)
            self._remember(fresh)
            top = max(event.seq for event in fresh) if len(fresh) > 1 else fresh[0].seq
            if top > self.applied_upto:
                self.applied_upto = top
            self.dirty = True
        return self.summary()

    def reply_each(self, reply: Any, run: list[ApplyEvents]) -> list[Any]:
        """The replies to a run of ApplyEvents applied together: the same summary for each (a
        subclass whose summary carries per-message parts gives each its own)."""
        return [reply] * len(run)

    def snapshot(self) -> Snapshot | None:
        """None when nothing changed since the stored snapshot: a read-only activation (a GetView
        on an idle session) must not rewrite it on passivation."""
        if not self.dirty:
            return None
        body = _SnapshotBody(state=msgspec.Raw(_STATE_ENCODER.encode(self.state)), seen=sorted(self._seen))
        return Snapshot(state=_STATE_ENCODER.encode(body), upto_seq=self._floor)
