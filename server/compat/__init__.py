"""Segment- and PostHog-compatible intake: their official SDKs, pointed at Pulse, work unchanged.

``COMPAT_PATHS`` are the POST-only paths served here (server/app.py answers other methods 405);
``compat_route`` is how server/ingest_routes.py ``hot_route`` finds their handlers, so both the
native edge and the ASGI front serve them. The mapping to Pulse events is in docs/compat.md.
"""

from __future__ import annotations

from typing import Final

from server.compat import posthog, segment
from server.compat.intake import CompatHandler, posthog_intake, segment_handler

_ROUTES: Final[dict[str, CompatHandler]] = {
    **{path: segment_handler(call_type) for path, call_type in segment.PATHS.items()},
    **{path: posthog_intake for path in posthog.PATHS},
}
COMPAT_PATHS: Final = tuple(_ROUTES)


def compat_route(path: str) -> CompatHandler | None:
    """The handler of a POST to ``path`` when it is a Segment or PostHog intake path."""
    return _ROUTES.get(path)
