"""``POST /api/v1/behavioral/events/privacy-compliant`` (seed 000 "Privacy-Compliant Tracking API"):
the body, its checks, and the anonymizer that decides what of the request is stored. Sans-IO: the
edge hands in the client IP and User-Agent it read; nothing here logs or keeps them.

What is stored for each ``privacySettings.anonymization`` (docs/privacy.md):

- ``none``: the event as sent; ``payload.context`` = {ip, userAgent} exactly as received.
- ``low``: IPv4 truncated to its /24 (last octet 0), IPv6 to its /48; the user agent generalised to
  browser family and major version ("Chrome 120", "Other" when not recognised); identifiers
  (anonymizedSessionId, userId, eventData.userId) replaced by "anon_" + 16 hex of
  HMAC-SHA256(project salt, id); ``url`` and ``referrer`` of eventData without query nor fragment.
- ``high``: no IP at all; browser family only ("Chrome"); identifiers hashed as for low;
  ``url``/``referrer`` reduced to their path.

The stored payload mirrors the request: {eventType, eventData, privacy: {anonymization, retention,
sharing, consentLevel}, context: {ip?, userAgent?}}; the client's own ``context``/``privacy`` keys
in the body are not kept (they could carry what anonymization removes).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import msgspec

from protocol.behavioral import TriggerResult
from protocol.errors import InvalidInput
from protocol.normalize import decode_as, event_time
from protocol.privacy import (
    ANALYTICS,
    CATEGORIES,
    DROP_CONSENT,
    FLAG_ANONYMIZED_HIGH,
    FLAG_ANONYMIZED_LOW,
    FLAG_CONSENT_STATED,
    FLAG_NO_ADVERTISING,
    FLAG_NO_MARKETING,
    FLAG_NO_PERSONALIZATION,
    MARKETING,
    PERSONALIZATION,
    Dropped,
)
from protocol.record import SOURCE_BEHAVIORAL, Event
from protocol.tracking import Ident, Name, Timestamp

ANONYMIZATION_LEVELS: Final = ("none", "low", "high")
DEFAULT_ANONYMIZATION: Final = "high"  # privacy by default (GDPR art. 25) when privacySettings omits it
SHARING: Final = ("none", "internal", "partners", "all")  # "none": never to advertising integrations
DAY_MS: Final = 86_400_000
RETENTION_UNITS: Final = {"day": 1, "week": 7, "month": 30, "year": 365}  # a month is 30 days, a year 365
MAX_RETENTION_DAYS: Final = 36_500  # 100 years
# N_days | N_weeks | N_months | N_years (or the singular), N without leading zeros and at most
# 100 years: 1..36500 days, 1..5214 weeks, 1..1216 months, 1..100 years. One pattern for the
# decoder and the OpenAPI document (server/openapi.py), so both accept exactly the same strings.
RETENTION_PATTERN: Final = (
    r"^(?:(?:[1-9][0-9]{0,3}|[12][0-9]{4}|3[0-5][0-9]{3}|36[0-4][0-9]{2}|36500)_days?"
    r"|(?:[1-9][0-9]{0,2}|[1-4][0-9]{3}|5[01][0-9]{2}|520[0-9]|521[0-4])_weeks?"
    r"|(?:[1-9][0-9]{0,2}|1[01][0-9]{2}|120[0-9]|121[0-6])_months?"
    r"|(?:[1-9][0-9]?|100)_years?)$"
)
_RETENTION: Final = re.compile(RETENTION_PATTERN)

# consentLevel -> the consent categories it grants (None: nothing, the event is dropped)
CONSENT_LEVELS: Final[dict[str, frozenset[str] | None]] = {
    "none": None,
    "essential": None,  # strictly necessary only: no analytics
    "analytics_only": frozenset({ANALYTICS}),
    "personalized": frozenset({ANALYTICS, PERSONALIZATION}),  # analytics + personalization, no marketing/ads
    "full": frozenset(CATEGORIES),
    "all": frozenset(CATEGORIES),
}
_DENIED_FLAGS: Final = ((MARKETING, FLAG_NO_MARKETING), (PERSONALIZATION, FLAG_NO_PERSONALIZATION),
                        ("advertising", FLAG_NO_ADVERTISING))  # fmt: skip
_URL_KEYS: Final = ("url", "referrer", "referer")
_ID_KEYS: Final = ("userId", "user_id")


class PrivacySettings(msgspec.Struct, kw_only=True, omit_defaults=True):
    anonymization: str = DEFAULT_ANONYMIZATION
    retention: str | None = None  # N_days | N_weeks | N_months | N_years; None: the project's retention
    sharing: str = "none"


class PrivacyCompliantEvent(msgspec.Struct, kw_only=True, omit_defaults=True):
    anonymizedSessionId: Ident
    consentLevel: str
    eventType: Name
    eventData: dict[str, Any] | None = None
    privacySettings: PrivacySettings = msgspec.field(default_factory=PrivacySettings)
    userId: Ident | None = None
    timestamp: Timestamp | None = None
    sentAt: Timestamp | None = None
    eventId: Ident | None = None  # the client's id, for dedup of retries (as on /api/v1/behavioral/events)


class Checked(msgspec.Struct, kw_only=True):
    """What the route needs besides the event: the settings as understood, and a consent drop."""

    anonymization: str
    retention: str | None
    retention_days: int | None
    sharing: str
    consent_level: str
    dropped: Dropped | None


def retention_days(value: str, field: str = "$.privacySettings.retention") -> int:
    """Days of ``N_days | N_weeks | N_months | N_years`` (RETENTION_PATTERN)."""
    if _RETENTION.match(value) is None:
        raise InvalidInput(field, "must be N_days, N_weeks, N_months or N_years (e.g. '30_days'), N from 1 "
                                  f"without leading zeros, at most 100 years; not {value!r}")
    count, _, unit = value.partition("_")
    return int(count) * RETENTION_UNITS[unit.strip().removesuffix("s")]  # strip: "$" lets a final "\n" through


def check(body: PrivacyCompliantEvent) -> Checked:
    """The body's settings, each checked (InvalidInput names the field)."""
    settings = body.privacySettings
    if settings.anonymization not in ANONYMIZATION_LEVELS:
        raise InvalidInput("$.privacySettings.anonymization",
                           f"must be one of {list(ANONYMIZATION_LEVELS)!r}, not {settings.anonymization!r}")
    if settings.sharing not in SHARING:
        raise InvalidInput("$.privacySettings.sharing", f"must be one of {list(SHARING)!r}, not {settings.sharing!r}")
    if body.consentLevel not in CONSENT_LEVELS:
        raise InvalidInput("$.consentLevel", f"must be one of {list(CONSENT_LEVELS)!r}, not {body.consentLevel!r}")
    if not body.anonymizedSessionId:
        raise InvalidInput("$.anonymizedSessionId", "must not be empty")
    for name, value in (("anonymizedSessionId", body.anonymizedSessionId), ("userId", body.userId),
                        ("eventType", body.eventType), ("eventId", body.eventId)):  # fmt: skip
        if value is not None and "\x00" in value:
            raise InvalidInput(f"$.{name}", "must not contain the NUL character (\\u0000)")
    days = retention_days(settings.retention) if settings.retention is not None else None
    granted = CONSENT_LEVELS[body.consentLevel]
    dropped = None
    if granted is None:
        dropped = Dropped(reason=DROP_CONSENT, category=ANALYTICS,
                          detail=f"consentLevel {body.consentLevel!r} grants no analytics consent")
    return Checked(anonymization=settings.anonymization, retention=settings.retention, retention_days=days,
                   sharing=settings.sharing, consent_level=body.consentLevel, dropped=dropped)


