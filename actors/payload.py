"""Pull the few fields the actors need (url, scroll depth, device) out of an event's JSON payload.

``Event.payload`` is whatever the client sent, as raw JSON bytes: seed 000 sends the whole behavioral
event (``eventData.url``, ``eventData.scrollDepth``, ``deviceType``, ``sessionContext``...), seed 004
sends an AIEventPayload whose free-form ``metadata`` carries ``url``/``page``/``path``. Clients are
sloppy, so decoding is lenient: the payload is decoded once per event into a small Struct whose
fields are typed ``object`` and checked with ``isinstance`` afterwards. A field of the wrong type is
ignored, an undecodable payload yields empty info; nothing here ever raises on client data, because
an exception in an actor's ``receive`` is a crash and a restart.
"""

from __future__ import annotations

import math
from typing import Final

import msgspec

from protocol.record import Event

# Event names that mean "the user opened a page" (compared lower-cased).
PAGE_VIEW_NAMES: Final = frozenset({"page_view", "page-view", "pageview", "page", "$pageview"})

UNKNOWN_DEVICE: Final = "unknown"


class _Payload(msgspec.Struct, rename="camel"):
    """The top-level payload fields we look at; every other field is skipped by the decoder."""

    event_data: object = None
    url: object = None
    scroll_depth: object = None
    metadata: object = None
    device_type: object = None
    device_id: object = None
    session_context: object = None
    user_profile: object = None
    persona: object = None


_DECODER: Final = msgspec.json.Decoder(_Payload)
_EMPTY: Final = _Payload()


class PayloadInfo(msgspec.Struct, frozen=True):
    """What an actor learns from one event's payload; every field is None when absent or malformed."""

    url: str | None = None
    scroll_depth: float | None = None  # normalized to [0, 1]
    device_type: str | None = None
    device_id: str | None = None
    persona: str | None = None  # seed 000 ``userProfile.persona`` (or ``persona``)


EMPTY_INFO: Final = PayloadInfo()


def is_page_view(name: str) -> bool:
    """True for the event names the seeds and common SDKs use for a page view."""
    return name.lower() in PAGE_VIEW_NAMES


def decode_payload(raw: msgspec.Raw | bytes) -> _Payload:
    """Decode leniently: a non-object or broken payload decodes to an empty one instead of raising."""
    try:
        return _DECODER.decode(raw)
    except (msgspec.DecodeError, TypeError, ValueError):
        return _EMPTY


def normalize_scroll(value: object) -> float | None:
    """A scroll depth as a fraction in [0, 1].

    Values in (1, 100] are percentages (``75`` means 0.75); anything else is clamped to [0, 1].
    Booleans, strings, NaN and infinities are not scroll depths and give None.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    depth = float(value)
    if not math.isfinite(depth):
        return None
    if 1.0 < depth <= 100.0:
        depth /= 100.0
    return min(1.0, max(0.0, depth))


def _str_in(container: dict[str, object] | None, *fields: str) -> str | None:
    """The first of ``fields`` of ``container`` that holds a non-empty string."""
    if container:
        for field in fields:
            value = container.get(field)
            if value and isinstance(value, str):
                return value
    return None


def _dict(value: object) -> dict[str, object] | None:
    return value if isinstance(value, dict) else None


def extract(event: Event) -> PayloadInfo:
    """Decode ``event.payload`` once and pick out url, scroll depth, device type and device id.

    Lookup order (first usable value wins):
    - url: ``eventData.url``, ``url``, ``metadata.url``, ``metadata.page``, ``metadata.path``
    - scroll depth: ``eventData.scrollDepth``, ``scrollDepth``, ``metadata.scrollDepth``
    - device type: ``Event.device_type``, ``deviceType``, ``sessionContext.deviceType``,
      ``metadata.deviceType``
    - device id: ``deviceId``, ``sessionContext.deviceId``, ``metadata.deviceId``
    - persona: ``persona``, ``userProfile.persona``, ``metadata.persona``

    This runs for every event in every actor, so it is written for speed: plain dict lookups,
    no work for the (common) fields that are absent.
    """
    payload = decode_payload(event.payload)
    if payload is _EMPTY and event.device_type is None:
        return EMPTY_INFO
    data = _dict(payload.event_data)
    meta = _dict(payload.metadata)
    context = _dict(payload.session_context)

    url = _str_in(data, "url") if data else None
    if url is None:
        top = payload.url
        url = top if top and isinstance(top, str) else _str_in(meta, "url", "page", "path")

    scroll = None
    if data and "scrollDepth" in data:
        scroll = normalize_scroll(data["scrollDepth"])
    if scroll is None and payload.scroll_depth is not None:
        scroll = normalize_scroll(payload.scroll_depth)
    if scroll is None and meta and "scrollDepth" in meta:
        scroll = normalize_scroll(meta["scrollDepth"])

    device_type = event.device_type or None
    if device_type is None:
        top = payload.device_type
        device_type = top if top and isinstance(top, str) else None
        if device_type is None and (context or meta):
            device_type = _str_in(context, "deviceType") or _str_in(meta, "deviceType")

    top = payload.device_id
    device_id = top if top and isinstance(top, str) else None
    if device_id is None and (context or meta):
        device_id = _str_in(context, "deviceId") or _str_in(meta, "deviceId")

    top = payload.persona
    persona = top if top and isinstance(top, str) else None
    if persona is None and (payload.user_profile is not None or meta):
        persona = _str_in(_dict(payload.user_profile), "persona") or _str_in(meta, "persona")

    if url is None and scroll is None and device_type is None and device_id is None and persona is None:
        return EMPTY_INFO
    return PayloadInfo(url=url, scroll_depth=scroll, device_type=device_type, device_id=device_id, persona=persona)
