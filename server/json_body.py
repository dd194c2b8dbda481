"""The JSON body of a Quart route's request (the automation and admin routes), refused with a 4xx
that names the reason: too large (413), missing, malformed, or not the object the route needs."""

from __future__ import annotations

from typing import Any

import msgspec
from quart import request

from protocol.errors import InvalidInput, TooLarge


async def json_body(max_bytes: int, *, allow_empty: bool = False, require_object: bool = False) -> Any:
    """The decoded body; ``{}`` for an empty one when ``allow_empty``."""
    raw = await request.get_data()
    if len(raw) > max_bytes:
        raise TooLarge("$", f"the body is larger than {max_bytes} bytes")
    if not raw.strip():
        if allow_empty:
            return {}
        raise InvalidInput("$", "a JSON object is required")
    try:
        body = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise InvalidInput("$", f"malformed json: {exc}") from None
    if require_object and not isinstance(body, dict):
        raise InvalidInput("$", "must be a JSON object")
    return body
