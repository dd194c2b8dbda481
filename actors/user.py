"""The UserActor: one user across sessions and devices (key ``("user", project, userId)``).

It backs cross-device continuity (seed 000 ``/cross-device/sync/{userId}``): which sessions the user
has, on which devices, what page each device shows now. Memory per user is bounded: the most recent
SESSIONS_KEPT sessions and DEVICES_KEPT devices are kept, older ones are evicted by last activity.

A device is identified by an explicit device id (payload ``deviceId``, ``sessionContext.deviceId``,
``metadata.deviceId``); without one, an event inherits its session's device, else the device type
stands in for the device ("mobile"), else "unknown". So clients that never send a device id still
get one device per device type, and a session that reveals its device id later moves to it.
"""

from __future__ import annotations

from typing import Final

import msgspec

from actors.payload import PAGE_VIEW_NAMES, UNKNOWN_DEVICE, extract
from actors.projection import ApplyEvents, GetView, ProjectionActor
from actors.runtime import ActorKey, ActorStore
from protocol.record import Event

__all__ = ["ApplyEvents", "GetView", "UserActor", "UserDevice", "UserSession", "UserView", "KIND"]

KIND: Final = "user"
SESSIONS_KEPT: Final = 50
DEVICES_KEPT: Final = 20

_NEVER: Final = (-1, -1)


# state (msgpack in snapshots) --------------------------------------------------------------------
class SessionEntry(msgspec.Struct, kw_only=True):
    session_id: str
    device_type: str | None = None
    device_id: str = UNKNOWN_DEVICE
    device_explicit: bool = False  # device_id came from the client, not from the device type
    first_seen: int
    last_seen: int
    event_count: int = 0
    current_page: str | None = None
    page_order: tuple[int, int] = _NEVER  # (timestamp, seq) of the page view behind current_page


class DeviceEntry(msgspec.Struct, kw_only=True):
    device_id: str
    device_type: str | None = None
    last_activity: int
    last_session_id: str | None = None
    last_order: tuple[int, int] = _NEVER  # (timestamp, seq) of the event behind last_session_id
    current_page: str | None = None
    page_order: tuple[int, int] = _NEVER


class UserState(msgspec.Struct, kw_only=True):
    user_id: str
    sessions: dict[str, SessionEntry] = msgspec.field(default_factory=dict)
    devices: dict[str, DeviceEntry] = msgspec.field(default_factory=dict)
    sessions_dropped: int = 0
    event_count: int = 0
    first_seen: int | None = None
    last_activity: int | None = None


# view (the reply, JSON on the wire) --------------------------------------------------------------
class UserSession(msgspec.Struct, kw_only=True, rename="camel"):
    session_id: str
    device_type: str | None
    device_id: str
    first_seen: int  # unix ms
    last_seen: int  # unix ms
    event_count: int
    current_page: str | None


class UserDevice(msgspec.Struct, kw_only=True, rename="camel"):
    device_id: str
    device_type: str | None
    last_activity: int  # unix ms
    last_session_id: str | None
    current_page: str | None


class UserView(msgspec.Struct, kw_only=True, rename="camel"):
    user_id: str
    sessions: list[UserSession]  # most recent first, at most SESSIONS_KEPT
    devices: list[UserDevice]  # most recent first, at most DEVICES_KEPT
    event_count: int
    first_seen: int | None  # unix ms
    last_activity: int | None  # unix ms


class UserSummary(msgspec.Struct, kw_only=True, rename="camel"):
    """The reply to ApplyEvents: counts only (the full view sorts sessions and devices)."""

    user_id: str
    event_count: int
    sessions: int
    devices: int
    last_activity: int | None


