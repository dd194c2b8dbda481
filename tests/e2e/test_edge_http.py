"""Hostile and unusual HTTP/1.1 against both edges: the same answers from the Pulse edge (native
hot path, server/edge/) and from stock hypercorn (``--edge hypercorn``), on raw sockets.

Each case is raw bytes sent on a fresh connection; what is compared is the status of every
response and whether the server then closed the connection.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterator
from typing import Final

import pytest
import trio

from tests.e2e.server_process import ServerProcess

STEP_S: Final = 15  # safety bound on each read; never reached when the server answers
BODY: Final = json.dumps({"sessionId": "edge-s1", "userId": "edge-u1", "eventType": "page_view",
                          "eventData": {"url": "/edge"}}).encode()


def post(body: bytes = BODY, *, path: str = "/api/v1/behavioral/events", version: bytes = b"1.1",
         headers: bytes = b"Host: pulse\r\ncontent-type: application/json\r\n", length: bytes | None = None) -> bytes:
    declared = str(len(body)).encode() if length is None else length
    return b"POST " + path.encode() + b" HTTP/" + version + b"\r\n" + headers + b"Content-Length: " + declared + b"\r\n\r\n" + body


def chunked(body: bytes) -> bytes:
    return (b"POST /api/v1/behavioral/events HTTP/1.1\r\nHost: pulse\r\ncontent-type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n")


HEALTH: Final = b"GET /api/v1/behavioral/health HTTP/1.1\r\nHost: pulse\r\n\r\n"

# name -> (request bytes, statuses expected in order, closed afterwards)
CORPUS: Final[dict[str, tuple[bytes, list[int], bool]]] = {
    "plain": (post(), [200], False),
    "pipelined hot requests": (post() + post(), [200, 200], False),
    "pipelined hot then read": (post() + HEALTH, [200, 200], False),
    "pipelined read then hot": (HEALTH + post(), [200, 200], False),
    "chunked body": (chunked(BODY), [200], False),
    "track route": (post(b'{"sessionId":"edge-s2"}', path="/api/events/track/edge_click"), [200], False),
    "http/1.0 without host": (post(version=b"1.0", headers=b"content-type: application/json\r\n"), [200], True),
    "connection: close": (post(headers=b"Host: pulse\r\nConnection: close\r\ncontent-type: application/json\r\n"), [200], True),
    "content-length and transfer-encoding": (
        b"POST /api/v1/behavioral/events HTTP/1.1\r\nHost: pulse\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", [400], True),
    "content-length twice, equal": (post(headers=b"Host: pulse\r\nContent-Length: %d\r\n" % len(BODY)), [400], True),
    "content-length twice, different": (post(headers=b"Host: pulse\r\nContent-Length: 3\r\n"), [400], True),
    "content-length not a number": (post(length=b"12x"), [400], True),
    "content-length negative": (post(length=b"-1"), [400], True),
    "missing host": (post(headers=b"content-type: application/json\r\n"), [400], True),
    "not http": (b"HELLO WORLD\r\n\r\n", [400], True),
    "space before colon": (post(headers=b"Host: pulse\r\nX-Bad : 1\r\n"), [400], True),
    "transfer-encoding gzip": (b"POST /api/v1/behavioral/events HTTP/1.1\r\nHost: pulse\r\n"
                               b"Transfer-Encoding: gzip\r\n\r\n", [501], True),
    # a head still unfinished at 20 KB: sent whole, no server could read it all and still refuse
    # it without the client's unsent rest turning the answer into a reset
    "headers over 16 KiB": (b"POST /api/v1/behavioral/events HTTP/1.1\r\nHost: pulse\r\nX-Big: " + b"a" * 20_000,
                            [431], True),
    "bad json": (post(b"{nope"), [400], False),
    "unsupported content type": (post(headers=b"Host: pulse\r\ncontent-type: text/csv\r\n"), [415], False),
}


# Where the edges differ, and why: h11 merges a repeated, equal Content-Length into one (RFC 9110
# 8.6 lets a recipient do that); the native edge refuses any repeated length, like llhttp.
HYPERCORN_DIFFERS: Final = {"content-length twice, equal": ([200], False)}


def parse_responses(data: bytes) -> tuple[list[int], bytes]:
    """The statuses of the complete responses at the start of ``data`` (1xx included), and the rest."""
    statuses = []
    while True:
        end = data.find(b"\r\n\r\n")
        if end < 0:
            return statuses, data
        head = data[:end].decode("latin-1").split("\r\n")
        status = int(head[0].split(" ")[1])
        length = 0
        for line in head[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        if len(data) < end + 4 + length:
            return statuses, data
        statuses.append(status)
        data = data[end + 4 + length:]


async def exchange(url: str, request: bytes, expected: int) -> tuple[list[int], bool]:
    """Send ``request`` on a new connection; the statuses of ``expected`` responses, and whether the
    server closed the connection after them (an open one is proven open by one more request)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(request)
        data = b""
        statuses: list[int] = []
        closed = False
        with trio.fail_after(STEP_S):
            while len(statuses) < expected and not closed:
                chunk = await stream.receive_some(65536)
                closed = not chunk
                got, data = parse_responses(data + chunk)
                statuses += got
                data = data if not got else data
            if closed:
                return statuses, True
            try:
                await stream.send_all(HEALTH)
            except trio.BrokenResourceError:
                return statuses, True
            while True:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    return statuses, True
                got, data = parse_responses(data + chunk)
                if got:
                    return statuses, False


