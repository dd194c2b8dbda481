"""The consent routes (seed 000 "Consent management"; docs/privacy.md).

POST /api/v1/behavioral/consent            record a user's consent (seed body); any key of the project:
                                           a consent banner runs in the browser with the public key
GET  /api/v1/behavioral/consent/{userId}   the user's effective consent and its audit trail, newest
                                           first (?limit=, default 50); the project's secret key

Every change is appended to the audit trail (storage/consent_records.py) and applied by the
ConsentBook (actors/privacy/consent.py): at once on this node, within a second on the others. The
effective consent of a change:

- ``granted`` without ``granularConsent``: every category granted; with it: the categories it sets
  true (a category it leaves out is not granted: consent is given explicitly, never assumed);
- ``denied`` or ``withdrawn``: no category granted, whatever ``granularConsent`` says.

A user of another project is not seen: each project has its own users, so another project's
``user_456`` answers with this project's (empty) view.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Final

import msgspec
from quart import Response, request
from quart_trio import QuartTrio

from actors.privacy.consent import ConsentBook, new_consent_id
from protocol.errors import InvalidInput
from protocol.normalize import iso_ms
from protocol.privacy import CATEGORIES
from server.context import Pulse
from server.json_body import decode_object
from server.params import int_param
from storage.consent_records import (
    ALL_GRANTED,
    CATEGORY_BITS,
    GRANTED,
    NONE_GRANTED,
    STATUSES,
    ConsentRow,
    categories,
)

BASE: Final = "/api/v1/behavioral/consent"
MAX_BODY: Final = 16 * 1024
MAX_ID: Final = 200
MAX_TEXT: Final = 200
KEYS: Final = ("userId", "consentType", "consentStatus", "consentDate", "consentSource", "granularConsent")
DEFAULT_TRAIL: Final = 50
MAX_TRAIL: Final = 500
MAX_DATE_MS: Final = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z

Json = Callable[..., Response]


class ConsentAnswer(msgspec.Struct, kw_only=True):
    """The answer to a recorded consent (201)."""

    consentId: str
    userId: str
    consentStatus: str
    granularConsent: dict[str, bool]  # the effective consent, every category
    consentDate: str
    recordedAt: str


class ConsentChangeView(msgspec.Struct, kw_only=True):
    """One change of the audit trail."""

    consentId: str
    consentStatus: str
    granularConsent: dict[str, bool]
    consentType: str | None
    consentSource: str | None
    consentDate: str
    recordedAt: str


class ConsentView(msgspec.Struct, kw_only=True):
    """A user's effective consent: its newest record's, or the project default's without one."""

    userId: str
    source: str  # "record" | "project_default"
    consentStatus: str
    granularConsent: dict[str, bool]
    consentId: str | None
    consentType: str | None
    consentSource: str | None
    consentDate: str | None
    recordedAt: str | None
    auditTrail: list[ConsentChangeView]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _text(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT or "\x00" in value:
        raise InvalidInput(f"$.{key}", f"must be a non-empty string of at most {MAX_TEXT} characters")
    return value


def _date(value: Any) -> int:
    """Unix ms of an ISO 8601 ``consentDate`` (UTC when it names no offset)."""
    if not isinstance(value, str) or len(value) > 64:
        raise InvalidInput("$.consentDate", f"must be an ISO 8601 date-time string, not {value!r}")
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise InvalidInput("$.consentDate", f"not an ISO 8601 date-time: {value!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    ms = int(parsed.timestamp() * 1000)
    if not 0 <= ms <= MAX_DATE_MS:
        raise InvalidInput("$.consentDate", f"out of range (1970 to 9999): {value!r}")
    return ms


def _granular(value: Any) -> int:
    """The mask of the categories a ``granularConsent`` object sets true."""
    if not isinstance(value, dict):
        raise InvalidInput("$.granularConsent", f"must be an object of {list(CATEGORIES)!r} to booleans")
    mask = NONE_GRANTED
    for name, granted in value.items():
        bit = CATEGORY_BITS.get(name)
        if bit is None:
            raise InvalidInput(f"$.granularConsent.{name}", f"unknown consent category; known: {list(CATEGORIES)!r}")
        if not isinstance(granted, bool):
            raise InvalidInput(f"$.granularConsent.{name}", f"must be true or false, not {granted!r}")
        if granted:
            mask |= bit
    return mask


def parse_consent(project: str, raw: bytes | str, received_ms: int) -> ConsentRow:
    """A consent change from a POST body (InvalidInput naming the field when it is not valid)."""
    body = decode_object(raw, MAX_BODY)
    for key in body:
        if key not in KEYS:
            raise InvalidInput(f"$.{key}", f"unknown field; known: {list(KEYS)!r}")
    user_id = body.get("userId")
    if not isinstance(user_id, str) or not user_id or len(user_id) > MAX_ID or "\x00" in user_id:
        raise InvalidInput("$.userId", f"is required: a non-empty string of at most {MAX_ID} characters")
    status = body.get("consentStatus")
    if status not in STATUSES:
        raise InvalidInput("$.consentStatus", f"must be one of {list(STATUSES)!r}, not {status!r}")
    granular = body.get("granularConsent")
    mask = _granular(granular) if granular is not None else ALL_GRANTED
    if status != GRANTED:
        mask = NONE_GRANTED  # a denial or withdrawal takes everything back
    date = body.get("consentDate")
    return ConsentRow(
        project=project, user_id=user_id, consent_id=new_consent_id(), status=status, granted=mask,
        consent_type=_text(body, "consentType"), consent_source=_text(body, "consentSource"),
        consent_date=received_ms if date is None else _date(date), recorded_ms=received_ms,
    )  # fmt: skip


def _change(row: ConsentRow) -> ConsentChangeView:
    return ConsentChangeView(
        consentId=row.consent_id, consentStatus=row.status, granularConsent=categories(row.granted),
        consentType=row.consent_type, consentSource=row.consent_source, consentDate=iso_ms(row.consent_date),
        recordedAt=iso_ms(row.recorded_ms),
    )  # fmt: skip


def consent_view(user_id: str, trail: list[ConsentRow], default_status: str) -> ConsentView:
    """The GET answer from the user's trail (newest first) and the project's consent default."""
    changes = [_change(row) for row in trail]
    if not trail:
        mask = ALL_GRANTED if default_status == GRANTED else NONE_GRANTED
        return ConsentView(
            userId=user_id, source="project_default", consentStatus=default_status, granularConsent=categories(mask),
            consentId=None, consentType=None, consentSource=None, consentDate=None, recordedAt=None, auditTrail=[],
        )  # fmt: skip
    newest = changes[0]
    return ConsentView(
        userId=user_id, source="record", consentStatus=newest.consentStatus, granularConsent=newest.granularConsent,
        consentId=newest.consentId, consentType=newest.consentType, consentSource=newest.consentSource,
        consentDate=newest.consentDate, recordedAt=newest.recordedAt, auditTrail=changes,
    )  # fmt: skip


def register(app: QuartTrio, pulse: Pulse, access: Callable[..., Awaitable[Any]], json_response: Json) -> None:
    def book() -> ConsentBook:
        if pulse.consent is None:  # started in server/main.py before any route is served
            raise RuntimeError("the consent book is not running")
        return pulse.consent

    @app.post(BASE)
    async def record_consent() -> Response:
        granted = await access(read=False)  # a consent banner holds only the public key
        row = parse_consent(granted.project.id, await request.get_data(), now_ms())
        stored = await book().record(row)
        answer = ConsentAnswer(
            consentId=stored.consent_id, userId=stored.user_id, consentStatus=stored.status,
            granularConsent=categories(stored.granted), consentDate=iso_ms(stored.consent_date),
            recordedAt=iso_ms(stored.recorded_ms),
        )  # fmt: skip
        return json_response(answer, 201)

    @app.get(BASE + "/<path:user_id>")
    async def get_consent(user_id: str) -> Response:
        granted = await access()
        if not user_id or len(user_id) > MAX_ID or "\x00" in user_id:
            raise InvalidInput("userId", f"must be 1 to {MAX_ID} characters, without NUL")
        query = {k: v for k, v in request.args.items()}
        limit = int_param(query, "limit", DEFAULT_TRAIL, low=1, high=MAX_TRAIL)
        project = granted.project.id
        trail = await pulse.store.consent_trail(project, user_id, limit)
        return json_response(consent_view(user_id, trail, pulse.policies.get(project).consent_default))
