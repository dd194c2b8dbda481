"""Projects and keys at the edge: which project a request acts on, and whether it may read.

A project has a public write key (ingest only, safe in a browser) and a secret key (read + admin).
Keys come as ``Authorization: Bearer``, ``X-API-Key``, or a ``key`` query parameter (browsers cannot
set headers on WebSocket and EventSource). On a loopback bind, a request without a known key acts
on the default project with full rights, so the seed documents' examples work as written.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Final

from storage.base import Project, Store

UNKNOWN_KEY_TTL_S: Final = 5.0  # a key created meanwhile (CLI, other node) is seen within this
UNKNOWN_KEYS_MAX: Final = 10_000
MAX_KEY_LENGTH: Final = 64
_unknown_keys: dict[str, float] = {}  # key -> until when it is known to be unknown


class AuthError(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Access:
    project: Project
    can_read: bool  # secret key (or open loopback access)


def key_from(headers: dict[str, str], query: dict[str, str]) -> str | None:
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return headers.get("x-api-key") or query.get("key") or query.get("api_key") or None


async def authenticate(store: Store, key: str | None, *, open_access: bool) -> Access:
    if key:
        project = await _lookup(store, key)
        if project is not None:
            return Access(project, can_read=key == project.secret_key)
        if not open_access:
            raise AuthError(401, "unknown api key")
    if open_access:
        return Access(await store.default_project(), can_read=True)
    raise AuthError(401, "missing api key: send Authorization: Bearer <key> or X-API-Key")


async def _lookup(store: Store, key: str) -> Project | None:
    """The store caches known keys; unknown ones are remembered here for a few seconds so a client
    sending random keys costs a dictionary lookup, not a database read per request."""
    if len(key) > MAX_KEY_LENGTH or not key.startswith(("pk_", "sk_")):
        return None  # not one of ours: no lookup, nothing cached
    now = time.monotonic()
    if _unknown_keys.get(key, 0.0) > now:
        return None
    project = await store.project_by_key(key)
    if project is None:
        if len(_unknown_keys) >= UNKNOWN_KEYS_MAX:
            _unknown_keys.clear()
        _unknown_keys[key] = now + UNKNOWN_KEY_TTL_S
    return project


def require_read(access: Access) -> None:
    if not access.can_read:
        raise AuthError(403, "this is a public write key; reading needs the project's secret key")
