"""The bounded queue between ``Client.track`` (any thread) and the one worker thread that sends.

Every event gets a sequence number when queued. Events leave the queue in order, either in the batch
the worker is sending (``in flight``) or dropped to make room; so "everything queued before now has
been settled" is simply "the lowest unsettled sequence number is past the last one queued before
now", which is what ``flush`` waits for. Lost events (dropped, refused, rejected) are counted here
too, so a flush can say whether any was lost since the previous flush returned.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass


@dataclass(slots=True)
class Pending:
    """One queued event: its JSON (``{"eventName": ..., "payload": {...}}``), ready to join a batch."""

    seq: int
    item: bytes
    queued_at: float  # time.monotonic()


class EventBuffer:
    """A FIFO bounded by event count and by bytes; when full, the oldest events are dropped."""

    def __init__(self, max_events: int, max_bytes: int, *, batch_events: int, batch_bytes: int) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.batch_events = batch_events
        self.batch_bytes = batch_bytes
        self._cond = threading.Condition(threading.Lock())
        self._items: deque[Pending] = deque()
        self._bytes = 0
        self._next_seq = 1
        self._in_flight: tuple[int, int] | None = None  # (first, count) of the batch being sent
        self._flushing = 0  # flush() calls waiting: the worker sends without waiting for a full batch
        self._lost = 0  # events lost so far (dropped to make room, refused, rejected, given up on)
        self._lost_reported = 0  # self._lost when the last flush returned
        self._closed = False

    # -- producers --------------------------------------------------------------------------------

    def put(self, item: bytes) -> int | None:
        """Queue one event; returns how many of the oldest events were dropped to make room for it,
        or None (not queued) once the buffer is closed."""
        with self._cond:
            if self._closed:
                return None
            dropped = 0
            while self._items and (len(self._items) >= self.max_events or self._bytes + len(item) > self.max_bytes):
                self._bytes -= len(self._items.popleft().item)
                dropped += 1
            seq = self._next_seq
            self._next_seq += 1
            self._items.append(Pending(seq, item, time.monotonic()))
            self._bytes += len(item)
            self._lost += dropped
            if len(self._items) == 1 or self._batch_full():
                self._cond.notify_all()  # the worker waits for a first event, or for a full batch
            return dropped

    def flush(self, timeout: float | None) -> bool:
        """Wait until every event queued before this call has been sent or dropped (or ``timeout``
        seconds pass). True when they all were, and no event at all was lost since the previous
        flush returned; False on timeout, or when some event was lost (each loss is reported once)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            last = self._next_seq - 1
            self._flushing += 1
            self._cond.notify_all()  # the worker sends now instead of at the end of its interval
            try:
                while self._lowest_unsettled() <= last:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    self._cond.wait(remaining)
            finally:
                self._flushing -= 1
            clean = self._lost == self._lost_reported
            self._lost_reported = self._lost
            return clean

    def close(self) -> None:
        """No more events, no more waiting for full batches: the worker drains what is queued, then
        ``take`` gives []."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def discard(self) -> int:
        """Drop everything still queued (the close deadline passed); returns how many events."""
        with self._cond:
            count = len(self._items)
            self._items.clear()
            self._bytes = 0
            self._lost += count
            self._cond.notify_all()
            return count

    # -- the worker -------------------------------------------------------------------------------

    def take(self, interval: float) -> list[Pending]:
        """The next batch, oldest first, once it is due: full (by count or bytes), ``interval`` seconds
        after its oldest event was queued, wanted by a flush, or the buffer is closing. [] once the
        buffer is closed and empty."""
        with self._cond:
            while True:
                if self._items:
                    due = self._items[0].queued_at + interval
                    if (
                        self._closed
                        or self._flushing
                        or self._batch_full()
                        or time.monotonic() >= due
                    ):
                        break
                    self._cond.wait(due - time.monotonic())
                elif self._closed:
                    return []
                else:
                    self._cond.wait()  # track() or close() notifies
            batch: list[Pending] = []
            size = 0
            while self._items and len(batch) < self.batch_events:
                nxt = self._items[0]
                if batch and size + len(nxt.item) > self.batch_bytes:
                    break
                self._items.popleft()
                self._bytes -= len(nxt.item)
                size += len(nxt.item)
                batch.append(nxt)
            self._in_flight = (batch[0].seq, len(batch))
            return batch

    def done(self, lost: int) -> None:
        """The in-flight batch is settled; ``lost`` of its events were not delivered (refused,
        rejected, given up on)."""
        with self._cond:
            self._in_flight = None
            self._lost += lost
            self._cond.notify_all()

    # -- state ------------------------------------------------------------------------------------

    def sizes(self) -> tuple[int, int]:
        """(events queued, events in the batch being sent)."""
        with self._cond:
            return len(self._items), (self._in_flight[1] if self._in_flight else 0)

    def _batch_full(self) -> bool:
        return len(self._items) >= self.batch_events or self._bytes >= self.batch_bytes

    def _lowest_unsettled(self) -> int:
        if self._in_flight is not None:
            return self._in_flight[0]
        if self._items:
            return self._items[0].seq
        return self._next_seq
