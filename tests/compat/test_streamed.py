"""Events from the Segment and PostHog SDKs are streamed like any other (seed 004's /api/events/stream)."""

from __future__ import annotations

import trio
from posthog import Posthog
from segment.analytics import Client

from tests.e2e.server_process import ServerProcess
from tests.e2e.sse_client import SSEClient


async def test_sdk_events_reach_the_event_stream(server: ServerProcess) -> None:
    segment = Client("key", host=server.url, sync_mode=True)
    posthog = Posthog("phc_key", host=server.url, sync_mode=True, debug=True)
    async with SSEClient(f"{server.url}/api/events/stream") as sse:
        assert sse.status == 200
        # the SDKs block on their HTTP call: run them off the trio thread
        await trio.to_thread.run_sync(lambda: segment.track("user-1", "Checkout Started", {"cart": 3}))
        await trio.to_thread.run_sync(lambda: posthog.capture("$pageview", distinct_id="user-2"))
        _, first = await sse.next_of_type("event")
        _, second = await sse.next_of_type("event")
    posthog.shutdown()

    assert (first["data"]["name"], first["data"]["userId"], first["data"]["serviceName"]) == (
        "Checkout Started", "user-1", "segment")
    assert first["data"]["payload"]["metadata"]["properties"] == {"cart": 3}
    assert (second["data"]["name"], second["data"]["userId"], second["data"]["serviceName"]) == (
        "$pageview", "user-2", "posthog")
