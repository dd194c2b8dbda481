"""A method a path does not answer is a 405 whose Allow header lists the ones it does (RFC 9110
15.5.6), on the hot ASGI routes (server/app.py) and the Quart routes (server/read_app.py) alike, and
Allow says what /openapi.json declares. Also the two SSE routes, which the schemathesis run leaves
out (tests/e2e/test_openapi_contract.py): their refusals, and a bounded look at their answer."""

from __future__ import annotations

import re

import httpx
import pytest
import trio

from tests.e2e.server_process import ServerProcess
from tests.e2e.sse_client import STEP_S, SSEClient

UNDECLARED: tuple[str, ...] = ("TRACE", "PUT", "DELETE", "PATCH", "POST", "GET")
STREAMS = ("/api/events/stream", "/api/v1/behavioral/stream")
EXAMPLE_PARAMS = {"eventName": "signup", "sessionId": "s-1", "userId": "u-1", "name": "index.html", "triggerId": "trigger_1",
                  "webhookId": "wh_1", "workflowId": "workflow_1", "approvalId": "approval_1", "linkingId": "link_1",
                  "deletionId": "deletion_1"}


def allow(answer: httpx.Response) -> set[str]:
    return {m.strip() for m in answer.headers.get("allow", "").split(",") if m.strip()}


async def test_trace_on_a_stream_is_405_with_allow(client: httpx.AsyncClient) -> None:
    for path in STREAMS:
        for method in ("TRACE", "PUT", "DELETE", "POST", "HEAD"):
            answer = await client.request(method, path)
            assert answer.status_code == 405, (method, path, answer.text)
            assert allow(answer) == {"GET", "OPTIONS"}, (method, path)


@pytest.mark.parametrize("path", ["/api/v1/behavioral/events", "/api/v1/behavioral/batch", "/api/events/track/batch",
                                  "/api/events/track/signup"])
async def test_an_ingest_route_answers_other_methods_405(client: httpx.AsyncClient, path: str) -> None:
    for method in ("GET", "PUT", "DELETE", "PATCH", "TRACE"):
        answer = await client.request(method, path)
        assert answer.status_code == 405, (method, path, answer.text)
        assert allow(answer) == {"POST", "OPTIONS"}
        assert answer.json()["error"]["code"] == "method_not_allowed"


async def test_a_read_route_lists_get_head_and_options(client: httpx.AsyncClient) -> None:
    answer = await client.request("TRACE", "/api/events")
    assert answer.status_code == 405
    assert allow(answer) == {"GET", "HEAD", "OPTIONS"}
    assert answer.json()["error"]["code"] == "method_not_allowed"
    assert "TRACE" in answer.json()["error"]["reason"]
    models = await client.delete("/api/v1/behavioral/models")
    assert models.status_code == 405
    assert allow(models) == {"GET", "HEAD", "OPTIONS", "PUT"}


async def test_allow_matches_the_document_on_every_path(client: httpx.AsyncClient) -> None:
    """For each path of /openapi.json, every method it does not declare is a 405 whose Allow is
    exactly the declared methods, OPTIONS (CORS preflight), and HEAD where GET is served by Quart."""
    doc = (await client.get("/openapi.json")).json()
    checked = 0
    for template, operations in doc["paths"].items():
        declared = {method.upper() for method in operations}
        path = re.sub(r"\{(\w+)\}", lambda m: EXAMPLE_PARAMS[m.group(1)], template)
        expected = declared | {"OPTIONS"} | ({"HEAD"} if "GET" in declared and template not in STREAMS else set())
        for method in UNDECLARED:
            if method in declared:
                continue
            answer = await client.request(method, path)
            assert answer.status_code == 405, (method, path, answer.status_code, answer.text)
            assert allow(answer) == expected, (method, path, answer.headers.get("allow"))
            checked += 1
    assert checked >= 3 * len(doc["paths"])


async def test_a_stream_refuses_bad_parameters_before_streaming(client: httpx.AsyncClient) -> None:
    answer = await client.get("/api/v1/behavioral/stream", params={"subscriptions": "behavioral_events,nope"})
    assert answer.status_code == 400
    assert answer.json()["error"]["field"] == "subscriptions"
    answer = await client.get("/api/events/stream", headers={"Last-Event-ID": "not-an-id"})
    assert answer.status_code == 400
    assert answer.json()["error"]["field"] == "Last-Event-ID"


async def test_a_stream_answers_text_event_stream(server: ServerProcess, client: httpx.AsyncClient) -> None:
    """As the document says: 200, text/event-stream, messages whose data is JSON."""
    for path in STREAMS:
        async with SSEClient(f"{server.url}{path}?sessionId=s-doc") as sse:
            assert sse.status == 200
            assert sse.response_headers["content-type"].startswith("text/event-stream")
            sent = await client.post("/api/v1/behavioral/events", json={"eventType": "page_view", "sessionId": "s-doc"})
            assert sent.status_code == 200
            with trio.fail_after(STEP_S):
                _, message = await sse.next()
            assert isinstance(message["type"], str)
