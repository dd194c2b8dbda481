"""A project's privacy and traffic policy (issue 14): what applies to a user with no consent record,
the rate limits, adaptive sampling, how long events are kept, and the salt identifiers are hashed
with. One row per project in the store (storage/policy_records.py); every node keeps them all in
memory (server/privacy/policies.py) so the ingest path reads a dict, never the database.

The API shape (``GET/PATCH /api/admin/projects/{id}/policy``) is camelCase; the salt is never shown.
"""

from __future__ import annotations

import secrets
from typing import Any, Final

import msgspec

from protocol.errors import InvalidInput

CONSENT_DEFAULTS: Final = ("granted", "denied")
MAX_RATE: Final = 1_000_000.0  # requests per second: anything above is a typo, not a limit
MAX_RETENTION_DAYS: Final = 36_500


class ProjectPolicy(msgspec.Struct, kw_only=True, frozen=True):
    # consent of a user with no consent record (seed "consent"): "granted" keeps today's behaviour
    consent_default: str = "granted"
    rate_limit: float | None = None  # requests per second per API key (token bucket); None: unlimited
    rate_limit_burst: float | None = None  # the bucket's size; None: max(1, rate_limit)
    ip_rate_limit: float | None = None  # requests per second per client IP; None: unlimited
    adaptive_sampling: bool = False  # under overload, sample low-value events (counted as a drop reason)
    retention_days: int | None = None  # events older than this are removed by the retention job
    salt: str = ""  # hashes identifiers of anonymized events; set once, when the policy is first stored

    def burst(self) -> float:
        return self.rate_limit_burst or max(1.0, self.rate_limit or 1.0)


DEFAULT_POLICY: Final = ProjectPolicy()


def with_salt(policy: ProjectPolicy) -> ProjectPolicy:
    """``policy`` with a fresh random salt if it has none (the store keeps the first one written)."""
    return policy if policy.salt else msgspec.structs.replace(policy, salt=secrets.token_hex(16))


class PolicyView(msgspec.Struct, kw_only=True):
    """What the API shows of a policy (no salt)."""

    consentDefault: str
    rateLimit: float | None
    rateLimitBurst: float | None
    ipRateLimit: float | None
    adaptiveSampling: bool
    retentionDays: int | None


def view(policy: ProjectPolicy) -> PolicyView:
    return PolicyView(
        consentDefault=policy.consent_default,
        rateLimit=policy.rate_limit,
        rateLimitBurst=policy.rate_limit_burst if policy.rate_limit_burst else (policy.burst() if policy.rate_limit else None),
        ipRateLimit=policy.ip_rate_limit,
        adaptiveSampling=policy.adaptive_sampling,
        retentionDays=policy.retention_days,
    )


_FIELDS: Final = {
    "consentDefault": "consent_default",
    "rateLimit": "rate_limit",
    "rateLimitBurst": "rate_limit_burst",
    "ipRateLimit": "ip_rate_limit",
    "adaptiveSampling": "adaptive_sampling",
    "retentionDays": "retention_days",
}


def _rate(field: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= MAX_RATE:
        raise InvalidInput(f"$.{field}", f"must be null or a number of requests per second in (0, {MAX_RATE:g}]")
    return float(value)


def _check(field: str, value: Any) -> Any:
    if field == "consentDefault":
        if value not in CONSENT_DEFAULTS:
            raise InvalidInput("$.consentDefault", f"must be one of {list(CONSENT_DEFAULTS)!r}, not {value!r}")
        return value
    if field in ("rateLimit", "rateLimitBurst", "ipRateLimit"):
        return _rate(field, value)
    if field == "adaptiveSampling":
        if not isinstance(value, bool):
            raise InvalidInput("$.adaptiveSampling", f"must be true or false, not {value!r}")
        return value
    # retentionDays
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_RETENTION_DAYS:
        raise InvalidInput("$.retentionDays", f"must be null or a whole number of days in 1..{MAX_RETENTION_DAYS}")
    return value


def patched(policy: ProjectPolicy, changes: dict[str, Any]) -> ProjectPolicy:
    """``policy`` with the fields a PATCH body sets (camelCase; null clears a limit). Unknown or
    invalid fields raise InvalidInput naming the field."""
    values: dict[str, Any] = {}
    for field, value in changes.items():
        if field not in _FIELDS:
            raise InvalidInput(f"$.{field}", f"unknown policy field; known: {sorted(_FIELDS)!r}")
        values[_FIELDS[field]] = _check(field, value)
    return msgspec.structs.replace(policy, **values)


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(ProjectPolicy).decode


def to_json(policy: ProjectPolicy) -> str:
    return _encode(policy).decode()


def from_json(text: str | bytes) -> ProjectPolicy:
    return _decode(text)
