"""The privacy calls of a backend (docs/privacy.md): record a user's consent, read it back, erase a
user's data. Synchronous and unbuffered, unlike ``Client.track``: each call's answer is the point.

    from pulse_sdk import Privacy

    privacy = Privacy("http://localhost:3000", key="sk_...")
    privacy.consent("user-123", granted=True, categories={"analytics": True, "marketing": False})
    privacy.erase("user-123")          # {"deletionId": ..., "status": "completed", "dataRemoved": {...}}

A refusal raises PrivacyError with Pulse's status and reason (400 names the field).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from typing import Any, Final

from pulse_sdk.transport import USER_AGENT

CONSENT_PATH: Final = "/api/v1/behavioral/consent"
DATA_PATH: Final = "/api/v1/behavioral/data/"
MAX_ANSWER_BYTES: Final = 1024 * 1024


class PrivacyError(Exception):
    def __init__(self, status: int | None, reason: str) -> None:
        super().__init__(f"{status}: {reason}" if status is not None else reason)
        self.status = status
        self.reason = reason


class Privacy:
    """Consent and erasure against one Pulse. Recording consent takes any key of the project (the
    public one is enough); reading it and erasing take the secret key."""

    def __init__(self, base_url: str = "http://localhost:3000", key: str | None = None, *, timeout: float = 30.0) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        if key:
            self.headers["Authorization"] = f"Bearer {key}"

    def consent(self, user_id: str, *, granted: bool, categories: dict[str, bool] | None = None,
                source: str | None = None, consent_type: str = "behavioral_tracking",
                at: datetime | None = None) -> dict[str, Any]:  # fmt: skip
        """Record a consent change (seed 000's body); the effective consent per category."""
        body: dict[str, Any] = {
            "userId": user_id,
            "consentType": consent_type,
            "consentStatus": "granted" if granted else "denied",
            "consentDate": (at or datetime.now(UTC)).isoformat().replace("+00:00", "Z"),
        }
        if source is not None:
            body["consentSource"] = source
        if categories is not None:
            body["granularConsent"] = categories
        return self._call("POST", CONSENT_PATH, body)

    def consent_of(self, user_id: str) -> dict[str, Any]:
        """The user's effective consent and its audit trail, newest first."""
        return self._call("GET", f"{CONSENT_PATH}/{urllib.parse.quote(user_id, safe='')}")

    def erase(self, user_id: str, *, anonymize_only: bool = False, cascade: bool = True) -> dict[str, Any]:
        """Delete (or with ``anonymize_only`` pseudonymize) everything of the user; exact counts."""
        query = urllib.parse.urlencode({"anonymizeOnly": str(anonymize_only).lower(),
                                        "cascadeDelete": str(cascade).lower()})  # fmt: skip
        return self._call("DELETE", f"{DATA_PATH}{urllib.parse.quote(user_id, safe='')}?{query}")

    def erasure_status(self, user_id: str) -> dict[str, Any]:
        return self._call("GET", f"{DATA_PATH}{urllib.parse.quote(user_id, safe='')}")

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        headers = dict(self.headers)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.base_url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                answer: dict[str, Any] = json.loads(response.read(MAX_ANSWER_BYTES) or b"{}")
                return answer
        except urllib.error.HTTPError as err:
            with err:
                raw = err.read(MAX_ANSWER_BYTES)
            try:
                error = json.loads(raw).get("error", {})
                reason = f"{error.get('field', '')}: {error.get('reason', '')}".lstrip(": ")
            except (ValueError, AttributeError):
                reason = raw.decode("utf-8", "replace")[:200]
            raise PrivacyError(err.code, reason) from None
        except (urllib.error.URLError, OSError) as err:
            raise PrivacyError(None, f"cannot reach {self.base_url}: {err}") from None