def consent_flags(consent_level: str, sharing: str) -> int:
    """The Event.flags of a consent level (categories not granted) and of ``sharing: none``."""
    granted = CONSENT_LEVELS.get(consent_level) or frozenset()
    flags = 0
    for category, flag in _DENIED_FLAGS:
        if category not in granted:
            flags |= flag
    if sharing == "none":
        flags |= FLAG_NO_ADVERTISING
    return flags


def decode(body: bytes, *, msgpack: bool = False) -> tuple[PrivacyCompliantEvent, Checked]:
    """The body (JSON or MessagePack) and its checked settings; InvalidInput names the bad field."""
    event = decode_as(PrivacyCompliantEvent, body, msgpack=msgpack)
    return event, check(event)


def event_timestamp(body: PrivacyCompliantEvent, received_at: int) -> tuple[int, int]:
    """(timestamp, flags) as /api/v1/behavioral/events computes them: ``timestamp`` or, as in the
    seed's example, ``eventData.timestamp``; skew-corrected with ``sentAt``, clamped when future."""
    timestamp = body.timestamp
    if timestamp is None and body.eventData is not None:
        inner = body.eventData.get("timestamp")
        if isinstance(inner, int | float | str) and not isinstance(inner, bool):
            timestamp = inner
    return event_time(timestamp, body.sentAt, received_at, "$")


# -- anonymization ------------------------------------------------------------------------------------


def hashed_id(salt: str, value: str) -> str:
    """A stable pseudonym of an identifier within one project (another salt gives another one)."""
    return "anon_" + hmac.new(salt.encode(), value.encode(), hashlib.sha256).hexdigest()[:16]


def truncated_ip(ip: str | None) -> str | None:
    """IPv4 to its /24, IPv6 to its /48 (an IPv4-mapped IPv6 address as IPv4); None if not an IP."""
    if not ip:
        return None
    try:
        address = ipaddress.ip_address(ip.strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False).network_address)


# (family, token whose version follows "/"), the first match wins: the order matters (Edge and
# Opera say "Chrome" too, Chrome says "Safari" too).
_BROWSERS: Final = (
    ("Edge", "Edg/"), ("Edge", "EdgA/"), ("Edge", "EdgiOS/"), ("Edge", "Edge/"),
    ("Opera", "OPR/"), ("Opera", "OPiOS/"), ("Samsung Internet", "SamsungBrowser/"),
    ("Firefox", "FxiOS/"), ("Firefox", "Firefox/"), ("Chrome", "CriOS/"), ("Chrome", "Chrome/"),
    ("Chromium", "Chromium/"),
)  # fmt: skip
_VERSION: Final = re.compile(r"(\d+)")


