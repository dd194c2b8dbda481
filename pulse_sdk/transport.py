"""One POST of a batch body to Pulse over urllib, and what came back.

No retries and no counters here (pulse_sdk/worker.py decides); every failure, including a socket
error or a timeout, becomes an ``Answer`` instead of an exception, so the worker never dies of one.
"""

from __future__ import annotations

import gzip
import http.client
import json
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Final

from pulse_sdk.retry import parse_retry_after

BATCH_PATH: Final = "/api/events/track/batch"
MAX_ANSWER_BYTES: Final = 4 * 1024 * 1024  # a batch answer lists each event; more than this is not Pulse
GZIP_LEVEL: Final = 6
VERSION: Final = "0.1.0"
USER_AGENT: Final = f"pulse-sdk-python/{VERSION} (python {sys.version_info.major}.{sys.version_info.minor})"


@dataclass(frozen=True, slots=True)
class Answer:
    """What one POST came to. ``status`` is None when no HTTP answer arrived (connect error, timeout)."""

    status: int | None
    body: Any  # the decoded JSON answer, or None when there was none or it was not JSON
    retry_after: float | None  # seconds, from the Retry-After header
    reason: str  # for logs: the server's error reason, or the network error

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:  # includes UnicodeDecodeError
        return None


def _reason(status: int, body: Any, raw: bytes) -> str:
    """The server's own words: Pulse answers ``{"error": {"field", "reason"}}`` on refusals."""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            field, reason = error.get("field"), error.get("reason")
            return f"HTTP {status}: {field}: {reason}" if field else f"HTTP {status}: {reason}"
    return f"HTTP {status}: {raw[:200].decode('utf-8', 'replace')}"


class Transport:
    """Posts batch bodies to ``base_url``'s batch route with the key and encoding headers."""

    def __init__(self, base_url: str, *, key: str | None, use_gzip: bool) -> None:
        self.url = base_url.rstrip("/") + BATCH_PATH
        self.use_gzip = use_gzip
        self.headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, "Accept": "application/json"}
        if use_gzip:
            self.headers["Content-Encoding"] = "gzip"
        if key:
            self.headers["Authorization"] = f"Bearer {key}"
            self.headers["X-API-Key"] = key

    def encode(self, body: bytes) -> bytes:
        # mtime=0: the same batch compresses to the same bytes on every retry
        return gzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0) if self.use_gzip else body

    def post(self, wire_body: bytes, timeout: float) -> Answer:
        request = urllib.request.Request(self.url, data=wire_body, headers=self.headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=max(timeout, 0.001)) as response:
                raw = response.read(MAX_ANSWER_BYTES)
                return Answer(response.status, _decode(raw), None, "")
        except urllib.error.HTTPError as err:
            try:
                raw = err.read(MAX_ANSWER_BYTES)
            except (OSError, http.client.HTTPException):
                raw = b""
            finally:
                err.close()
            body = _decode(raw)
            retry_after = parse_retry_after(err.headers.get("Retry-After") if err.headers else None)
            return Answer(err.code, body, retry_after, _reason(err.code, body, raw))
        except urllib.error.URLError as err:
            return Answer(None, None, None, f"cannot reach {self.url}: {err.reason}")
        except (OSError, http.client.HTTPException) as err:
            # a reset or timeout after the request was sent, a malformed answer...
            return Answer(None, None, None, f"no answer from {self.url}: {type(err).__name__}: {err}")
