"""The live anomaly detector: a few seconds after each minute closes, judge that minute of every
service of the projects that have subscribers on this node, and push an ``anomaly`` message to
their project-wide subscribers (both stream families).

It reads the per-minute aggregates (Store.minute_series), never the event log, and keeps each
service's baseline (actors/insights/anomaly.ServiceDetector) between minutes, so a project costs
one small read per minute once warm. A project's state is built the first time it has subscribers,
from HISTORY_MINUTES of stored history, and dropped when its last subscriber leaves. In a cluster
every node runs its own detector over the shared store: each judges the same stored minutes the
same way, so every node's subscribers get the same messages (they are not sent over the bus).
Late events (after the settle delay) are not judged live; GET /api/events/anomalies judges them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Final

import trio

from actors.hub import KIND_ANOMALY, Attrs, Hub
from actors.insights.anomaly import HISTORY_MINUTES, Finding, Minute, ServiceDetector
from protocol.anomaly import Anomaly, AnomalyMessage
from protocol.normalize import iso_ms
from storage.base import MinuteRow, Store, StoreError

log = logging.getLogger("pulse.anomaly")

MINUTE_MS: Final = 60_000
SETTLE_S: Final = 5.0  # a minute is judged this long after it closes (events still in flight)
TICK_S: Final = 5.0  # how often the watcher looks for newly closed minutes
READ_TIMEOUT_S: Final = 10.0  # one project's read; past it the project is tried again next tick
MAX_CATCH_UP_MINUTES: Final = HISTORY_MINUTES  # after a long stall, older minutes are history, not news

Series = dict[str, list[Minute]]  # service ('' for events without one) -> ascending minutes


def series_of(rows: Iterable[MinuteRow]) -> Series:
    series: Series = {}
    for r in rows:
        series.setdefault(r.service_name or "", []).append(
            Minute(r.minute, r.count, r.with_status, r.errors, r.with_rt, r.rt_sum)
        )
    return series


def wire(service: str, f: Finding) -> Anomaly:
    return Anomaly(serviceName=service or None, metric=f.metric, minute=iso_ms(f.minute * MINUTE_MS),  # type: ignore[arg-type]
                   value=round(f.value, 4), expected=round(f.expected, 4), score=round(f.score, 3))  # fmt: skip


class _Project:
    __slots__ = ("detectors", "last_minute")

    def __init__(self, last_minute: int) -> None:
        self.detectors: dict[str, ServiceDetector] = {}
        self.last_minute = last_minute  # every minute through this one has been judged


class AnomalyWatch:
    def __init__(
        self,
        store: Store,
        hub: Hub,
        *,
        settle_s: float = SETTLE_S,
        tick_s: float = TICK_S,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self.store = store
        self.hub = hub
        self.settle_ms = int(settle_s * 1000)
        self.tick_s = tick_s
        self.wall_ms = wall_ms
        self.projects: dict[str, _Project] = {}
        self.published = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await self.tick()
            await trio.sleep(self.tick_s)

    def closed_minute(self) -> int:
        """The newest minute that closed at least the settle delay ago."""
        return (self.wall_ms() - self.settle_ms) // MINUTE_MS - 1

    async def tick(self) -> None:
        closed = self.closed_minute()
        watched = [p for p in self.hub.subscribed_projects()]
        for project in list(self.projects):
            if project not in watched:
                del self.projects[project]  # no one listens: rebuilt from history when someone does
        for project in watched:
            state = self.projects.get(project)
            if state is not None and state.last_minute >= closed:
                continue
            try:
                with trio.fail_after(READ_TIMEOUT_S):
                    found = await self._judge(project, state, closed)
            except (StoreError, trio.TooSlowError) as exc:
                log.warning("anomaly detection for project %r skipped this tick: %r", project, exc)
                continue
            except Exception:  # a bug of ours: logged, the project's state rebuilt next tick, the server goes on
                log.exception("anomaly detection for project %r failed", project)
                self.projects.pop(project, None)
                continue
            if found:
                self.publish(project, found)

    async def _judge(self, project: str, state: _Project | None, closed: int) -> list[Anomaly]:
        if state is None or closed - state.last_minute > MAX_CATCH_UP_MINUTES:
            # cold start: history settles the baselines; only the newest closed minute is news
            state = self.projects[project] = _Project(closed - 1)
            rows = await self.store.minute_series(
                project, since_ms=(closed - HISTORY_MINUTES) * MINUTE_MS, until_ms=closed * MINUTE_MS + MINUTE_MS - 1
            )
            history = series_of(r for r in rows if r.minute < closed)
            for service, minutes in history.items():
                detector = state.detectors[service] = ServiceDetector()
                for _ in detector.feed(minutes, until=closed - 1):
                    pass
            fresh = series_of(r for r in rows if r.minute == closed)
        else:
            rows = await self.store.minute_series(
                project, since_ms=(state.last_minute + 1) * MINUTE_MS, until_ms=closed * MINUTE_MS + MINUTE_MS - 1
            )
            fresh = series_of(rows)
        found: list[Anomaly] = []
        for service in sorted(set(state.detectors) | set(fresh)):
            detector = state.detectors.setdefault(service, ServiceDetector())
            for finding in detector.feed(fresh.get(service, []), until=closed):
                found.append(wire(service, finding))
        state.last_minute = closed
        return found

    def publish(self, project: str, found: list[Anomaly]) -> None:
        messages = [
            (KIND_ANOMALY, Attrs(service_name=a.serviceName),
             AnomalyMessage(serviceName=a.serviceName, metric=a.metric, minute=a.minute, value=a.value,
                            expected=a.expected, score=a.score), 0, "")
            for a in found
        ]  # fmt: skip
        self.published += self.hub.publish_many(project, messages)
