"""POST /api/v1/behavioral/events/privacy-compliant (seed 000): one event, stored as its
``privacySettings`` say (protocol/privacy_ingest.py has what each level keeps).

Order: rate limits (before the body is read), decode and check (400 naming the field), consent
level (``none``/``essential`` answer ``stored: false``, ``dropped: consent``, nothing stored),
anonymization with the project's salt, adaptive sampling, then the pipeline as for
/api/v1/behavioral/events. The client IP and User-Agent are read from the request here and go
nowhere but the anonymizer: no log line of this route carries them (access logs are off, see
server/main.py; refusals log only the method and path).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Final

from actors.pipeline import IngestResult
from protocol import privacy_ingest
from protocol.behavioral import TriggerResult
from protocol.normalize import as_json, iso_ms, new_event_id
from protocol.privacy_ingest import PrivacyIngestResponse
from server.context import Pulse
from server.http import HotRequest, decode_body, encode_json, is_msgpack
from server.privacy.client_ip import client_ip
from server.privacy.ingest_gate import admitted, has_gpc

PATH: Final = "/api/v1/behavioral/events/privacy-compliant"

Triggers = Callable[[IngestResult], list[TriggerResult]]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


async def privacy_compliant(pulse: Pulse, req: HotRequest, started: float, triggers: Triggers) -> bytes:
    access = await admitted(pulse, req)
    msgpack = is_msgpack(req.headers)
    body = decode_body(req.headers, await req.read())
    received_at = _now_ms()
    event_body, checked = privacy_ingest.decode(body, msgpack=msgpack)
    if msgpack:
        as_json(body, msgpack=True)  # the same refusal as the other routes for a value JSON cannot hold
    timestamp, flags = privacy_ingest.event_timestamp(event_body, received_at)
    project = access.project.id
    policy = pulse.policies.get(project)
    if checked.anonymization != "none" and not policy.salt:
        policy = await pulse.policies.salted(project)  # once per project: stores its salt
    event = privacy_ingest.stored_event(
        project, event_body, checked, event_id=new_event_id(), timestamp=timestamp, flags=flags,
        received_at=received_at, salt=policy.salt, ip=client_ip(req, pulse.settings),
        user_agent=req.headers.get("user-agent"),
    )  # fmt: skip
    answer = PrivacyIngestResponse(
        eventId=event.id, processed=False, processingTime=0.0, triggers=[], timestamp=event.timestamp,
        anonymization=checked.anonymization, retention=checked.retention,
        expiresAt=iso_ms(event.expires_at) if event.expires_at is not None else None,
        anonymizedSessionId=event.session_id or "",
    )  # fmt: skip
    dropped = checked.dropped  # the request's own consentLevel allows no analytics
    if dropped is not None:
        pulse.metrics.drops[f"consent_{dropped.category}"] += 1
        answer.eventId = None
        answer.stored = False
        answer.dropped = dropped
        answer.processingTime = round((time.perf_counter() - started) * 1000, 3)
        return encode_json(answer)
    result = await pulse.pipeline.ingest([event], started=started, gpc=has_gpc(req))
    if result.dropped is not None and result.dropped[0] is not None:  # adaptive sampling
        answer.eventId = None
        answer.stored = False
        answer.dropped = result.dropped[0]
        answer.processingTime = round(result.elapsed_ms, 3)
        return encode_json(answer)
    outcome = result.outcomes[0]
    answer.eventId = outcome.id
    answer.duplicate = outcome.duplicate
    answer.processed = result.processed
    answer.processingTime = round(result.elapsed_ms, 3)
    answer.triggers = triggers(result)
    return encode_json(answer)


def handler(triggers: Triggers) -> Callable[[Pulse, HotRequest, float], Awaitable[bytes]]:
    async def handle(pulse: Pulse, req: HotRequest, started: float) -> bytes:
        return await privacy_compliant(pulse, req, started, triggers)

    return handle
