"""The data deletion routes (seed 000 "Privacy and Compliance APIs"; docs/privacy.md).

DELETE /api/v1/behavioral/data/{userId}                  erase the user's data (server/privacy/deletion.py)
GET    /api/v1/behavioral/data/{userId}                  the user's deletion requests, newest first
GET    /api/v1/behavioral/data/deletions/{deletionId}    one request's status

Every route needs the project's secret key (or open loopback access): the public write key lives
in browsers, and anyone holding it must not erase (or learn about) a project's users. A request
acts on the key's project only: another project's user of the same id is never touched, and is
answered like a user without data (zero counts), which says nothing about other projects.

The options come as query parameters or as a JSON body (``{"anonymizeOnly": true}``), both
booleans; a query parameter wins over the body. Anything but true/false is a 400 naming it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

import msgspec
from quart import Response, request
from quart_trio import QuartTrio

from protocol.errors import InvalidInput, TooLarge, from_msgspec
from server.context import Pulse
from server.privacy.deletion import DeletionCounters, erase, record_view
from storage.deletion_records import FAILED, DeletionOptions

BASE: Final = "/api/v1/behavioral/data"
MAX_BODY: Final = 4 * 1024
MAX_USER_ID: Final = 256  # longer ids cannot have been stored (ingest caps identifiers)
MAX_LISTED: Final = 50
OPTIONS: Final = {"retentionOverride": "retention_override", "anonymizeOnly": "anonymize_only",
                  "cascadeDelete": "cascade_delete"}  # fmt: skip
_BOOLEANS: Final = {"true": True, "false": False}
Json = Callable[..., Response]


class _Body(msgspec.Struct, forbid_unknown_fields=True):
    """Absent means the default; null is refused (a boolean is expected)."""

    retentionOverride: bool | msgspec.UnsetType = msgspec.UNSET  # noqa: N815 (the seed's names)
    anonymizeOnly: bool | msgspec.UnsetType = msgspec.UNSET  # noqa: N815
    cascadeDelete: bool | msgspec.UnsetType = msgspec.UNSET  # noqa: N815


_decode_body = msgspec.json.Decoder(_Body).decode


def parse_options(query: dict[str, str], body: bytes) -> DeletionOptions:
    """The request's options: the seed defaults, then the JSON body, then the query parameters."""
    values: dict[str, bool] = {}
    if body.strip():
        if len(body) > MAX_BODY:
            raise TooLarge("$", f"the body is larger than {MAX_BODY} bytes")
        try:
            parsed = _decode_body(body)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise from_msgspec(exc) from None
        values.update({OPTIONS[k]: v for k in OPTIONS if (v := getattr(parsed, k)) is not msgspec.UNSET})
    for name, attr in OPTIONS.items():
        if name in query:
            value = _BOOLEANS.get(query[name].strip().lower())
            if value is None:
                raise InvalidInput(name, f"must be true or false, not {query[name]!r}")
            values[attr] = value
    return DeletionOptions(**values)


def check_user_id(user_id: str) -> str:
    if not user_id or len(user_id) > MAX_USER_ID or "\x00" in user_id:
        raise InvalidInput("userId", f"must be 1 to {MAX_USER_ID} characters without NUL")
    return user_id


def register(app: QuartTrio, pulse: Pulse, access: Callable[[], Awaitable[Any]], json_response: Json) -> None:
    counters = pulse.deletions if pulse.deletions is not None else DeletionCounters()
    pulse.deletions = counters

    def not_found(reason: str) -> Response:
        return json_response({"success": False, "error": {"code": "not_found", "reason": reason}}, 404)

    @app.delete(f"{BASE}/<user_id>")
    async def delete_user_data(user_id: str) -> Response:
        granted = await access()
        user = check_user_id(user_id)
        raw = await request.get_data()
        body = raw if isinstance(raw, bytes) else raw.encode()
        options = parse_options({k: v for k, v in request.args.items()}, body)
        record = await erase(pulse, granted.project.id, user, options, counters)
        status = 503 if record.status == FAILED else 200
        headers = {"Retry-After": "5"} if status == 503 else None
        return json_response(record_view(record), status, headers=headers)

    @app.get(f"{BASE}/deletions/<deletion_id>")
    async def deletion_status(deletion_id: str) -> Response:
        granted = await access()
        record = None if len(deletion_id) > 100 else await pulse.store.deletion(granted.project.id, deletion_id)
        if record is None:
            return not_found(f"no deletion {deletion_id!r} in this project")
        return json_response(record_view(record))

    @app.get(f"{BASE}/<user_id>")
    async def user_deletions(user_id: str) -> Response:
        granted = await access()
        user = check_user_id(user_id)
        records = await pulse.store.user_deletions(granted.project.id, user, limit=MAX_LISTED)
        if not records:
            return not_found(f"no deletion request for user {user!r} in this project")
        latest = records[0]
        return json_response({**record_view(latest), "requests": [record_view(r) for r in records]})
