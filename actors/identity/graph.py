"""A project's identity graph and the merge guards of a new link. Sans-IO: links in, answers out.

Sessions are the nodes and links the edges. A *component* (sessions joined by links, directly or
through others) is one person; its user is the userId its sessions' events carried when they were
linked. The merge guards keep a component to at most one user, so every session of a component
with a user belongs to that user, including the anonymous ones: that is the session -> user map the
fan-out uses (``linked_users``) so a subscriber on a userId hears the user's anonymous devices.

Nothing is merged destructively: a component is recomputed from the links that remain, so deleting
a link splits it again and an anonymous session that was only joined through that link stops
belonging to the user at once.

Merge guards (``check_link``), each refusal with a code and a reason:
- ``identified_users``: the two sessions' events carry different userIds: two identified users are
  never merged, whatever the client's evidence.
- ``identity_conflict``: the link would put two users into one component (an anonymous device
  already linked to user A, linked now to user B's session, directly or through other links).
- ``too_many_sessions`` / ``too_many_devices``: one component may join at most MAX_LINKED_SESSIONS
  sessions and MAX_LINKED_DEVICES distinct devices (the events' deviceId, else the session id).
  A real person has a handful of devices; a component past these is a linking rule gone wrong
  (a shared kiosk or a test device linked to everyone), which would pour strangers' activity into
  one user's stream.
"""

from __future__ import annotations

from typing import Final

import msgspec

from storage.identity_records import IdentityLink, pair_of

MAX_LINKED_SESSIONS: Final = 50
MAX_LINKED_DEVICES: Final = 10


class Component(msgspec.Struct, kw_only=True):
    sessions: set[str]
    users: set[str]  # the userIds recorded on its links (at most one, by the guards)
    devices: set[str]
    links: list[IdentityLink]

    @property
    def user(self) -> str | None:
        return next(iter(self.users)) if len(self.users) == 1 else None


class Side(msgspec.Struct, frozen=True, kw_only=True):
    """One session of a link being made, as its live state shows it now."""

    session_id: str
    user_id: str | None
    device_id: str


class Refusal(msgspec.Struct, frozen=True, kw_only=True):
    code: str
    field: str  # the request field it is about
    reason: str
    status: int = 409


class IdentityGraph:
    """The components of one project's links (built once per change of the project's links)."""

    __slots__ = ("version", "links", "_by_id", "_by_pair", "_component")

    def __init__(self, version: int, links: list[IdentityLink]) -> None:
        self.version = version
        self.links = links
        self._by_id = {link.linking_id: link for link in links}
        self._by_pair = {link.pair(): link for link in links}
        parent: dict[str, str] = {}

        def root(session: str) -> str:
            parent.setdefault(session, session)
            while parent[session] != session:
                parent[session] = parent[parent[session]]  # path halving
                session = parent[session]
            return session

        for link in links:
            a, b = root(link.primary_session), root(link.secondary_session)
            if a != b:
                parent[a] = b
        components: dict[str, Component] = {}
        for link in links:
            top = root(link.primary_session)
            component = components.get(top)
            if component is None:
                component = components[top] = Component(sessions=set(), users=set(), devices=set(), links=[])
            component.sessions.update((link.primary_session, link.secondary_session))
            component.users.update(u for u in (link.primary_user, link.secondary_user) if u)
            component.devices.update((link.primary_device, link.secondary_device))
            component.links.append(link)
        self._component = {session: components[root(session)] for session in parent}

    def link(self, linking_id: str) -> IdentityLink | None:
        return self._by_id.get(linking_id)

    def link_between(self, a: str, b: str) -> IdentityLink | None:
        return self._by_pair.get(pair_of(a, b))

    def component(self, session_id: str) -> Component | None:
        return self._component.get(session_id)

    def user_of(self, session_id: str) -> str | None:
        component = self._component.get(session_id)
        return None if component is None else component.user

    def linked_users(self) -> dict[str, str]:
        """session -> the user its component belongs to, for every linked session that has one."""
        found = {}
        for session, component in self._component.items():
            user = component.user
            if user is not None:
                found[session] = user
        return found

    def components_of(self, user_id: str, sessions: set[str]) -> list[Component]:
        """The components that belong to ``user_id`` or contain one of ``sessions`` (the user's own)."""
        found: dict[int, Component] = {}
        for component in self._component.values():
            if user_id in component.users or component.sessions & sessions:
                found[id(component)] = component
        return list(found.values())


def check_link(graph: IdentityGraph, primary: Side, secondary: Side) -> Refusal | None:
    """Why the link must not be made, or None when it may (an existing link is the caller's: a
    repeated link answers the existing one and checks nothing)."""
    a, b = primary.session_id, secondary.session_id
    if primary.user_id and secondary.user_id and primary.user_id != secondary.user_id:
        return Refusal(code="identified_users", field="$.secondarySessionId", reason=(
            f"session {a!r} belongs to user {primary.user_id!r} and session {b!r} to user {secondary.user_id!r}: "
            "two identified users are never merged"))
    comp_a, comp_b = graph.component(a), graph.component(b)
    owners: dict[str, str] = {}  # user -> the session that brings it into the merged component
    for side, component in ((primary, comp_a), (secondary, comp_b)):
        if side.user_id:
            owners.setdefault(side.user_id, side.session_id)
        for user in sorted(component.users) if component else ():
            owners.setdefault(user, side.session_id)
    if len(owners) > 1:
        (first, by_first), (second, by_second) = list(owners.items())[:2]  # the primary's side first
        field = "$.secondarySessionId" if by_second == b and by_first != b else "$.primarySessionId"
        return Refusal(code="identity_conflict", field=field, reason=(
            f"session {by_first!r} belongs (by its events or its links) to user {first!r} and session "
            f"{by_second!r} to user {second!r}: an anonymous device is never merged into two users; unlink "
            "one first"))
    sessions = {a, b}
    devices = {primary.device_id, secondary.device_id}
    for component in (comp_a, comp_b):
        if component is not None:
            sessions |= component.sessions
            devices |= component.devices
    if len(sessions) > MAX_LINKED_SESSIONS:
        return Refusal(code="too_many_sessions", field="$.secondarySessionId", reason=(
            f"the link would join {len(sessions)} sessions into one identity; at most {MAX_LINKED_SESSIONS} are "
            "linked per user"))
    if len(devices) > MAX_LINKED_DEVICES:
        return Refusal(code="too_many_devices", field="$.secondarySessionId", reason=(
            f"the link would join {len(devices)} devices into one identity; at most {MAX_LINKED_DEVICES} are "
            "linked per user"))
    return None
