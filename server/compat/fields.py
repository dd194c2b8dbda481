"""Typed reads of the loosely shaped JSON objects the Segment and PostHog SDKs send.

Their messages are decoded as plain JSON (dicts, lists, scalars) because they carry free-form
properties, traits and context; these helpers take the few fields Pulse indexes, check their type
and size, and raise ``InvalidInput`` naming the client's own field path (``$.batch[2].event``).
"""

from __future__ import annotations

from typing import Any

import msgspec

from protocol.errors import InvalidInput, from_msgspec
from protocol.normalize import parse_time
from protocol.tracking import MAX_NAME, MAX_TEXT

JSONObject = dict[str, Any]


def decode_json(data: bytes | str, root: str = "$") -> Any:
    """A whole JSON document as plain Python values; 400 naming ``root`` when it is not JSON."""
    try:
        return msgspec.json.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise from_msgspec(exc, root=root) from None
    except RecursionError:
        raise InvalidInput(root, "json is nested too deeply", code="malformed_json") from None


def as_object(value: Any, path: str) -> JSONObject:
    if not isinstance(value, dict):
        raise InvalidInput(path, f"must be a json object, not {_kind(value)}")
    return value


def optional_object(container: JSONObject, key: str, path: str) -> JSONObject | None:
    """``container[key]`` when it is an object, None when absent or null; 400 for any other value."""
    value = container.get(key)
    return None if value is None else as_object(value, f"{path}.{key}")


def optional_text(container: JSONObject | None, key: str, path: str, *, limit: int = MAX_NAME) -> str | None:
    """``container[key]`` as a string of at most ``limit`` characters, None when absent, null or empty."""
    if container is None:
        return None
    value = container.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"{path}.{key}", f"must be a string, not {_kind(value)}")
    if len(value) > limit:
        raise InvalidInput(f"{path}.{key}", f"is {len(value)} characters long; the limit is {limit}")
    return value


def optional_id(container: JSONObject | None, key: str, path: str) -> str | None:
    """An identifier that SDKs send as a string or a number (numbers are kept as their JSON text)."""
    if container is None:
        return None
    value = container.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return msgspec.json.encode(value).decode()
    return optional_text(container, key, path)


def optional_long_text(container: JSONObject | None, key: str, path: str) -> str | None:
    """User agents and referrers: strings up to MAX_TEXT characters."""
    return optional_text(container, key, path, limit=MAX_TEXT)


def optional_time(container: JSONObject, key: str, path: str) -> int | None:
    """A time field (ISO 8601 string, or unix ms/seconds number) as unix ms; None when absent."""
    value = container.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise InvalidInput(f"{path}.{key}", f"must be an iso 8601 string or a number, not {_kind(value)}")
    return parse_time(value, f"{path}.{key}")


def required_name(container: JSONObject, key: str, path: str) -> str:
    """An event name: a string of 1 to MAX_NAME characters."""
    name = optional_text(container, key, path)
    if name is None:
        raise InvalidInput(f"{path}.{key}", "required field is missing")
    return name


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"
