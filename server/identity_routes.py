"""The cross-device identity routes (seed 000 "Cross-Device Behavioral Continuity API"; issue 14).

Every route needs the project's secret key (or open loopback access): linking decides whose stream
a device's activity reaches, so a public write key (a browser) may not do it. Sessions and users
belong to the key's project: another project's session or user is unknown here (a session named in
a link body: 400 naming the field; a user or link in the path: 404).

POST   /api/v1/behavioral/cross-device/link                 link two sessions (seed body and answer)
DELETE /api/v1/behavioral/cross-device/link/{linkingId}     undo a link
GET    /api/v1/behavioral/cross-device/sync/{userId}        every device of the user, live (seed answer)

The continuity figures are defined in actors/identity/continuity.py, the merge guards in
actors/identity/graph.py; the links are rows of the store (storage/identity_records.py) and every
node follows them within a second (actors/identity/directory.py), so a stream subscriber on a
userId hears the user's linked anonymous sessions, and stops hearing them when the link is undone.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

import msgspec
import trio
from quart import Response
from quart_trio import QuartTrio

from actors.identity.continuity import EVENT_SAMPLE, facts_of, link_figures
from actors.identity.directory import IdentityDirectory
from actors.identity.graph import Side, check_link
from actors.payload import UNKNOWN_DEVICE
from actors.runtime import ActorError
from protocol.errors import InvalidInput
from protocol.normalize import iso_ms
from server.context import Pulse
from server.json_body import json_object
from storage.base import EventFilter
from storage.identity_records import IdentityLink

BASE: Final = "/api/v1/behavioral/cross-device"
MAX_BODY: Final = 16 * 1024
MAX_ID: Final = 200  # session and user ids (protocol/tracking.py MAX_NAME)
MAX_METHOD: Final = 100
MAX_EVIDENCE: Final = 20
MAX_EVIDENCE_TEXT: Final = 100
LINK_KEYS: Final = frozenset({"primarySessionId", "secondarySessionId", "linkingMethod", "confidence", "evidence"})
DEFAULT_METHOD: Final = "unspecified"
LIVE_TIMEOUT_S: Final = 5.0
WRITE_ATTEMPTS: Final = 3  # a link re-checks its guards when another change got in first (compare and set)

Json = Callable[..., Response]
_json = msgspec.json.Encoder()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class LinkRequest(msgspec.Struct, frozen=True, kw_only=True):
    primary: str
    secondary: str
    method: str
    confidence: float | None
    evidence: list[str]


def _ident(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if value is None:
        raise InvalidInput(f"$.{key}", "required field is missing")
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_ID or "\x00" in value:
        raise InvalidInput(f"$.{key}", f"must be a session id: a string of 1 to {MAX_ID} characters without NUL")
    return value


def parse_link(body: dict[str, Any]) -> LinkRequest:
    """The seed's link body; a 400 names the first field that is wrong."""
    for key in body:
        if key not in LINK_KEYS:
            raise InvalidInput(f"$.{key}", f"unknown field; the fields are {', '.join(sorted(LINK_KEYS))}")
    primary, secondary = _ident(body, "primarySessionId"), _ident(body, "secondarySessionId")
    if primary == secondary:
        raise InvalidInput("$.secondarySessionId", "must differ from primarySessionId: a session is not linked to itself")
    method = body.get("linkingMethod")
    if method is None:
        method = DEFAULT_METHOD
    elif not isinstance(method, str) or not 1 <= len(method) <= MAX_METHOD or "\x00" in method:
        raise InvalidInput("$.linkingMethod", f"must be a string of 1 to {MAX_METHOD} characters")
    confidence = body.get("confidence")
    if confidence is not None:
        if isinstance(confidence, bool) or not isinstance(confidence, int | float) or not 0 <= confidence <= 1:
            raise InvalidInput("$.confidence", f"must be a number from 0 to 1, got {confidence!r}")
        confidence = float(confidence)
    evidence = body.get("evidence")
    if evidence is None:
        evidence = []
    elif not isinstance(evidence, list) or len(evidence) > MAX_EVIDENCE:
        raise InvalidInput("$.evidence", f"must be a list of at most {MAX_EVIDENCE} strings")
    for i, item in enumerate(evidence):
        if not isinstance(item, str) or not 1 <= len(item) <= MAX_EVIDENCE_TEXT or "\x00" in item:
            raise InvalidInput(f"$.evidence[{i}]", f"must be a string of 1 to {MAX_EVIDENCE_TEXT} characters")
    return LinkRequest(primary=primary, secondary=secondary, method=method, confidence=confidence, evidence=evidence)


def _own_device(session: Any) -> str:
    """A user's session's device id (actors/user.py UserSession): the client's deviceId, else the
    session id (the user actor stands the device type in for a missing id; that is not a device)."""
    if session.device_id != (session.device_type or UNKNOWN_DEVICE):
        return str(session.device_id)
    return str(session.session_id)


