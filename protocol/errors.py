"""Validation failures of client input, converted from msgspec's errors into (field path, reason).

Every 4xx body Pulse sends names the offending field as a JSON path (``$.events[3].payload.statusCode``)
and says why in lowercase words, so a client developer can fix the request without reading our code.
"""

from __future__ import annotations

import re
from typing import Final

import msgspec

_AT_PATH: Final = re.compile(r"^(?P<reason>.*?)(?: - at `(?P<path>[^`]*)`)?$", re.S)
_MISSING: Final = re.compile(r"^Object missing required field `(?P<field>[^`]+)`$")


class InvalidInput(Exception):
    """Client input that cannot be accepted: carries the HTTP status, the field path and the reason."""

    def __init__(self, field: str, reason: str, *, status: int = 400, code: str = "invalid_request") -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
        self.status = status
        self.code = code

    def under(self, prefix: str) -> InvalidInput:
        """The same failure with its path re-rooted under ``prefix`` (e.g. ``$.events[3]``)."""
        field = prefix + self.field[1:] if self.field.startswith("$") else f"{prefix}.{self.field}"
        return InvalidInput(field, self.reason, status=self.status, code=self.code)


class TooLarge(InvalidInput):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(field, reason, status=413, code="payload_too_large")


def from_msgspec(exc: Exception, *, root: str = "$") -> InvalidInput:
    """Turn a msgspec DecodeError/ValidationError (or a UTF-8 error) into an InvalidInput."""
    if isinstance(exc, UnicodeDecodeError):
        return InvalidInput(root, "body is not valid utf-8", code="invalid_encoding")
    text = str(exc)
    match = _AT_PATH.match(text)
    reason = match.group("reason") if match else text
    path = (match.group("path") if match else None) or "$"
    missing = _MISSING.match(reason)
    if missing:
        path = f"{path}.{missing.group('field')}"
        reason = "required field is missing"
    elif isinstance(exc, msgspec.ValidationError):
        reason = _lower_first(reason)
    else:
        reason = "malformed json: " + _lower_first(reason.removeprefix("JSON is malformed: "))
        return InvalidInput(root, reason, code="malformed_json")
    if root != "$":
        path = root + path[1:]
    return InvalidInput(path, reason, code="invalid_field")


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:] if text else text


def error_body(err: InvalidInput) -> dict[str, object]:
    """The JSON body of a 4xx answer (both seed APIs use ``success``/``error``)."""
    return {
        "success": False,
        "error": {"code": err.code, "field": err.field, "reason": err.reason},
        "message": f"{err.field}: {err.reason}",
    }
