"""Webhooks end to end: a real server, a real receiver on loopback (an HTTP server in this test),
Standard Webhooks signatures checked by an independent verifier written from the spec (and by the
reference library ``standardwebhooks`` when it is installed), retries under one webhook-id, a
pending delivery surviving kill -9, dead letters and replay, and a slow receiver that never slows
ingestion."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import inspect
import pathlib
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import httpx
import msgspec
import pytest
import trio

from tests.e2e.server_process import ServerProcess
from tests.services.postgres import postgres_dsn, postgres_server  # noqa: F401 (fixtures)

WAIT_S = 60.0  # bound on any wait; passing tests take far less
WEBHOOKS = "/api/v1/behavioral/webhooks"
SECRET = "whsec_" + base64.b64encode(b"pulse-e2e-webhook-secret-32bytes").decode()


class Received(msgspec.Struct):
    headers: dict[str, str]
    body: bytes
    answered: int


class Receiver:
    """A loopback HTTP server answering each POST with ``answer(n)`` (n = 1 for the first), after
    ``delay_s``. Records every request; ``in_handler`` is set while a request is being answered."""

    def __init__(self, answer: Callable[[int], int], *, port: int = 0, delay_s: float = 0.0) -> None:
        self.answer = answer
        self.delay_s = delay_s
        self.received: list[Received] = []
        self.in_handler = threading.Event()
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.in_handler.set()
                try:
                    time.sleep(receiver.delay_s)
                    with receiver.lock:
                        status = receiver.answer(len(receiver.received) + 1)
                        receiver.received.append(Received({k.lower(): v for k, v in self.headers.items()}, body,
                                                           status))
                    self.send_response(status)
                    self.send_header("content-length", "0")
                    self.end_headers()
                finally:
                    receiver.in_handler.clear()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/pulse"

    def successes(self) -> list[Received]:
        with self.lock:
            return [r for r in self.received if 200 <= r.answered < 300]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@contextmanager
def receiving(answer: Callable[[int], int], **options: Any) -> Iterator[Receiver]:
    receiver = Receiver(answer, **options)
    try:
        yield receiver
    finally:
        receiver.close()


def free_port() -> int:
    """A loopback port nobody listens on (connections to it are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def verify(secret: str, headers: dict[str, str], body: bytes) -> None:
    """Standard Webhooks verification, written from the specification's text: HMAC-SHA256 with the
    base64-decoded part of the secret after ``whsec_``, over ``{id}.{timestamp}.{body}``; the header
    lists space-separated ``v1,<base64>`` signatures; the timestamp is unix seconds, near now."""
    key = base64.b64decode(secret.split("_", 1)[1])
    content = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
    assert any(hmac.compare_digest(sig, "v1," + expected) for sig in headers["webhook-signature"].split(" "))
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 300
    try:
        import standardwebhooks  # the reference library, when installed
    except ImportError:
        return
    standardwebhooks.Webhook(secret).verify(body, headers)


async def wait_for(condition: Callable[[], Any], what: str) -> Any:
    """Poll ``condition`` (sync or async) until it answers something truthy; that answer."""
    with trio.move_on_after(WAIT_S):
        while True:
            found = condition()
            if inspect.isawaitable(found):
                found = await found
            if found:
                return found
            await trio.sleep(0.05)
    raise AssertionError(f"still waiting after {WAIT_S} s for {what}")


async def register(http: httpx.AsyncClient, url: str, events: list[str], **extra: Any) -> dict[str, Any]:
    answer = await http.post(WEBHOOKS, json={"url": url, "events": events, **extra})
    assert answer.status_code == 201, answer.text
    hook: dict[str, Any] = answer.json()["webhook"]
    return hook


async def track(http: httpx.AsyncClient, name: str, event_id: str) -> dict[str, Any]:
    answer = await http.post(f"/api/events/track/{name}", json={"serviceName": "shop", "eventId": event_id})
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def deliveries(http: httpx.AsyncClient, hook_id: str, status: str) -> list[dict[str, Any]]:
    answer = await http.get(f"{WEBHOOKS}/{hook_id}/deliveries", params={"status": status})
    assert answer.status_code == 200, answer.text
    rows: list[dict[str, Any]] = answer.json()["deliveries"]
    return rows


@asynccontextmanager
async def client_of(server: ServerProcess, key: str | None = None) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    async with httpx.AsyncClient(base_url=server.url, timeout=10, headers=headers) as http:
        yield http


# registration ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "ftp://example.com/x", "events": ["purchase"]}, "$.url"),
        ({"url": "example.com/x", "events": ["purchase"]}, "$.url"),
        ({"events": ["purchase"]}, "$.url"),
        ({"url": "https://example.com/x"}, "$.events"),
        ({"url": "https://example.com/x", "events": []}, "$.events"),
        ({"url": "https://example.com/x", "events": ["ok", 3]}, "$.events[1]"),
        ({"url": "https://example.com/x", "events": ["purchase"], "secret": "hunter2"}, "$.secret"),
        ({"url": "https://example.com/x", "events": ["purchase"], "secret": "whsec_c2hvcnQ="}, "$.secret"),
        ({"url": "https://example.com/x", "events": ["purchase"], "filter": {}}, "$.filter"),
    ],
)
async def test_bad_registrations_get_a_400_naming_the_field(client: httpx.AsyncClient, body: dict[str, Any],
                                                            field: str) -> None:
    answer = await client.post(WEBHOOKS, json=body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["field"] == field


async def test_register_list_delete_and_the_secret_shown_once(client: httpx.AsyncClient) -> None:
    given = await register(client, "https://example.com/a", ["purchase", "trigger_fired"], secret=SECRET)
    assert given["secret"] == SECRET and given["secretGenerated"] is False
    generated = await register(client, "http://example.com/b", ["workflow_action"])
    assert generated["secret"].startswith("whsec_") and generated["secretGenerated"] is True
    base64.b64decode(generated["secret"][6:], validate=True)
    listed = (await client.get(WEBHOOKS)).json()["webhooks"]
    assert [h["id"] for h in listed] == [given["id"], generated["id"]]
    assert all("secret" not in h for h in listed)
    assert listed[0]["events"] == ["purchase", "trigger_fired"] and listed[0]["status"] == "active"
    assert (await client.delete(f"{WEBHOOKS}/{given['id']}")).status_code == 200
    assert (await client.delete(f"{WEBHOOKS}/{given['id']}")).status_code == 404
    assert (await client.get(f"{WEBHOOKS}/{given['id']}/dead-letters")).status_code == 404
    assert [h["id"] for h in (await client.get(WEBHOOKS)).json()["webhooks"]] == [generated["id"]]


async def test_webhooks_need_the_secret_key_and_belong_to_its_project(keyed_server: ServerProcess) -> None:
    body = {"url": "https://example.com/a", "events": ["purchase"]}
    async with client_of(keyed_server) as anonymous:
        assert (await anonymous.post(WEBHOOKS, json=body)).status_code == 401
    async with client_of(keyed_server, keyed_server.public_key) as public:
        assert (await public.post(WEBHOOKS, json=body)).status_code == 403
        assert (await public.get(WEBHOOKS)).status_code == 403
    async with client_of(keyed_server, keyed_server.secret_key) as owner:
        hook = await register(owner, body["url"], body["events"])  # type: ignore[arg-type]
        other = (await owner.post("/api/admin/projects", json={"name": "other"})).json()
    async with client_of(keyed_server, other["secretKey"]) as stranger:
        assert (await stranger.get(WEBHOOKS)).json()["webhooks"] == []
        assert (await stranger.delete(f"{WEBHOOKS}/{hook['id']}")).status_code == 404


# delivery ---------------------------------------------------------------------------------------------
async def test_a_receiver_failing_twice_gets_one_verified_delivery_under_one_id(client: httpx.AsyncClient) -> None:
    with receiving(lambda n: 500 if n <= 2 else 204) as receiver:
        hook = await register(client, receiver.url, ["purchase"], secret=SECRET)
        tracked = await track(client, "purchase", "order-1")
        await wait_for(receiver.successes, "the successful attempt")
        (delivered,) = await wait_for(lambda: deliveries(client, hook["id"], "delivered"), "the delivered row")
    assert [r.answered for r in receiver.received] == [500, 500, 204]
    ids = {r.headers["webhook-id"] for r in receiver.received}
    assert ids == {delivered["id"]}  # the receiver's idempotency key, the same on every attempt
    for r in receiver.received:
        verify(SECRET, r.headers, r.body)
        assert r.headers["content-type"] == "application/json"
    stamps = [int(r.headers["webhook-timestamp"]) for r in receiver.received]
    assert stamps == sorted(stamps)  # each attempt signs its own time
    payload = msgspec.json.decode(receiver.received[-1].body)
    assert payload["type"] == "purchase" and payload["data"]["id"] == tracked["eventId"]
    assert payload["data"]["name"] == "purchase" and payload["data"]["payload"]["eventId"] == "order-1"
    assert payload["timestamp"].endswith("Z")
    assert delivered["attempts"] == 3 and delivered["lastStatus"] == 204 and delivered["lastError"] is None
    # the same event again (a client's retry) is a duplicate: no second delivery is recorded
    assert (await track(client, "purchase", "order-1"))["duplicate"] is True
    metrics = (await client.get("/metrics")).text
    assert 'pulse_webhook_attempts_total{node=' in metrics and 'outcome="failed"} 2.0' in metrics
    assert len(await deliveries(client, hook["id"], "pending")) == 0


async def test_a_pending_delivery_survives_kill_9_and_arrives_once(tmp_path: pathlib.Path) -> None:
    port = free_port()  # the receiver is down: connections are refused
    server = ServerProcess(tmp_path / "data").start()
    try:
        async with client_of(server) as http:
            hook = await register(http, f"http://127.0.0.1:{port}/hooks/pulse", ["signup"], secret=SECRET)
            await track(http, "signup", "user-7")

            async def failed_once() -> list[dict[str, Any]]:
                return [d for d in await deliveries(http, hook["id"], "pending") if d["attempts"] >= 1]

            (pending,) = await wait_for(failed_once, "a failed attempt")
            assert "ConnectError" in pending["lastError"]
        server.stop(signal.SIGKILL)
    finally:
        server.kill()
    with receiving(lambda n: 200, port=port) as receiver:
        restarted = ServerProcess(tmp_path / "data").start()
        try:
            async with client_of(restarted) as http:
                await wait_for(receiver.successes, "the delivery after the restart")
                (delivered,) = await wait_for(lambda: deliveries(http, hook["id"], "delivered"), "the delivered row")
        finally:
            assert restarted.stop() == 0
    assert delivered["id"] == pending["id"]
    assert [r.headers["webhook-id"] for r in receiver.received] == [pending["id"]]  # once
    verify(SECRET, receiver.received[0].headers, receiver.received[0].body)


async def test_a_delivery_past_its_retry_window_is_a_dead_letter_that_replays(tmp_path: pathlib.Path) -> None:
    healthy = threading.Event()
    server = ServerProcess(tmp_path / "data", env={"PULSE_WEBHOOK_RETRY_WINDOW": "3"}).start()
    try:
        with receiving(lambda n: 200 if healthy.is_set() else 503) as receiver:
            async with client_of(server) as http:
                hook = await register(http, receiver.url, ["checkout"], secret=SECRET)
                await track(http, "checkout", "cart-1")
                path = f"{WEBHOOKS}/{hook['id']}/dead-letters"

                async def dead() -> list[dict[str, Any]]:
                    rows: list[dict[str, Any]] = (await http.get(path)).json()["deliveries"]
                    return rows

                (letter,) = await wait_for(dead, "the dead letter")
                assert letter["status"] == "dead" and letter["attempts"] >= 2
                assert letter["lastStatus"] == 503 and letter["lastError"].startswith("HTTP 503")
                assert letter["payload"]["type"] == "checkout"
                failed = len(receiver.received)
                assert failed == letter["attempts"]
                assert 'pulse_webhook_dead_letters_total{node=' in (await http.get("/metrics")).text
                bad = await http.post(path + "/replay", json={"deliveryId": "msg_nope"})
                assert bad.status_code == 404 and bad.json()["error"]["field"] == "$.deliveryId"
                healthy.set()
                replay = await http.post(path + "/replay", json={"deliveryId": letter["id"]})
                assert replay.status_code == 200 and replay.json()["replayed"] == 1
                (delivered,) = await wait_for(lambda: deliveries(http, hook["id"], "delivered"), "the replay")
                assert await dead() == []
                assert (await http.post(path + "/replay")).json()["replayed"] == 0  # nothing left to replay
        assert delivered["id"] == letter["id"]
        assert {r.headers["webhook-id"] for r in receiver.received} == {letter["id"]}
        assert [r.answered for r in receiver.received] == [503] * failed + [200]
    finally:
        assert server.stop() == 0


async def test_a_slow_receiver_does_not_delay_ingest_answers(client: httpx.AsyncClient) -> None:
    with receiving(lambda n: 200, delay_s=5.0) as receiver:
        await register(client, receiver.url, ["purchase"], secret=SECRET)
        await track(client, "purchase", "slow-0")
        await wait_for(receiver.in_handler.is_set, "the delivery in flight")
        answered = 0
        for i in range(1, 21):  # a delivery is in flight (the receiver sleeps) all along
            answer = await track(client, "purchase" if i % 7 == 0 else "page_view", f"slow-{i}")
            assert answer["success"] is True
            answered += 1
        assert answered == 20
        assert receiver.in_handler.is_set() and receiver.received == []  # still the first delivery's sleep
        await wait_for(lambda: len(receiver.successes()) == 3, "all purchases delivered")


# a cluster ----------------------------------------------------------------------------------------------
def delivered_here(metrics: str) -> float:
    for line in metrics.splitlines():
        if line.startswith("pulse_webhook_attempts_total{") and 'outcome="delivered"' in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError("pulse_webhook_attempts_total missing from /metrics")


async def test_two_nodes_on_one_postgresql_deliver_each_webhook_once(
    tmp_path: pathlib.Path,
    postgres_dsn: str,  # noqa: F811 (the fixture imported above)
) -> None:
    events = 40
    nodes = [ServerProcess(tmp_path / f"node{i}", extra=["--database-url", postgres_dsn, "--node-id", f"wh-n{i}"])
             for i in range(2)]
    for node in nodes:
        node.start()
    try:
        with receiving(lambda n: 200, delay_s=0.5) as receiver:  # slow enough for both nodes to claim
            async with client_of(nodes[0]) as first, client_of(nodes[1]) as second:
                hook = await register(first, receiver.url, ["purchase"], secret=SECRET)
                for i in range(events):
                    await track(first, "purchase", f"cluster-{i}")

                async def all_delivered() -> bool:
                    return len(await deliveries(second, hook["id"], "delivered")) == events

                await wait_for(all_delivered, "every delivery")
                split = [delivered_here((await http.get("/metrics")).text) for http in (first, second)]
        ids = [r.headers["webhook-id"] for r in receiver.received]
        assert len(ids) == len(set(ids)) == events  # each delivery once, by one node
        assert sum(split) == events and all(split), split  # both nodes delivered a share
        for r in receiver.received:
            verify(SECRET, r.headers, r.body)
    finally:
        for node in nodes:
            assert node.stop() == 0, "".join(node.output)


# the triggers' notifications --------------------------------------------------------------------------
async def test_a_fired_trigger_reaches_a_trigger_fired_webhook(client: httpx.AsyncClient) -> None:
    trigger = {
        "name": "High Intent Exit Prevention",
        "conditions": {"eventType": "exit_intent",
                       "filters": [{"field": "timeOnPage", "operator": "greater_than", "value": 30000}]},
        "actions": [{"type": "show_exit_offer", "parameters": {"offerType": "discount", "urgency": "high"}}],
    }
    with receiving(lambda n: 200) as receiver:
        await register(client, receiver.url, ["trigger_fired"], secret=SECRET)
        created = await client.post("/api/v1/behavioral/triggers", json=trigger)
        assert created.status_code == 201, created.text
        at = time.time_ns() // 1_000_000
        event = {"eventType": "exit_intent", "sessionId": "wh-s1", "userId": "wh-u1", "timestamp": at,
                 "eventData": {"timeOnPage": 45000, "url": "/pricing"}}
        answer = (await client.post("/api/v1/behavioral/events", json=event)).json()
        assert [t["executed"] for t in answer["triggers"]] == [True], answer
        (got,) = await wait_for(receiver.successes, "the trigger_fired delivery")
    verify(SECRET, got.headers, got.body)
    payload = msgspec.json.decode(got.body)
    assert payload["type"] == "trigger_fired"
    assert payload["data"]["triggerId"] == created.json()["triggerId"]
    assert payload["data"]["sessionId"] == "wh-s1"