def browser(user_agent: str | None) -> tuple[str, str | None]:
    """(browser family, major version) of a User-Agent; ("Other", None) when not recognised."""
    ua = user_agent or ""
    for family, token in _BROWSERS:
        at = ua.find(token)
        if at >= 0:
            return family, _major(ua, at + len(token))
    if "Safari/" in ua and "Version/" in ua:
        return "Safari", _major(ua, ua.find("Version/") + len("Version/"))
    if "MSIE " in ua:
        return "Internet Explorer", _major(ua, ua.find("MSIE ") + len("MSIE "))
    if "Trident/" in ua and "rv:" in ua:
        return "Internet Explorer", _major(ua, ua.find("rv:") + len("rv:"))
    return "Other", None


def _major(ua: str, at: int) -> str | None:
    match = _VERSION.match(ua, at)
    return match.group(1) if match else None


def generalised_ua(user_agent: str | None, level: str) -> str | None:
    if level == "none":
        return user_agent
    family, major = browser(user_agent)
    if level == "low" and major is not None and family != "Other":
        return f"{family} {major}"
    return family


def _url(value: Any, level: str) -> Any:
    if not isinstance(value, str) or level == "none":
        return value
    parts = urlsplit(value)
    if level == "high":
        return parts.path or "/"
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def anonymized_data(data: dict[str, Any] | None, level: str, salt: str) -> dict[str, Any]:
    """eventData with its urls cut and its user ids hashed for ``level`` (a copy)."""
    out = dict(data or {})
    if level == "none":
        return out
    for key in _URL_KEYS:
        if key in out:
            out[key] = _url(out[key], level)
    for key in _ID_KEYS:
        value = out.get(key)
        if isinstance(value, str) and value:
            out[key] = hashed_id(salt, value)
    return out


def context(ip: str | None, user_agent: str | None, level: str) -> dict[str, str]:
    """payload.context: the client's address and user agent as ``level`` allows them to be kept."""
    out: dict[str, str] = {}
    kept_ip = ip if level == "none" else truncated_ip(ip) if level == "low" else None
    if kept_ip:
        out["ip"] = kept_ip
    ua = generalised_ua(user_agent, level)
    if ua:
        out["userAgent"] = ua
    return out


_encode: Final = msgspec.json.Encoder().encode


def stored_event(
    project: str, body: PrivacyCompliantEvent, checked: Checked, *, event_id: str, timestamp: int, flags: int,
    received_at: int, salt: str, ip: str | None, user_agent: str | None,
) -> Event:  # fmt: skip
    """The Event stored for a checked body: identifiers, payload and flags as its level says."""
    level = checked.anonymization
    anonymized = level != "none"
    session_id = hashed_id(salt, body.anonymizedSessionId) if anonymized else body.anonymizedSessionId
    user_id = body.userId
    if user_id and anonymized:
        user_id = hashed_id(salt, user_id)
    payload = {
        "eventType": body.eventType,
        "eventData": anonymized_data(body.eventData, level, salt),
        "privacy": {
            "anonymization": level, "retention": checked.retention, "sharing": checked.sharing,
            "consentLevel": checked.consent_level,
        },
        "context": context(ip, user_agent, level),
    }  # fmt: skip
    flags |= consent_flags(checked.consent_level, checked.sharing) | FLAG_CONSENT_STATED
    flags |= FLAG_ANONYMIZED_LOW if level == "low" else FLAG_ANONYMIZED_HIGH if level == "high" else 0
    expires_at = received_at + checked.retention_days * DAY_MS if checked.retention_days is not None else None
    return Event(
        id=event_id, project=project, name=body.eventType, source=SOURCE_BEHAVIORAL, timestamp=timestamp,
        received_at=received_at, payload=msgspec.Raw(_encode(payload)), user_id=user_id or None,
        session_id=session_id, client_id=body.eventId, flags=flags, expires_at=expires_at,
    )  # fmt: skip


class PrivacyIngestResponse(msgspec.Struct, kw_only=True):
    """The answer: /api/v1/behavioral/events' fields, then what the privacy settings did."""

    eventId: str | None  # null when the event was dropped (``dropped`` says why)
    processed: bool
    processingTime: float
    triggers: list[TriggerResult]
    duplicate: bool = False
    timestamp: int = 0
    stored: bool = True
    dropped: Dropped | msgspec.UnsetType = msgspec.UNSET  # why it was not stored (consent, sampling)
    anonymization: str = DEFAULT_ANONYMIZATION
    retention: str | None = None
    expiresAt: str | None = None  # ISO 8601 UTC; null: the project's retention applies
    anonymizedSessionId: str = ""  # the session id as stored (hashed when anonymized)
