"""``pulse_sdk.Client``: track events from any thread without waiting for the network.

``track`` encodes the event (so a bad payload fails in the caller, not later in a batch) and queues
it; one background thread (pulse_sdk/worker.py) sends batches to ``POST /api/events/track/batch``.
Standard library only, so installing the SDK into an application pulls nothing in.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any, Final

from pulse_sdk.buffer import EventBuffer
from pulse_sdk.stats import Counters, Stats
from pulse_sdk.transport import Transport
from pulse_sdk.worker import DeliveryError, RetryPolicy, Worker

MAX_NAME: Final = 200  # Pulse's limit on event names (protocol/tracking.py)
MAX_BATCH: Final = 1000  # Pulse's limit on events per batch (protocol/normalize.py)
MAX_BATCH_BYTES: Final = 4 * 1024 * 1024  # Pulse refuses bodies over 5 MiB on the wire (server/http.py)
_CLIENT_IDS: Final = ("eventId", "messageId", "insertId")  # what Pulse deduplicates by
OVERFLOW_LOG_INTERVAL_S: Final = 60.0

log = logging.getLogger("pulse_sdk")

# Taken by the first thread of a forked child that notices the fork, so that only one of them
# gives the client its new queue. A fresh lock in every child: the parent's may have been held.
_fork_lock = threading.Lock()


def _new_fork_lock() -> None:
    global _fork_lock
    _fork_lock = threading.Lock()


os.register_at_fork(after_in_child=_new_fork_lock)


def _ms(value: float | datetime) -> int:
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    return int(value)


class Client:
    """A batching Pulse client. Thread-safe; one sender thread per client per process.

    ``track`` never blocks: when the queue holds ``max_queue`` events (or ``max_queue_bytes``), the
    oldest queued event is dropped to make room and counted (``stats().dropped_queue_full``).
    """

    def __init__(
        self,
        base_url: str = "http://localhost:3000",
        key: str | None = None,
        service_name: str | None = "python-service",
        *,
        flush_interval: float = 1.0,
        max_batch: int = 100,
        max_batch_bytes: int = 1024 * 1024,
        max_queue: int = 10_000,
        max_queue_bytes: int = 64 * 1024 * 1024,
        timeout: float = 5.0,
        max_retries: int = 5,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        retry_after_max: float = 60.0,
        close_timeout: float = 5.0,
        gzip: bool = True,
        on_error: Callable[[DeliveryError], Any] | None = None,
        flush_at_exit: bool = True,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        if not 1 <= max_batch <= MAX_BATCH:
            raise ValueError(f"max_batch must be 1 to {MAX_BATCH} (Pulse's batch limit), got {max_batch}")
        if not 1 <= max_batch_bytes <= MAX_BATCH_BYTES:
            raise ValueError(f"max_batch_bytes must be 1 to {MAX_BATCH_BYTES}, got {max_batch_bytes}")
        if max_queue < max_batch or max_queue_bytes < max_batch_bytes:
            raise ValueError("max_queue/max_queue_bytes must hold at least one full batch")
        for name, value in (("flush_interval", flush_interval), ("timeout", timeout), ("close_timeout", close_timeout),
                            ("backoff_base", backoff_base), ("backoff_max", backoff_max),
                            ("retry_after_max", retry_after_max)):  # fmt: skip
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0, got {value!r}")
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0, got {timeout!r}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.base_url = base_url
        self.service_name = service_name
        self.flush_interval = flush_interval
        self.max_batch = max_batch
        self.max_batch_bytes = max_batch_bytes
        self.max_queue = max_queue
        self.max_queue_bytes = max_queue_bytes
        self.timeout = timeout
        self.close_timeout = close_timeout
        self.retry = RetryPolicy(max_retries, backoff_base, backoff_max, retry_after_max)
        self.on_error = on_error
        self._transport = Transport(base_url, key=key, use_gzip=gzip)
        self._closed = False
        self._at_exit_registered = flush_at_exit
        self._start_process()
        if flush_at_exit:
            atexit.register(self._at_exit)

    def _start_process(self) -> None:
        """This process's queue, counters and (not yet started) sender: at construction, and again
        in a forked child, whose copy of the parent's thread does not exist and whose locks may
        have been copied while held. The parent's queued events stay the parent's to send."""
        self._lock = threading.Lock()
        self._counters = Counters()
        self._buffer = EventBuffer(
            self.max_queue, self.max_queue_bytes, batch_events=self.max_batch, batch_bytes=self.max_batch_bytes
        )
        self._worker = Worker(
            self._buffer,
            self._transport,
            self._counters,
            flush_interval=self.flush_interval,
            timeout=self.timeout,
            retry=self.retry,
            on_error=self.on_error,
        )
        self._started = False
        self._next_overflow_log = 0.0
        self._pid = os.getpid()  # last: other threads of a forked child test it without the lock

    def _check_fork(self) -> None:
        if self._pid != os.getpid():
            with _fork_lock:
                if self._pid != os.getpid():
                    self._start_process()

    def _ensure_worker(self) -> None:
        self._check_fork()
        if not self._started:
            with self._lock:
                if not self._started:
                    self._worker.start()
                    self._started = True

    # -- tracking -----------------------------------------------------------------------------------

    def track(
        self,
        event_name: str,
        payload: Mapping[str, Any] | None = None,
        *,
        user_id: str | None = None,
        session_id: str | None = None,
        correlation_id: str | None = None,
        timestamp: float | datetime | None = None,
        event_id: str | None = None,
    ) -> bool:
        """Queue one event (seed 004's AIEventPayload fields go in ``payload``). Returns False when the
        client is closed (the event is counted as ``dropped_closed``), True when queued.

        Raises ValueError/TypeError at once for an event Pulse could never accept: an empty or too
        long name, or a payload that is not JSON (NaN, objects json cannot encode)."""
        if not isinstance(event_name, str) or not 1 <= len(event_name) <= MAX_NAME:
            raise ValueError(f"event_name must be a string of 1 to {MAX_NAME} characters, got {event_name!r}")
        body: dict[str, Any] = dict(payload) if payload is not None else {}
        for field, value in (("userId", user_id), ("sessionId", session_id), ("correlationId", correlation_id)):
            if value is not None:
                body[field] = value
        if self.service_name is not None:
            body.setdefault("serviceName", self.service_name)
        if timestamp is not None:
            body["timestamp"] = _ms(timestamp)
        else:
            body.setdefault("timestamp", time.time_ns() // 1_000_000)
        if event_id is not None:
            body["eventId"] = event_id
        elif not any(body.get(name) for name in _CLIENT_IDS):
            body["eventId"] = str(uuid.uuid4())  # Pulse stores a retried event once by this id
        item = json.dumps(
            {"eventName": event_name, "payload": body}, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode()
        if len(item) > self.max_batch_bytes:
            raise ValueError(f"event {event_name!r} is {len(item)} bytes encoded; the limit is max_batch_bytes "
                             f"({self.max_batch_bytes})")
        if self._closed:
            self._counters.add("dropped_closed")
            return False
        self._ensure_worker()
        dropped = self._buffer.put(item)
        if dropped is None:  # close() began meanwhile
            self._counters.add("dropped_closed")
            return False
        self._counters.add("tracked")
        if dropped:
            self._counters.add("dropped_queue_full", dropped)
            now = time.monotonic()
            if now >= self._next_overflow_log:  # once a minute at most: the counter has the total
                self._next_overflow_log = now + OVERFLOW_LOG_INTERVAL_S
                log.warning("pulse_sdk: queue full (%d events): dropping the oldest; %d dropped so far",
                            self.max_queue, self._counters.snapshot(0, 0).dropped_queue_full)  # fmt: skip
        return True

    def flush(self, timeout: float | None = None) -> bool:
        """Block until every event queued before this call has been sent (or dropped), or ``timeout``
        seconds pass. True when all of them were delivered and no event was lost since the previous
        flush() returned (so a loss is reported once, by the next flush); ``stats()`` says which.
        Without a timeout the wait still ends: every batch gives up after ``max_retries`` retries."""
        self._check_fork()
        return self._buffer.flush(timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Stop taking events, send what is queued for up to ``timeout`` seconds (``close_timeout``
        when None), then stop the sender; what is left is dropped and counted (``dropped_at_close``).
        True when everything queued was delivered in time and nothing was lost since the previous
        flush() returned. Calling it again does nothing (and returns True)."""
        self._check_fork()
        with self._lock:
            if self._closed:
                return True
            self._closed = True
            started = self._started
        if self._at_exit_registered:
            atexit.unregister(self._at_exit)
            self._at_exit_registered = False
        deadline = time.monotonic() + (self.close_timeout if timeout is None else timeout)
        self._worker.stop(deadline)
        if not started:
            return True  # nothing was ever tracked in this process
        delivered = self._buffer.flush(max(0.0, deadline - time.monotonic()))
        self._worker.thread.join(max(0.0, deadline - time.monotonic()))
        left = self._buffer.discard()  # only when the deadline passed with events still queued
        if left:
            self._counters.add("dropped_at_close", left)
            self._counters.error(f"close() deadline passed with {left} events queued")
        return delivered and not left

    shutdown = close

    def _at_exit(self) -> None:
        self.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- state --------------------------------------------------------------------------------------

    def stats(self) -> Stats:
        queued, in_flight = self._buffer.sizes()
        return self._counters.snapshot(queued, in_flight)

    def count_user_id_error(self) -> None:
        """For PulseMiddleware: its ``user_id`` callable raised (shown as ``stats().user_id_errors``)."""
        self._counters.add("user_id_errors")

    def count_middleware_error(self) -> None:
        """For PulseMiddleware: a request's event could not be built or queued (``middleware_errors``)."""
        self._counters.add("middleware_errors")

    def __repr__(self) -> str:
        return f"Client({self.base_url!r}, service_name={self.service_name!r})"