@pytest.fixture(scope="module")
def edges(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ServerProcess]]:
    servers = {}
    try:
        for edge in ("pulse", "hypercorn"):
            data_dir: pathlib.Path = tmp_path_factory.mktemp(f"edge-{edge}")
            servers[edge] = ServerProcess(data_dir, extra=["--edge", edge]).start()
        yield servers
    finally:
        for server in servers.values():
            server.stop()


@pytest.mark.parametrize("case", sorted(CORPUS))
async def test_both_edges_answer_the_same(edges: dict[str, ServerProcess], case: str) -> None:
    request, statuses, closed = CORPUS[case]
    for edge, server in edges.items():
        expected = HYPERCORN_DIFFERS.get(case, (statuses, closed)) if edge == "hypercorn" else (statuses, closed)
        got = await exchange(server.url, request, len(expected[0]))
        assert got == expected, f"{edge} edge answered {case!r} with {got}"


async def test_expect_100_continue_gets_the_interim_answer_before_the_body(edges: dict[str, ServerProcess]) -> None:
    for edge, server in edges.items():
        host, port = server.url.removeprefix("http://").rsplit(":", 1)
        async with await trio.open_tcp_stream(host, int(port)) as stream:
            head, _, body = post(headers=b"Host: pulse\r\nExpect: 100-continue\r\ncontent-type: application/json\r\n").partition(b"\r\n\r\n")
            await stream.send_all(head + b"\r\n\r\n")
            with trio.fail_after(STEP_S):
                interim = await stream.receive_some(65536)
                assert interim.startswith(b"HTTP/1.1 100"), (edge, interim)
                await stream.send_all(body)
                data = b""
                while not (statuses := parse_responses(data)[0]):
                    data += await stream.receive_some(65536)
            assert statuses == [200], (edge, data)


async def test_a_request_that_trickles_in_past_its_deadline_is_answered_408_and_closed(tmp_path: pathlib.Path) -> None:
    server = ServerProcess(tmp_path, env={"PULSE_REQUEST_TIMEOUT_S": "1"}).start()
    try:
        host, port = server.url.removeprefix("http://").rsplit(":", 1)
        async with await trio.open_tcp_stream(host, int(port)) as stream:
            await stream.send_all(post()[:40])  # part of the head, then nothing
            data = b""
            with trio.fail_after(STEP_S):
                while chunk := await stream.receive_some(65536):
                    data += chunk
            assert data.startswith(b"HTTP/1.1 408"), data
            assert b"connection: close" in data
    finally:
        server.stop()


async def test_the_events_of_pipelined_requests_are_all_stored(edges: dict[str, ServerProcess]) -> None:
    server = edges["pulse"]
    bodies = [json.dumps({"sessionId": "edge-pipe", "eventType": "click", "eventId": f"edge-pipe-{i}",
                          "eventData": {"i": i}}).encode() for i in range(20)]
    statuses, closed = await exchange(server.url, b"".join(post(body) for body in bodies), len(bodies))
    assert statuses == [200] * 20 and not closed
    stats, _ = await exchange(server.url, HEALTH, 1)
    import httpx

    async with httpx.AsyncClient(base_url=server.url) as client:
        answer = await client.get("/api/events", params={"sessionId": "edge-pipe", "limit": 100},
                                  headers={"authorization": f"Bearer {server.secret_key}"})
    assert answer.status_code == 200, answer.text
    names = sorted(event["id"] for event in answer.json()["events"])
    assert len(names) == 20, answer.json()
