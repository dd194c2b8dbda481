"""Actor activations read their history (snapshot + the events after it) in batches.

When many actors activate at once (a burst of new visitors, every session after a restart or a
membership change), one read per activation queues behind the pool: measured on PostgreSQL with
600 visitors arriving within a second, single reads took 0.5-1.8 s and some activations timed out.
Here activations queue their key and a loader task takes every key waiting, up to MAX_BATCH, and
asks the backend for all of them in one unit of work (one connection, three statements on
PostgreSQL; one thread hop on SQLite). Up to IN_FLIGHT batches run at once, so a burst becomes a few
large reads instead of a thousand small ones, while an idle server still answers a lone activation
with one read.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Final

import trio

from storage.base import History, HistoryKey, StoreUnavailable

MAX_BATCH: Final = 256  # keys per read
IN_FLIGHT: Final = 4  # batches read at once (the pool keeps connections for the writer too)
QUEUE: Final = 4096  # activations waiting for a batch before load() waits for room

log = logging.getLogger(__name__)

FetchHistories = Callable[[list[HistoryKey]], Awaitable[dict[HistoryKey, History]]]


class _Load:
    __slots__ = ("key", "history", "error", "done")

    def __init__(self, key: HistoryKey) -> None:
        self.key = key
        self.history: History | None = None
        self.error: str | None = None
        self.done = trio.Event()


class HistoryReads:
    """``load`` for any number of concurrent callers; ``run`` is the loader, owned by the store.

    ``fetch`` reads the histories of a batch of keys; a key it leaves out has no history (no
    snapshot, no events). Its own deadline bounds it (the store's read timeout); a caller's wait is
    bounded by its own deadline (actor activation has one).
    """

    def __init__(self, fetch: FetchHistories) -> None:
        self._fetch = fetch
        self._send, self._receive = trio.open_memory_channel[_Load](QUEUE)

    async def load(self, key: HistoryKey) -> History:
        load = _Load(key)
        try:
            await self._send.send(load)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise StoreUnavailable("store is closed") from None
        await load.done.wait()
        if load.error is not None:
            raise StoreUnavailable(load.error)
        assert load.history is not None
        return load.history

    async def run(self) -> None:
        """Read batches until cancelled; then fail what is still queued (nobody will read it)."""
        slots = trio.Semaphore(IN_FLIGHT)
        try:
            async with trio.open_nursery() as in_flight:
                while True:
                    await slots.acquire()
                    batch = [await self._receive.receive()]
                    while len(batch) < MAX_BATCH:
                        try:
                            batch.append(self._receive.receive_nowait())
                        except trio.WouldBlock:
                            break
                    in_flight.start_soon(self._read, batch, slots)
        finally:
            for load in _drain(self._receive):
                _fail(load, "store closed before the read")
            self._receive.close()  # later load() calls fail at once

    async def _read(self, batch: list[_Load], slots: trio.Semaphore) -> None:
        try:
            found = await self._fetch(list({load.key: None for load in batch}))
            for load in batch:
                load.history = found.get(load.key) or History(None, [])
                load.done.set()
        except StoreUnavailable as exc:
            for load in batch:
                _fail(load, str(exc))
        except Exception as exc:  # a bug: this batch's activations fail, the loader goes on
            log.exception("reading the history of %d actors failed", len(batch))
            for load in batch:
                _fail(load, f"read failed: {exc!r}")
        finally:
            slots.release()
            for load in batch:  # cancelled (store closing): nobody is left waiting
                if not load.done.is_set():
                    _fail(load, "store closed before the read")


def _fail(load: _Load, reason: str) -> None:
    load.error = reason
    load.done.set()


def _drain(receive: trio.MemoryReceiveChannel[_Load]) -> list[_Load]:
    waiting: list[_Load] = []
    while True:
        try:
            waiting.append(receive.receive_nowait())
        except (trio.WouldBlock, trio.ClosedResourceError, trio.EndOfChannel):
            return waiting
