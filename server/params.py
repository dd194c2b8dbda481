"""Query-string parsing for the read routes: every bad value is a 400 naming the parameter."""

from __future__ import annotations

import base64
import re
import time
from typing import Final

import msgspec

from protocol.errors import InvalidInput
from protocol.normalize import parse_time
from storage.base import Cursor

_RELATIVE: Final = re.compile(r"^(\d+)\s*(ms|s|m|h|d|w)$")
_PLAIN_NUMBER: Final = re.compile(r"^\d+(\.\d*)?$")  # unix ms (or seconds), as /openapi.json says
_UNIT_MS: Final = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
# An ISO 8601 time whose "+hh:mm" offset was pasted into a URL unencoded: form decoding turned the
# "+" into a space ("2025-08-27T00:00:00 00:00"). A space cannot mean anything else there.
_SPACED_OFFSET: Final = re.compile(r"^(\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?) (\d{2}(?::?\d{2})?)$")


def time_param(query: dict[str, str], name: str) -> int | None:
    """ISO 8601, unix ms, or a relative duration back from now ("24h", "7d": seed 004's examples)."""
    value = query.get(name)
    if value is None or value == "":
        return None
    relative = _RELATIVE.match(value.strip().lower())
    if relative:
        # a duration reaching before 1970 means "from the start" (and an unbounded one would overflow
        # the store's 64-bit integers: a 500)
        return max(0, time.time_ns() // 1_000_000 - int(relative.group(1)) * _UNIT_MS[relative.group(2)])
    spaced = _SPACED_OFFSET.match(value.strip())
    if spaced:
        value = f"{spaced.group(1)}+{spaced.group(2)}"
    if _float_spelling(value.strip()):  # "1e5", "1_000", ".5", "nan": not what the document allows
        raise InvalidInput(name, f"expected ISO 8601, unix ms (digits) or a duration like 24h, got {value[:50]!r}")
    try:
        return parse_time(value, name)
    except InvalidInput as err:
        raise InvalidInput(name, err.reason) from None


def _float_spelling(text: str) -> bool:
    """A number only Python's float() reads: exponents, underscores, signs, nan, a bare fraction."""
    try:
        float(text)
    except ValueError:
        return False
    return _PLAIN_NUMBER.match(text) is None


def int_param(query: dict[str, str], name: str, default: int, *, low: int, high: int, clamp: bool = False) -> int:
    value = query.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise InvalidInput(name, f"expected an integer, got {value!r}") from None
    if clamp:
        return max(low, min(high, number))
    if not low <= number <= high:
        raise InvalidInput(name, f"must be between {low} and {high}, got {number}")
    return number


def text_param(query: dict[str, str], name: str) -> str | None:
    value = query.get(name)
    if value is None or value == "":
        return None
    if len(value) > 200:
        raise InvalidInput(name, "must be at most 200 characters")
    return value


def flag_param(query: dict[str, str], name: str) -> bool:
    """An on/off switch: ``1``/``true`` on, ``0``/``false`` (or absent) off, anything else a 400."""
    value = query.get(name)
    if value is None:
        return False
    lowered = value.lower()
    if lowered in ("1", "true"):
        return True
    if lowered in ("0", "false"):
        return False
    raise InvalidInput(name, f"expected 1 or true (0 or false: off), got {value[:50]!r}")


def encode_cursor(cursor: Cursor) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(cursor)).decode().rstrip("=")


def decode_cursor(value: str | None) -> Cursor | None:
    if not value:
        return None
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        return msgspec.json.decode(raw, type=Cursor)
    except (ValueError, msgspec.DecodeError):
        raise InvalidInput("cursor", f"not a cursor returned by this server: {value!r}") from None