def register(app: QuartTrio, pulse: Pulse, access: Callable[[], Awaitable[Any]], json_response: Json) -> None:
    def directory() -> IdentityDirectory:
        assert pulse.identity is not None, "the identity directory starts with the server"
        return pulse.identity

    def failure(status: int, code: str, reason: str, field: str | None = None, **extra: Any) -> Response:
        error: dict[str, Any] = {"code": code, "reason": reason}
        if field is not None:
            error["field"] = field
        return json_response({"success": False, "error": error, **extra}, status,
                             headers={"Retry-After": "1"} if status == 503 else None)

    async def views(keys: list[tuple[str, str, str]]) -> list[Any]:
        """The live views of ``keys``, asked together; an actor that cannot answer gives its
        ActorError in its place."""
        found: list[Any] = [None] * len(keys)

        async def ask(i: int) -> None:
            try:
                found[i] = await pulse.router.view(keys[i], timeout=LIVE_TIMEOUT_S)
            except ActorError as exc:
                found[i] = exc

        async with trio.open_nursery() as nursery:
            for i in range(len(keys)):
                nursery.start_soon(ask, i)
        return found

    async def newest_events(project: str, session_id: str) -> list[Any]:
        flt = EventFilter(project=project, session_id=session_id)
        return await pulse.store.query_events_descending(flt, limit=EVENT_SAMPLE, before=None)

    def link_answer(link: IdentityLink, figures: dict[str, Any], user: str | None, created: bool) -> Response:
        body = {"linkingId": link.linking_id, "linked": True, **figures, "userId": user, "created": created,
                "linkingMethod": link.method, "linkedAt": iso_ms(link.created_ms)}
        return json_response(body, 201 if created else 200)

    @app.post(f"{BASE}/link")
    async def link_sessions() -> Response:
        granted = await access()
        project = granted.project.id
        wanted = parse_link(await json_object(MAX_BODY))
        found = await views([("session", project, wanted.primary), ("session", project, wanted.secondary)])
        for field, view in zip(("primarySessionId", "secondarySessionId"), found, strict=True):
            if isinstance(view, ActorError):
                return failure(503, "live_state_unavailable", str(view))
            if not view.event_count:
                session = wanted.primary if field == "primarySessionId" else wanted.secondary
                # input naming a session this project does not have (another project's are never
                # linked, nor told apart from unknown ones): a 400 naming the field, as the issue asks
                return failure(400, "unknown_session", f"no events for session {session!r} in this project",
                               f"$.{field}")
        primary = facts_of(found[0], await newest_events(project, wanted.primary))
        secondary = facts_of(found[1], await newest_events(project, wanted.secondary))
        figures = link_figures(primary, secondary)
        identity = directory()
        for _ in range(WRITE_ATTEMPTS):
            graph = await identity.refresh(project)
            existing = graph.link_between(wanted.primary, wanted.secondary)
            if existing is not None:  # the same link again: the one stored, not a second row
                return link_answer(existing, figures, graph.user_of(wanted.primary), created=False)
            refusal = check_link(
                graph,
                Side(session_id=primary.session_id, user_id=primary.user_id, device_id=primary.device_id),
                Side(session_id=secondary.session_id, user_id=secondary.user_id, device_id=secondary.device_id),
            )
            if refusal is not None:
                return failure(refusal.status, refusal.code, refusal.reason, refusal.field, linked=False)
            link = IdentityLink(
                project=project, linking_id="link_" + secrets.token_hex(8), primary_session=wanted.primary,
                secondary_session=wanted.secondary, primary_user=primary.user_id, secondary_user=secondary.user_id,
                primary_device=primary.device_id, secondary_device=secondary.device_id, method=wanted.method,
                confidence=wanted.confidence, evidence=_json.encode(wanted.evidence).decode(), created_ms=now_ms(),
            )  # fmt: skip
            write = await pulse.store.add_identity_link(link, graph.version)
            if write.existing is not None:
                graph = await identity.refresh(project)
                return link_answer(write.existing, figures, graph.user_of(wanted.primary), created=False)
            if write.written:
                graph = await identity.refresh(project)  # this node's streams follow the link at once
                return link_answer(link, figures, graph.user_of(wanted.primary), created=True)
        return failure(503, "identity_busy", "the project's links changed during each of "
                       f"{WRITE_ATTEMPTS} attempts to check this link; retry")

    @app.delete(f"{BASE}/link/<linking_id>")
    async def unlink_sessions(linking_id: str) -> Response:
        granted = await access()
        project = granted.project.id
        missing = failure(404, "not_found", f"no link {linking_id!r} in this project")
        if len(linking_id) > MAX_ID or "\x00" in linking_id:
            return missing
        identity = directory()
        before = await identity.refresh(project)
        removed = await pulse.store.remove_identity_link(project, linking_id)
        if removed is None:
            return missing
        after = await identity.refresh(project)  # this node's streams stop following it at once
        component = before.component(removed.primary_session)
        user = component.user if component is not None else None
        # the sessions that belonged to the user only through links, and no longer do
        identified = {s for link in (component.links if component else ())
                      for s, u in ((link.primary_session, link.primary_user), (link.secondary_session, link.secondary_user))
                      if u is not None}
        detached = sorted(s for s in (component.sessions if component else ())
                          if user is not None and s not in identified and after.user_of(s) != user)
        return json_response({
            "linkingId": removed.linking_id,
            "unlinked": True,
            "primarySessionId": removed.primary_session,
            "secondarySessionId": removed.secondary_session,
            "linkingMethod": removed.method,
            "linkedAt": iso_ms(removed.created_ms),
            "userId": user,
            "detachedSessions": detached,
        })

    @app.get(f"{BASE}/sync/<user_id>")
    async def sync_user(user_id: str) -> Response:
        granted = await access()
        project = granted.project.id
        missing = failure(404, "not_found", f"no events and no linked sessions for user {user_id!r} in this project")
        if len(user_id) > MAX_ID or "\x00" in user_id:
            return missing
        graph = await directory().refresh(project)
        (user,) = await views([("user", project, user_id)])
        if isinstance(user, ActorError):
            return failure(503, "live_state_unavailable", str(user))
        own = {s.session_id: s for s in user.sessions} if user.event_count else {}
        linked: dict[str, str] = {}  # linked session -> its recorded device id
        for component in graph.components_of(user_id, set(own)):
            for link in component.links:
                for session, device in ((link.primary_session, link.primary_device),
                                        (link.secondary_session, link.secondary_device)):
                    if session not in own:
                        linked[session] = device
        if not own and not linked:
            return missing
        order = [*own, *linked]
        found = await views([("session", project, s) for s in order])
        return json_response(sync_answer(user_id, own, linked, dict(zip(order, found, strict=True))))


