"""One delivery attempt over HTTP: POST the signed body, classify the answer.

Success is any 2xx. Redirects are not followed (a 3xx is a failure: a receiver that moved must be
registered again). 410 Gone means the receiver is gone for good: the webhook is disabled. Anything
else (other 4xx, 5xx, timeouts, refused or reset connections) is retried. The answer's body is never
read: a receiver cannot make us buffer it.
"""

from __future__ import annotations

import email.utils
import time
from typing import Final

import httpx
import msgspec

from server.webhooks import signing
from storage.webhook_records import Delivery

DEFAULT_TIMEOUT_S: Final = 10.0
USER_AGENT: Final = "pulse-webhooks/1"
MAX_ERROR_CHARS: Final = 300


class Attempt(msgspec.Struct, frozen=True):
    ok: bool
    gone: bool  # 410 Gone: disable the webhook
    http_status: int | None  # None: no answer (timeout, connection refused, ...)
    error: str | None
    retry_after_ms: int | None = None


class HttpSender:
    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S, max_connections: int = 64) -> None:
        self.timeout_s = timeout_s
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s), follow_redirects=False, trust_env=False,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            headers={"user-agent": USER_AGENT},
        )  # fmt: skip

    async def send(self, url: str, key: bytes, delivery: Delivery) -> Attempt:
        timestamp = int(time.time())
        headers = signing.headers(key, delivery.id, timestamp, delivery.body)
        request = self._client.build_request("POST", url, content=delivery.body, headers=headers)
        try:
            response = await self._client.send(request, stream=True)
            await response.aclose()
        except httpx.TimeoutException as exc:
            return Attempt(False, False, None, f"timeout after {self.timeout_s:g} s ({type(exc).__name__})")
        except (httpx.HTTPError, httpx.InvalidURL, OSError, ValueError) as exc:  # no answer: retried
            return Attempt(False, False, None, f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS])
        status = response.status_code
        if 200 <= status < 300:
            return Attempt(True, False, status, None)
        reason = f"HTTP {status} {response.reason_phrase}".strip()
        return Attempt(False, status == 410, status, reason, _retry_after_ms(response.headers.get("retry-after")))

    async def aclose(self) -> None:
        await self._client.aclose()


def _retry_after_ms(value: str | None) -> int | None:
    """Retry-After in seconds or as an HTTP date (RFC 9110 10.2.3); None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return int(value) * 1000
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0, int((when.timestamp() - time.time()) * 1000))
