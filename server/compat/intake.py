"""The Segment and PostHog routes: read, find the project, decode, store durably, answer as the SDK expects.

Transport-neutral like server/ingest_routes.py: a handler takes a ``HotRequest`` (ASGI or the native
edge) and returns the 200 answer's JSON; a refusal is raised and answered by
``ingest_routes.error_answer`` (4xx with the field and the reason, 401, 503). The answer is sent
only after every accepted event of the request is durable (``pipeline.ingest``), so an SDK that sees
its 200 may drop its copy, and one that retries after a failure finds the stored events again by
their ``messageId``/``uuid`` (answered as duplicates, stored once).

Invalid messages in a batch reject only themselves: the valid ones are stored, the rejected are
counted (``events_rejected``) and listed in the answer with field and reason. A request none of
whose messages is valid is answered 400.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Awaitable, Callable

import msgspec

from actors.pipeline import IngestResult
from protocol.errors import InvalidInput
from protocol.normalize import Decoded
from protocol.tracking import RejectedEvent
from server.auth import Access, AuthError, authenticate, key_from
from server.compat import posthog, segment
from server.context import Pulse
from server.http import HotRequest, decode_body, encode_json
from server.privacy.ingest_gate import limit

CompatHandler = Callable[[Pulse, HotRequest, float], Awaitable[bytes]]


class SegmentAnswer(msgspec.Struct, kw_only=True):
    """What api.segment.io answers (``{"success": true}``), with Pulse's counts beside it."""

    success: bool = True  # the request was accepted: every valid message is stored
    storedCount: int
    duplicateCount: int
    rejectedCount: int
    rejected: list[RejectedEvent]
    processed: bool  # false: stored, but the live actors could not take them all in time
    droppedCount: int | msgspec.UnsetType = msgspec.UNSET  # accepted, not stored (consent...); omitted when none


class PostHogAnswer(msgspec.Struct, kw_only=True):
    """What PostHog's capture answers (``{"status": 1}``), with Pulse's counts beside it."""

    status: int = 1
    storedCount: int
    duplicateCount: int
    rejectedCount: int
    rejected: list[RejectedEvent]
    processed: bool
    droppedCount: int | msgspec.UnsetType = msgspec.UNSET  # accepted, not stored (consent...); omitted when none


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def basic_user(headers: dict[str, str]) -> str | None:
    """The user of ``Authorization: Basic base64(user:password)``: Segment's write key."""
    auth = headers.get("authorization", "")
    if auth[:6].lower() != "basic ":
        return None
    try:
        decoded = base64.b64decode(auth[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise AuthError(401, "authorization: not valid basic credentials (base64 of 'writeKey:')") from None
    return decoded.partition(":")[0] or None


async def project_access(pulse: Pulse, key: str | None, how: str) -> Access:
    """The project a key names (server/auth.py's rules); ``how`` tells a keyless client where keys go."""
    open_access = pulse.settings.open_access
    if key is None and not open_access:
        raise AuthError(401, f"missing key: {how}")
    return await authenticate(pulse.store, key, open_access=open_access)


async def store(pulse: Pulse, decoded: Decoded, started: float, *, gpc: bool = False) -> IngestResult:
    """Make the accepted events durable; 400 when there are none (naming the first rejection)."""
    if not decoded.accepted:
        first = decoded.rejected[0]
        reason = first.reason if len(decoded.rejected) == 1 else f"no event in the request was valid; first: {first.reason}"
        raise InvalidInput(first.field, reason)
    events = [event for _, event in decoded.accepted]
    return await pulse.pipeline.ingest(events, started=started, rejected=len(decoded.rejected), gpc=gpc)


def _counts(result: IngestResult) -> tuple[int, int]:
    """(stored now, already stored) of the accepted events."""
    duplicates = sum(1 for outcome in result.outcomes if outcome.duplicate)
    return len(result.outcomes) - duplicates, duplicates


def _dropped(result: IngestResult) -> int | msgspec.UnsetType:
    """How many accepted events were not stored (consent: actors/privacy/consent.py); UNSET when none."""
    return sum(1 for why in result.dropped if why is not None) if result.dropped else msgspec.UNSET


async def segment_intake(pulse: Pulse, req: HotRequest, started: float, call_type: str | None) -> bytes:
    """POST /v1/batch and the single calls (/v1/track...): Segment's tracking API."""
    # a key in the headers is checked before the body is read: a refused client costs no decoding
    header_key = basic_user(req.headers) or key_from(req.headers, req.query)
    access = await authenticate(pulse.store, header_key, open_access=pulse.settings.open_access) if header_key else None
    if access is not None:
        limit(pulse, req, access, header_key)  # the project's rate limits, before the body is read
    request = segment.parse_request(decode_body(req.headers, await req.read()), call_type)
    if access is None:
        access = await project_access(
            pulse, request.write_key, "send the write key as the HTTP Basic user or as writeKey in the body")
        limit(pulse, req, access, request.write_key)  # a key in the body: limited once it is read
    decoded = segment.decode_events(request, access.project.id, now_ms())
    result = await store(pulse, decoded, started, gpc=req.headers.get("sec-gpc") == "1")
    stored, duplicates = _counts(result)
    return encode_json(SegmentAnswer(storedCount=stored, duplicateCount=duplicates, rejectedCount=len(decoded.rejected),
                                     rejected=decoded.rejected, processed=result.processed,
                                     droppedCount=_dropped(result)))


async def posthog_intake(pulse: Pulse, req: HotRequest, started: float) -> bytes:
    """POST /batch/, /capture/, /e/, /i/v0/e/: PostHog's capture API (v0)."""
    body = decode_body(req.headers, await req.read())
    content_type = req.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    request = posthog.parse_request(posthog.unwrap(body, content_type, req.query), req.query)
    api_key = request.key or key_from(req.headers, req.query)
    access = await project_access(pulse, api_key, "send the project key as api_key in the body (or token in each event)")
    limit(pulse, req, access, api_key)  # the project's rate limits, before anything is stored
    decoded = posthog.decode_events(request, access.project.id, now_ms())
    result = await store(pulse, decoded, started, gpc=req.headers.get("sec-gpc") == "1")
    stored, duplicates = _counts(result)
    return encode_json(PostHogAnswer(storedCount=stored, duplicateCount=duplicates, rejectedCount=len(decoded.rejected),
                                     rejected=decoded.rejected, processed=result.processed,
                                     droppedCount=_dropped(result)))


def segment_handler(call_type: str | None) -> CompatHandler:
    async def handle(pulse: Pulse, req: HotRequest, started: float) -> bytes:
        return await segment_intake(pulse, req, started, call_type)

    return handle