class UserActor(ProjectionActor[UserState, UserView]):
    state_type = UserState

    def initial_state(self) -> UserState:
        return UserState(user_id=self.ident)

    async def load_events(self, after_seq: int) -> list[Event]:
        return await self.store.user_events(self.project, self.ident, after_seq)

    def apply(self, events: list[Event]) -> None:
        state = self.state
        sessions = state.sessions
        for event in events:
            info = extract(event)
            ts = event.timestamp
            order = (ts, event.seq)
            state.event_count += 1
            if state.first_seen is None or ts < state.first_seen:
                state.first_seen = ts
            if state.last_activity is None or ts > state.last_activity:
                state.last_activity = ts
            page = info.url if event.name.lower() in PAGE_VIEW_NAMES else None
            session_id = event.session_id
            if session_id:
                session = sessions.get(session_id) or self._session(session_id, ts)
                session.event_count += 1
                if ts < session.first_seen:
                    session.first_seen = ts
                if ts > session.last_seen:
                    session.last_seen = ts
                if info.device_type:
                    session.device_type = info.device_type
                if info.device_id:
                    session.device_id, session.device_explicit = info.device_id, True
                elif not session.device_explicit:
                    session.device_id = session.device_type or UNKNOWN_DEVICE
                if page is not None and order >= session.page_order:
                    session.current_page, session.page_order = page, order
                device_id, device_type = session.device_id, session.device_type
            else:
                device_type = info.device_type
                device_id = info.device_id or device_type or UNKNOWN_DEVICE
            self._touch_device(device_id, device_type, session_id, order, page)

    def _session(self, session_id: str, ts: int) -> SessionEntry:
        sessions = self.state.sessions
        session = sessions.get(session_id)
        if session is None:
            session = sessions[session_id] = SessionEntry(session_id=session_id, first_seen=ts, last_seen=ts)
            if len(sessions) > SESSIONS_KEPT:
                oldest = min(sessions.values(), key=lambda s: (s.last_seen, s.first_seen))
                del sessions[oldest.session_id]
                self.state.sessions_dropped += 1
        return session

    def _touch_device(
        self, device_id: str, device_type: str | None, session_id: str | None, order: tuple[int, int],
        page: str | None,
    ) -> None:  # fmt: skip
        devices = self.state.devices
        device = devices.get(device_id)
        if device is None:
            device = devices[device_id] = DeviceEntry(device_id=device_id, last_activity=order[0])
            if len(devices) > DEVICES_KEPT:
                oldest = min(devices.values(), key=lambda d: d.last_activity)
                del devices[oldest.device_id]
        if device_type:
            device.device_type = device_type
        device.last_activity = max(device.last_activity, order[0])
        if session_id and order >= device.last_order:
            device.last_session_id, device.last_order = session_id, order
        if page is not None and order >= device.page_order:
            device.current_page, device.page_order = page, order

    def summary(self) -> UserSummary:
        state = self.state
        return UserSummary(
            user_id=state.user_id,
            event_count=state.event_count,
            sessions=len(state.sessions),
            devices=len(state.devices),
            last_activity=state.last_activity,
        )

    def view(self) -> UserView:
        state = self.state
        sessions = sorted(state.sessions.values(), key=lambda s: (s.last_seen, s.first_seen), reverse=True)
        devices = sorted(state.devices.values(), key=lambda d: d.last_activity, reverse=True)
        return UserView(
            user_id=state.user_id,
            sessions=[
                UserSession(
                    session_id=s.session_id,
                    device_type=s.device_type,
                    device_id=s.device_id,
                    first_seen=s.first_seen,
                    last_seen=s.last_seen,
                    event_count=s.event_count,
                    current_page=s.current_page,
                )
                for s in sessions
            ],
            devices=[
                UserDevice(
                    device_id=d.device_id,
                    device_type=d.device_type,
                    last_activity=d.last_activity,
                    last_session_id=d.last_session_id,
                    current_page=d.current_page,
                )
                for d in devices
            ],
            event_count=state.event_count,
            first_seen=state.first_seen,
            last_activity=state.last_activity,
        )


def user_factory(key: ActorKey, store: ActorStore) -> UserActor:
    """The ActorSystem factory for kind "user"."""
    return UserActor(key, store)