def sync_answer(user_id: str, own: dict[str, Any], linked: dict[str, str], found: dict[str, Any]) -> dict[str, Any]:
    """The seed's sync answer from the user's sessions (``own``: its events carry the userId, from
    the user actor), its linked sessions (-> device id) and each session's live view (or the
    ActorError that kept it from answering)."""
    entries: list[dict[str, Any]] = []
    conflicts: list[dict[str, Any]] = []
    for session_id, view in found.items():
        live = not isinstance(view, ActorError) and bool(view.event_count)
        mine = own.get(session_id)
        if live:
            last_activity, page, device_type = view.last_activity, view.current_page, view.device_type
        elif mine is not None:  # one of the user's own sessions: what the user actor knows of it
            last_activity, page, device_type = mine.last_seen, mine.current_page, None
        else:
            continue  # a linked session that cannot be read now has nothing to show: counted below
        if mine is not None:
            device_type = device_type or mine.device_type
        ins = view.insights if live else None
        if live and view.user_id and view.user_id != user_id:
            conflicts.append({"type": "session_carries_other_user", "sessionId": session_id, "userId": view.user_id,
                              "linked": mine is None,
                              "reason": f"the session's events now carry user {view.user_id!r}"})
        entries.append({
            "sessionId": session_id,
            "deviceId": _own_device(mine) if mine is not None else linked[session_id],
            "deviceType": device_type,
            "lastActivity": last_activity,
            "page": page,
            "engagement": ins.engagement.score if ins is not None else None,
            "intent": ins.intent.purchase_intent if ins is not None else None,
            "live": live,
            "linked": mine is None,
        })
    unread = len(found) - sum(1 for e in entries if e["live"])
    by_device: dict[str, list[dict[str, Any]]] = {}
    for entry in entries:
        by_device.setdefault(entry["deviceId"], []).append(entry)
    devices = []
    for device_id, group in by_device.items():
        group.sort(key=lambda e: e["lastActivity"] or 0, reverse=True)
        newest = group[0]
        devices.append({
            "deviceId": device_id,
            "deviceType": newest["deviceType"] or UNKNOWN_DEVICE,
            "lastActivity": iso_ms(newest["lastActivity"]) if newest["lastActivity"] is not None else None,
            "currentState": {"page": newest["page"], "engagement": newest["engagement"], "intent": newest["intent"]},
            "sessions": [e["sessionId"] for e in group],
            "linked": all(e["linked"] for e in group),
            "live": newest["live"],
            "_at": newest["lastActivity"] or 0,
        })
    devices.sort(key=lambda d: d["_at"], reverse=True)
    newest_at = max((d.pop("_at") for d in devices), default=0)
    status = "current" if not unread else ("stale" if unread == len(found) else "partial")
    return {
        "userId": user_id,
        "devices": devices,
        "synchronization": {
            "lastSync": iso_ms(newest_at) if newest_at else None,
            "syncStatus": status,
            "conflicts": conflicts,
            "sessionsRead": len(found) - unread,
            "sessionsUnavailable": unread,
        },
    }
