"""What the consent tests send: the seed's consent body and behavioral events."""

from __future__ import annotations

import time
from typing import Any, Final

CONSENT: Final = "/api/v1/behavioral/consent"
EVENTS: Final = "/api/v1/behavioral/events"
BATCH: Final = "/api/v1/behavioral/batch"
STEP_S: Final = 10


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def consent(user: str, status: str = "granted", **granular: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"userId": user, "consentType": "behavioral_tracking", "consentStatus": status,
                            "consentDate": "2024-01-01T10:00:00Z", "consentSource": "cookie_banner"}
    if granular:
        body["granularConsent"] = granular
    return body


def everything_but(category: str) -> dict[str, bool]:
    granted = {"analytics": True, "marketing": True, "personalization": True, "advertising": True}
    granted[category] = False
    return granted


def event(user: str | None, session: str, kind: str = "page_view", **data: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"eventType": kind, "sessionId": session, "eventData": {"url": "/pricing", **data}}
    if user is not None:
        body["userId"] = user
    return body
