"""SSE resume on one node, end to end: replayed messages carry their own ids, a resume replays
everything still stored (not only the first 10,000 events), and an id the server never issued is
answered with a ``gap`` message instead of silence."""

from __future__ import annotations

import collections
import json
from typing import Any

import h11
import httpx
import trio

from tests.e2e.server_process import ServerProcess
from tests.e2e.sse_client import SSEClient

STEP_S = 10  # safety net per awaited message (stats and pings do not count): a hang fails the test
STREAM = "/api/events/stream"

Message = tuple[str | None, str | None, dict[str, Any]]  # event name (None: unnamed), id, data


class ResumeClient(SSEClient):
    """The SSE client of the e2e suite, also reading ``event:`` lines (named messages)."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(url, headers)
        self.parsed: collections.deque[Message] = collections.deque()

    async def __aenter__(self) -> ResumeClient:
        await super().__aenter__()
        return self

    async def message(self) -> Message:
        """The next message with a data line (the caller bounds the wait)."""
        while not self.parsed:
            event = await self._next_event()
            if isinstance(event, h11.Data):
                self.buffer += bytes(event.data).decode()
                *blocks, self.buffer = self.buffer.split("\n\n")
                for block in blocks:
                    self._parse(block)
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                raise EOFError("stream ended")
        return self.parsed.popleft()

    def _parse(self, block: str) -> None:
        name = event_id = data = None
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("id: "):
                event_id = line[4:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
        if data is not None:
            self.parsed.append((name, event_id, data))

    async def next_event(self) -> tuple[str, dict[str, Any]]:
        """The next ``event`` message (stats and pings skipped): (id, stored event)."""
        with trio.fail_after(STEP_S):
            while True:
                name, event_id, data = await self.message()
                assert name != "gap", data
                if data.get("type") == "event":
                    assert event_id is not None, data
                    return event_id, data["data"]

    async def next_named(self, name: str) -> dict[str, Any]:
        """The next message named ``name`` (``event: name``)."""
        with trio.fail_after(STEP_S):
            while True:
                got, _, data = await self.message()
                if got == name:
                    return data


async def track(client: httpx.AsyncClient, name: str, **payload: Any) -> str:
    answer = await client.post(f"/api/events/track/{name}", json=payload)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["eventId"])


async def track_batch(client: httpx.AsyncClient, first: int, count: int) -> None:
    events = [{"eventName": "tick", "payload": {"n": n}} for n in range(first, first + count)]
    answer = await client.post("/api/events/track/batch", json={"events": events})
    assert answer.status_code == 200, answer.text
    assert answer.json()["processedCount"] == count


async def test_replayed_messages_carry_their_own_ids_and_resume_right_after_them(
    server: ServerProcess, client: httpx.AsyncClient
) -> None:
    sent = [await track(client, "step", n=n) for n in range(4)]
    # a client that has none of them resumes from the start (what a browser sent with the old id: 0)
    async with ResumeClient(server.url + STREAM, {"Last-Event-ID": "0"}) as sse:
        replayed = [await sse.next_event() for _ in sent]
    assert [event["id"] for _, event in replayed] == sent
    ids = [int(event_id) for event_id, _ in replayed]
    assert ids[0] > 0 and ids == sorted(set(ids)), ids  # real, distinct, increasing: not "0" each time
    # what a browser does next: reconnect with the last id it saw; it gets only what came after
    async with ResumeClient(server.url + STREAM, {"Last-Event-ID": str(ids[1])}) as sse:
        assert [(await sse.next_event())[1]["id"] for _ in range(2)] == sent[2:]
        live = await track(client, "live")
        live_id, event = await sse.next_event()
        assert event["id"] == live
        assert int(live_id) > ids[-1]
    # the replayed id and the live id of the same event agree
    async with ResumeClient(server.url + STREAM, {"Last-Event-ID": str(ids[-1])}) as sse:
        assert await sse.next_event() == (live_id, event)


async def test_resume_replays_everything_missed_then_goes_live(server: ServerProcess, client: httpx.AsyncClient) -> None:
    """More than 10,000 missed events: all of them come, in order, and then the live stream."""
    async with ResumeClient(server.url + STREAM) as sse:
        await track(client, "before")
        last_id, _ = await sse.next_event()
    missed = 10_500
    for first in range(0, missed, 1000):
        await track_batch(client, first, min(1000, missed - first))
    async with ResumeClient(server.url + STREAM, {"Last-Event-ID": last_id}) as sse:
        seen: list[int] = []
        ids: list[int] = []
        for _ in range(missed):
            event_id, event = await sse.next_event()
            seen.append(event["payload"]["n"])
            ids.append(int(event_id))
        assert seen == list(range(missed))
        assert ids == sorted(set(ids)) and ids[0] > int(last_id)
        live = await track(client, "after")
        assert (await sse.next_event())[1]["id"] == live
    # the last replayed id resumes exactly there
    async with ResumeClient(server.url + STREAM, {"Last-Event-ID": str(ids[-1])}) as sse:
        assert (await sse.next_event())[1]["id"] == live


async def test_an_id_this_server_never_issued_is_reported_as_a_gap(server: ServerProcess, client: httpx.AsyncClient) -> None:
    await track(client, "stored")
    # a seq past the newest stored event (the client's ids come from a store that was replaced)
    async with ResumeClient(server.url + STREAM, {"Last-Event-ID": "999999"}) as sse:
        gap = await sse.next_named("gap")
        assert gap["type"] == "gap"
        assert gap["from"] == "999999" and gap["to"] is None
        assert gap["reason"] == "unknown_id"
        assert "999999" in gap["message"]
        live = await track(client, "live")
        assert (await sse.next_event())[1]["id"] == live  # then live, from the next event on
    # a cluster stream position sent to a server without Redis
    async with ResumeClient(server.url + STREAM, {"Last-Event-ID": "1700000000000-0/0"}) as sse:
        gap = await sse.next_named("gap")
        assert (gap["from"], gap["to"], gap["reason"]) == ("1700000000000-0/0", None, "unknown_id")
        live = await track(client, "live-again")
        assert (await sse.next_event())[1]["id"] == live
