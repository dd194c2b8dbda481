"""Two transport behaviours hypercorn 0.18 lacks, installed once at start.

1. permessage-deflate: hypercorn always accepts it when offered, and browsers always offer it; zlib
   state costs tens to hundreds of KiB per socket (DESIGN.md), which 100k sockets cannot afford.
   Pulse's default is off; ``--ws-compression on`` restores hypercorn's behaviour.
2. Keepalive with a deadline: hypercorn can send pings but never notices a peer that stopped
   answering. We record the time of every frame the peer sends (pongs included) and close the
   connection with CLOSE_NO_PONG when nothing came back within interval + timeout.
"""

from __future__ import annotations

import time
from typing import Any

from hypercorn.protocol import ws_stream
from hypercorn.protocol.events import StreamClosed
from wsproto.events import CloseConnection, Ping
from wsproto.extensions import Extension, PerMessageDeflate

from protocol.stream import CLOSE_NO_PONG

_original_handle_events = ws_stream.WSStream._handle_events
_settings: dict[str, float] = {"timeout": 20.0}


class _NoCompression(Extension):
    """An extension no client offers, so the deflate handshake never matches."""

    name = "x-pulse-no-compression"

    def offer(self) -> bool:
        return False

    def accept(self, offer: str) -> None:
        return None


def set_compression(enabled: bool) -> None:
    ws_stream.PerMessageDeflate = PerMessageDeflate if enabled else _NoCompression  # type: ignore[misc,attr-defined,assignment]


async def _handle_events(self: Any) -> None:
    self.pulse_last_heard = time.monotonic()
    await _original_handle_events(self)


async def _send_pings(self: Any) -> None:
    interval = self.config.websocket_ping_interval
    deadline = interval + _settings["timeout"]
    self.pulse_last_heard = getattr(self, "pulse_last_heard", time.monotonic())
    while not self.closed:
        await self.context.sleep(interval)
        if self.closed:
            return
        if time.monotonic() - self.pulse_last_heard > deadline:
            await self._send_wsproto_event(CloseConnection(code=CLOSE_NO_PONG, reason="no pong"))
            await self.send(StreamClosed(stream_id=self.stream_id))
            return
        await self._send_wsproto_event(Ping())


def install(*, compression: bool, ping_timeout: float) -> None:
    set_compression(compression)
    _settings["timeout"] = ping_timeout
    ws_stream.WSStream._handle_events = _handle_events  # type: ignore[method-assign]
    ws_stream.WSStream._send_pings = _send_pings  # type: ignore[method-assign]
