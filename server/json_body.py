"""The JSON object body of a Quart route: one size cap and one set of 4xx answers for every route
that takes one (triggers, workflows, approvals, integrations, identity, consent, policies)."""

from __future__ import annotations

from typing import Any

import msgspec
from quart import request

from protocol.errors import InvalidInput, TooLarge


def decode_object(raw: bytes | str, max_bytes: int, *, allow_empty: bool = False) -> dict[str, Any]:
    """``raw`` as a JSON object: 413 past ``max_bytes``, 400 when empty (unless ``allow_empty``:
    then ``{}``), malformed, or not an object."""
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
    if not isinstance(body, dict):
        raise InvalidInput("$", "must be a JSON object")
    return body


async def json_object(max_bytes: int, *, allow_empty: bool = False) -> dict[str, Any]:
    """The current request's body as a JSON object (``decode_object``)."""
    return decode_object(await request.get_data(), max_bytes, allow_empty=allow_empty)
