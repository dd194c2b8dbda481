"""The retention job (issue 14 part 5): removes events past their retention, at start and then every
``--retention-interval`` seconds (default 3600; ``PULSE_RETENTION_INTERVAL``).

Two rules, both enforced by ``Store.delete_expired`` in chunks, with the aggregates kept equal to
the remaining events (storage/deletion_records.py):

- per event: ``expires_at`` (a privacy-compliant event's ``retention``, e.g. ``30_days``) has passed;
- per project: the event is older than the project's ``retentionDays`` policy
  (``PATCH /api/admin/projects/{id}/policy``); projects without one keep events forever.

In a cluster every node runs the job, but only the node that owns the key ``RETENTION_KEY`` (the
same rendezvous hashing as the actors) does the work in a round: the others skip it. Two nodes
that disagree for a moment (membership moving) both run it, which is harmless: a delete is
idempotent, and each node counts and subtracts only the rows its own DELETE removed.

What a run removed is logged per project and counted (``retention`` on
/api/v1/behavioral/monitoring/performance: runs, events removed, per project, the last run).
Actor snapshots are summaries, not events: a live session's state is not rewritten by retention.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any, Final

import trio

from protocol.normalize import iso_ms
from storage.base import Store, StoreError

log = logging.getLogger("pulse.retention")

RETENTION_KEY: Final = "pulse:retention"
RUN_TIME_LIMIT_S: Final = 900.0  # one run; a backlog left over is taken up by the next run


class RetentionJob:
    def __init__(self, store: Store, *, interval: float, bus: Any = None) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be positive, got {interval!r}")
        self.store = store
        self.interval = interval
        self.bus = bus  # storage.redis_bus.RedisBus or None
        self.runs = 0
        self.skipped = 0  # rounds left to another node
        self.failures = 0
        self.removed = 0
        self.removed_by_project: Counter[str] = Counter()
        self.last_run_ms: int | None = None
        self.last_removed: dict[str, int] = {}
        self.last_error: str | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await self.run_once()
            await trio.sleep(self.interval)

    def _mine(self) -> bool:
        bus = self.bus
        return bus is None or not bus.connected or bus.owner(RETENTION_KEY) == bus.node_id

    async def run_once(self, now_ms: int | None = None) -> dict[str, int]:
        """One round (if this node's turn): what it removed per project."""
        if not self._mine():
            self.skipped += 1
            return {}
        now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        try:
            policies = await self.store.project_policies()
            retention = {p: policy.retention_days for p, policy in policies.items() if policy.retention_days}
            with trio.fail_after(RUN_TIME_LIMIT_S):
                removed = await self.store.delete_expired(now, retention)
        except (StoreError, trio.TooSlowError) as exc:
            self.failures += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("retention run failed (the next run tries again): %s", self.last_error)
            return {}
        self.runs += 1
        self.last_run_ms = now
        self.last_removed = removed
        self.last_error = None
        self.removed += sum(removed.values())
        self.removed_by_project.update(removed)
        for project, count in sorted(removed.items()):
            log.info("retention removed %d events of project %s", count, project)
        return removed

    def view(self) -> dict[str, Any]:
        return {
            "intervalSeconds": self.interval,
            "runs": self.runs,
            "skipped": self.skipped,
            "failures": self.failures,
            "removed": self.removed,
            "removedByProject": dict(self.removed_by_project),
            "lastRunAt": None if self.last_run_ms is None else iso_ms(self.last_run_ms),
            "lastRemoved": self.last_removed,
            "lastError": self.last_error,
        }
