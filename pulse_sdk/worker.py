"""The one thread that sends: takes batches from the buffer, posts them, retries what may succeed
later, and accounts for every event (pulse_sdk/stats.py). It never raises out of its loop."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pulse_sdk.buffer import EventBuffer, Pending
from pulse_sdk.retry import is_retryable, retry_delay
from pulse_sdk.stats import Counters
from pulse_sdk.transport import Answer, Transport

log = logging.getLogger("pulse_sdk")

MAX_LOGGED_REJECTIONS = 3  # per batch: the first few reasons say enough, the count says the rest


class DeliveryError(Exception):
    """Given to ``on_error`` when events are lost. ``kind`` is the Stats counter they went to
    (``rejected``, ``dropped_refused``, ``dropped_retries_exhausted``, ``dropped_at_close``)."""

    def __init__(self, kind: str, reason: str, events: int, status: int | None = None) -> None:
        super().__init__(f"{events} event(s) {kind}: {reason}")
        self.kind = kind
        self.reason = reason
        self.events = events
        self.status = status


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_retries: int
    backoff_base: float
    backoff_max: float
    retry_after_max: float


class Worker:
    def __init__(
        self,
        buffer: EventBuffer,
        transport: Transport,
        counters: Counters,
        *,
        flush_interval: float,
        timeout: float,
        retry: RetryPolicy,
        on_error: Callable[[DeliveryError], Any] | None,
    ) -> None:
        self.buffer = buffer
        self.transport = transport
        self.counters = counters
        self.flush_interval = flush_interval
        self.timeout = timeout
        self.retry = retry
        self.on_error = on_error
        self._stopping = threading.Event()  # set by stop(): wakes a backoff sleep to check the deadline
        self._deadline: float | None = None  # time.monotonic() by which close() wants us done
        self.thread = threading.Thread(target=self._run, name="pulse-sdk-sender", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self, deadline: float) -> None:
        """Send what is queued until ``deadline`` (monotonic), then give up on the rest."""
        self._deadline = deadline
        self._stopping.set()
        self.buffer.close()

    def _run(self) -> None:
        while True:
            batch = self.buffer.take(self.flush_interval)
            if not batch:
                return
            if self._request_timeout() is None:  # close()'s deadline passed: give up on all at once
                left = self.buffer.discard()
                self._lose(len(batch) + left, "dropped_at_close", "close() deadline passed before sending", None)
                self.buffer.done(len(batch))
                return
            lost = len(batch)
            try:
                lost = self._deliver(batch)
            except Exception as exc:  # a bug of ours must not silently stop all tracking
                log.exception("pulse_sdk: unexpected error while sending a batch of %d events", len(batch))
                self._lose(len(batch), "dropped_refused", f"internal error: {exc!r}", None)
            finally:
                self.buffer.done(lost)

    # -- one batch ----------------------------------------------------------------------------------

    def _deliver(self, batch: list[Pending]) -> int:
        """Post ``batch`` until Pulse takes it or retrying is pointless; how many events were lost."""
        # The same batchId on every attempt; the events' eventIds make a retry of a batch Pulse had
        # already stored (its answer was lost) a duplicate instead of a second copy.
        head = b'{"batchId":"batch-' + uuid.uuid4().hex.encode() + b'","sentAt":'
        events = b',"events":[' + b",".join(p.item for p in batch) + b"]}"
        attempt = 0
        while True:
            timeout = self._request_timeout()
            if timeout is None:
                return self._lose(len(batch), "dropped_at_close", "close() deadline passed before sending", None)
            sent_at = str(time.time_ns() // 1_000_000).encode()  # per attempt: skew correction is exact
            self.counters.add("requests")
            answer = self.transport.post(self.transport.encode(head + sent_at + events), timeout)
            if answer.ok:
                return self._accepted(batch, answer)
            if not is_retryable(answer.status):
                return self._lose(len(batch), "dropped_refused", answer.reason, answer.status)
            if attempt >= self.retry.max_retries:
                return self._lose(
                    len(batch), "dropped_retries_exhausted", f"{attempt + 1} attempts; last: {answer.reason}", answer.status
                )
            delay = retry_delay(
                attempt,
                answer.retry_after,
                base=self.retry.backoff_base,
                cap=self.retry.backoff_max,
                retry_after_max=self.retry.retry_after_max,
            )
            log.info("pulse_sdk: %s; retrying %d events in %.2f s", answer.reason, len(batch), delay)
            self.counters.error(answer.reason)
            if not self._sleep(delay):
                return self._lose(
                    len(batch), "dropped_at_close", f"close() deadline came before the retry; last: {answer.reason}",
                    answer.status,
                )
            attempt += 1
            self.counters.add("retries")

    def _accepted(self, batch: list[Pending], answer: Answer) -> int:
        body = answer.body if isinstance(answer.body, dict) else {}
        rejected = [
            r for r in body.get("rejected") or ()
            if isinstance(r, dict) and isinstance(r.get("index"), int) and 0 <= r["index"] < len(batch)
        ]  # fmt: skip
        lost = len({r["index"] for r in rejected})
        self.counters.add("batches")
        self.counters.add("delivered", len(batch) - lost)
        self.counters.add("duplicates", int(body.get("duplicateCount") or 0))
        if lost:
            self.counters.add("rejected", lost)
            reasons = "; ".join(
                f"events[{r['index']}] {r.get('field')}: {r.get('reason')}" for r in rejected[:MAX_LOGGED_REJECTIONS]
            )
            reason = f"Pulse rejected {lost} of {len(batch)} events: {reasons}"
            log.warning("pulse_sdk: %s", reason)
            self.counters.error(reason)
            self._report(DeliveryError("rejected", reason, lost, answer.status))
        return lost

    def _lose(self, events: int, kind: str, reason: str, status: int | None) -> int:
        self.counters.add(kind, events)
        self.counters.error(reason)
        log.warning("pulse_sdk: %d events %s: %s", events, kind.replace("_", " "), reason)
        self._report(DeliveryError(kind, reason, events, status))
        return events

    def _report(self, error: DeliveryError) -> None:
        if self.on_error is None:
            return
        try:
            self.on_error(error)
        except Exception:
            log.exception("pulse_sdk: the on_error callback raised")

    # -- time -----------------------------------------------------------------------------------------

    def _request_timeout(self) -> float | None:
        """The socket timeout for the next POST: ``timeout``, or what is left before close()'s
        deadline; None when that deadline has passed."""
        if self._deadline is None:
            return self.timeout
        left = self._deadline - time.monotonic()
        return min(self.timeout, left) if left > 0 else None

    def _sleep(self, delay: float) -> bool:
        """Wait ``delay`` seconds before a retry; False (without waiting) when close()'s deadline would
        pass first. close() interrupts the wait so the deadline is checked at once."""
        end = time.monotonic() + delay
        if not self._stopping.is_set():
            self._stopping.wait(delay)
        if self._deadline is not None and end > self._deadline:
            return False
        left = end - time.monotonic()
        if left > 0:
            time.sleep(left)  # stopping, but this retry still fits before the deadline
        return True
