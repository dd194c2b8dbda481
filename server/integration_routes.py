"""The integration routes (seed "System Integration APIs"; docs/automation.md "Integrations").
Secret key (or open loopback access); the key's project.

GET  /api/v1/behavioral/integration/status   every connector with status, lastSync, health, and dataConsistency
POST /api/v1/behavioral/integration/sync     {systems?: [webhook ids], syncType?: "incremental", dataTypes?}:
                                             the events since each receiver's last sync, as sync_batch deliveries
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

from quart import Response
from quart_trio import QuartTrio

from server import integrations
from server.context import Pulse
from server.json_body import json_object

BASE: Final = "/api/v1/behavioral/integration"
MAX_BODY: Final = 64 * 1024


def register(app: QuartTrio, pulse: Pulse, access: Callable[[], Awaitable[Any]], json_response: Callable[..., Response]) -> None:
    @app.get(f"{BASE}/status")
    async def integration_status() -> Response:
        granted = await access()
        return json_response(await integrations.status(pulse, granted.project.id))

    @app.post(f"{BASE}/sync")
    async def integration_sync() -> Response:
        granted = await access()
        body = await json_object(MAX_BODY, allow_empty=True)
        return json_response(await integrations.sync(pulse, granted.project.id, body))
