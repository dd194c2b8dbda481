"""An in-memory double of the Store methods the actors use (snapshots and per-key replay).

It assigns seqs like the real store (monotonic per store) and records every snapshot write, so
tests can check what passivation and drain saved. ``fail_loads`` makes the next N load_snapshot
(and load_history) calls raise, to exercise activation failures.
"""

from __future__ import annotations

import msgspec
import trio

from protocol.record import SOURCE_BEHAVIORAL, Event
from storage.base import History, Snapshot, StoreUnavailable


class MemoryStore:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.snapshots: dict[tuple[str, str, str], Snapshot] = {}
        self.saves: list[tuple[str, str, str, Snapshot]] = []  # (project, kind, key, snapshot) in order
        self.save_times: list[float] = []  # trio.current_time() of each save
        self.loads = 0
        self.fail_loads = 0
        self.save_delay = 0.0  # seconds each save_snapshot takes (virtual time in tests)
        self._seq = 0

    def add(self, *events: Event) -> list[Event]:
        """Commit ``events`` (assigning seqs in place) and return them, like Store.append."""
        for event in events:
            self._seq += 1
            event.seq = self._seq
            self.events.append(event)
        return list(events)

    async def load_snapshot(self, project: str, kind: str, key: str) -> Snapshot | None:
        self.loads += 1
        if self.fail_loads:
            self.fail_loads -= 1
            raise StoreUnavailable(f"injected load failure for {(project, kind, key)!r}")
        return self.snapshots.get((project, kind, key))

    async def save_snapshot(self, project: str, kind: str, key: str, snapshot: Snapshot) -> None:
        if self.save_delay:
            await trio.sleep(self.save_delay)
        self.snapshots[(project, kind, key)] = snapshot
        self.saves.append((project, kind, key, snapshot))
        self.save_times.append(trio.current_time())

    async def load_history(self, project: str, kind: str, key: str) -> History:
        snapshot = await self.load_snapshot(project, kind, key)
        after = 0 if snapshot is None else snapshot.upto_seq
        field = {"session": "session_id", "user": "user_id"}.get(kind)
        events = [e for e in self.events if e.project == project and field and getattr(e, field) == key and e.seq > after]
        return History(snapshot, events)

    async def session_events(self, project: str, session_id: str, after_seq: int) -> list[Event]:
        return [
            e
            for e in self.events
            if e.project == project and e.session_id == session_id and e.seq > after_seq
        ]

    async def user_events(self, project: str, user_id: str, after_seq: int) -> list[Event]:
        return [e for e in self.events if e.project == project and e.user_id == user_id and e.seq > after_seq]


_counter = 0


def make_event(
    name: str = "click",
    *,
    ts: int = 1_000,
    session: str | None = "s1",
    user: str | None = None,
    project: str = "p1",
    device_type: str | None = None,
    payload: object = None,
    raw_payload: bytes | None = None,
) -> Event:
    """An uncommitted Event (seq 0) with ``payload`` encoded as its JSON payload."""
    global _counter
    _counter += 1
    body = (
        raw_payload
        if raw_payload is not None
        else msgspec.json.encode(payload if payload is not None else {})
    )
    return Event(
        id=f"evt_{_counter}",
        project=project,
        name=name,
        source=SOURCE_BEHAVIORAL,
        timestamp=ts,
        received_at=ts,
        payload=msgspec.Raw(body),
        user_id=user,
        session_id=session,
        device_type=device_type,
    )
