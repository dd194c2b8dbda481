"""CORS as seed 004 describes it: every API answer carries the headers, preflights answer 200.

ALLOWED_ORIGINS="*" (default) allows any origin; a comma-separated list allows exactly those origins
(the request's Origin is echoed back, with ``Vary: Origin``).
"""

from __future__ import annotations

from server.settings import CORS_ALLOW_HEADERS, CORS_ALLOW_METHODS, Settings


class Cors:
    def __init__(self, settings: Settings) -> None:
        self.any_origin = "*" in settings.allowed_origins
        self.origins = frozenset(settings.allowed_origins)

    def headers_for(self, origin: str | None) -> list[tuple[bytes, bytes]]:
        if self.any_origin:
            allow = "*"
        elif origin and origin in self.origins:
            allow = origin
        else:
            return [(b"vary", b"Origin")]
        return [
            (b"access-control-allow-origin", allow.encode("latin-1")),
            (b"access-control-allow-credentials", b"false"),
            (b"access-control-expose-headers", b"Retry-After, X-Pulse-Event-Id"),
            (b"vary", b"Origin"),
        ]

    def preflight_headers(self, origin: str | None) -> list[tuple[bytes, bytes]]:
        headers = self.headers_for(origin)
        if len(headers) > 1:
            headers += [
                (b"access-control-allow-methods", CORS_ALLOW_METHODS.encode()),
                (b"access-control-allow-headers", CORS_ALLOW_HEADERS.encode()),
                (b"access-control-max-age", b"86400"),
            ]
        return headers
