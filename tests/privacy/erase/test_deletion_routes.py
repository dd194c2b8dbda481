"""DELETE /api/v1/behavioral/data/{userId} end to end on a real server: afterwards nothing of the
user is readable through the routes, the statistics drop by exactly the user's share, and the other
user and the other project are untouched. The status routes report the request."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.e2e.server_process import ServerProcess

BASE = "/api/v1/behavioral/data"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def tracked(user: str | None, session: str, service: str, i: int, **extra: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {"serviceName": service, "sessionId": session, "timestamp": now_ms() - 60_000 + i,
                               "statusCode": 500 if i % 3 == 0 else 200, "responseTimeMs": 10 + i, **extra}
    if user is not None:
        payload["userId"] = user
    return {"eventName": "page_view" if i % 2 else "click", "payload": payload}


def dataset() -> list[dict[str, Any]]:
    """u1: 6 events on s1 and 2 anonymous ones there before login; 4 on s2; u2: 5 on s3."""
    events = [tracked(None, "s1", "web", i) for i in range(2)]
    events += [tracked("u1", "s1", "web" if i % 2 else "api", i) for i in range(6)]
    events += [tracked("u1", "s2", "api", i) for i in range(4)]
    events += [tracked("u2", "s3", "web", i) for i in range(5)]
    return events


async def total(http: httpx.AsyncClient, key: str, **params: str) -> int:
    answer = await http.get("/api/events", params={**params, "limit": "1"}, headers={"X-API-Key": key})
    assert answer.status_code == 200, answer.text
    return int(answer.json()["filtered"])


async def services(http: httpx.AsyncClient, key: str) -> dict[str, int]:
    answer = (await http.get("/api/events/services", headers={"X-API-Key": key})).json()
    return {s["serviceName"]: s["eventCount"] for s in answer["services"]}


async def ingest(http: httpx.AsyncClient, key: str, events: list[dict[str, Any]]) -> None:
    answer = await http.post("/api/events/track/batch", json={"events": events}, headers={"X-API-Key": key})
    assert answer.status_code == 200 and answer.json()["processedCount"] == len(events), answer.text


async def test_a_deleted_user_is_gone_from_every_route_and_only_they_are(keyed_server: ServerProcess) -> None:
    sk = keyed_server.secret_key
    async with httpx.AsyncClient(base_url=keyed_server.url, timeout=30) as http:
        made = await http.post("/api/admin/projects", json={"name": "other"}, headers={"X-API-Key": sk})
        other_sk, other_pk = made.json()["secretKey"], made.json()["publicKey"]
        await ingest(http, keyed_server.public_key, dataset())
        await ingest(http, other_pk, dataset())  # the same user ids in another project
        head = {"X-API-Key": sk}
        assert (await http.get("/api/v1/behavioral/users/u1", headers=head)).json()["eventCount"] == 10
        assert (await http.get("/api/v1/behavioral/sessions/s1", headers=head)).status_code == 200
        assert (await http.get("/api/v1/behavioral/patterns", params={"userId": "u1"}, headers=head)).status_code == 200
        before = await services(http, sk)
        u2_before = (await http.get("/api/v1/behavioral/users/u2", headers=head)).json()["eventCount"]

        # the public key may not erase; bad options are named
        public = await http.delete(f"{BASE}/u1", headers={"X-API-Key": keyed_server.public_key})
        assert public.status_code == 403
        bad = await http.delete(f"{BASE}/u1", params={"anonymizeOnly": "maybe"}, headers=head)
        assert bad.status_code == 400 and "anonymizeOnly" in bad.text
        bad_body = await http.request("DELETE", f"{BASE}/u1", json={"cascade": True}, headers=head)
        assert bad_body.status_code == 400 and "cascade" in bad_body.text
        assert (await total(http, sk, userId="u1")) == 10  # nothing was done by the refused requests

        answer = await http.delete(f"{BASE}/u1", params={"cascadeDelete": "true"}, headers=head)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["status"] == "completed" and body["deletionId"].startswith("del_")
        assert body["dataRemoved"] == {"events": 12, "sessions": 2, "profiles": 1}
        assert body["completionDate"].endswith("Z")

        # nothing of u1 (nor of the sessions' anonymous events) through any route
        assert await total(http, sk, userId="u1") == 0
        assert await total(http, sk, sessionId="s1") == 0
        assert await total(http, sk, sessionId="s2") == 0
        assert (await http.get("/api/v1/behavioral/users/u1", headers=head)).status_code == 404
        assert (await http.get("/api/v1/behavioral/sessions/s1", headers=head)).status_code == 404
        assert (await http.get("/api/v1/behavioral/sessions/s2", headers=head)).status_code == 404
        assert (await http.get("/api/v1/behavioral/patterns", params={"userId": "u1"}, headers=head)).status_code == 404
        exported = await http.get("/api/events/export", params={"format": "json"}, headers=head)
        assert "u1" not in exported.text and '"s1"' not in exported.text
        # the statistics drop by exactly the user's share: web had 2 + 3 of theirs, api 3 + 4 (all of it)
        assert before == {"web": 10, "api": 7}
        assert await services(http, sk) == {"web": 5}
        # the other user and the other project are untouched
        assert (await http.get("/api/v1/behavioral/users/u2", headers=head)).json()["eventCount"] == u2_before
        assert await total(http, other_sk, userId="u1") == 10
        assert await total(http, other_sk, sessionId="s1") == 8

        # the status routes, per project
        status = (await http.get(f"{BASE}/u1", headers=head)).json()
        assert status["deletionId"] == body["deletionId"] and status["status"] == "completed"
        assert [r["deletionId"] for r in status["requests"]] == [body["deletionId"]]
        by_id = await http.get(f"{BASE}/deletions/{body['deletionId']}", headers=head)
        assert by_id.json()["dataRemoved"] == body["dataRemoved"]
        assert (await http.get(f"{BASE}/deletions/{body['deletionId']}", headers={"X-API-Key": other_sk})).status_code == 404
        assert (await http.get(f"{BASE}/u1", headers={"X-API-Key": other_sk})).status_code == 404

        # another project's key deletes in its own project only
        unknown = await http.delete(f"{BASE}/u2", headers={"X-API-Key": other_sk}, params={"cascadeDelete": "false"})
        assert unknown.json()["dataRemoved"] == {"events": 5, "sessions": 1, "profiles": 1}
        assert (await http.get("/api/v1/behavioral/users/u2", headers=head)).json()["eventCount"] == u2_before


@pytest.mark.parametrize("options", [{"anonymizeOnly": "true"}])
async def test_anonymizing_keeps_the_counts_and_drops_the_identity(keyed_server: ServerProcess,
                                                                   options: dict[str, str]) -> None:
    sk = keyed_server.secret_key
    head = {"X-API-Key": sk}
    async with httpx.AsyncClient(base_url=keyed_server.url, timeout=30) as http:
        await ingest(http, keyed_server.public_key, dataset())
        before = await services(http, sk)
        answer = await http.delete(f"{BASE}/u1", params=options, headers=head)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["dataAnonymized"] == {"events": 12, "sessions": 2, "profiles": 1}
        assert body["dataRemoved"] == {"events": 0, "sessions": 0, "profiles": 1}
        assert await services(http, sk) == before
        assert await total(http, sk, userId="u1") == 0
        assert await total(http, sk, sessionId="s1") == 0
        assert await total(http, sk) == 17
        assert (await http.get("/api/v1/behavioral/users/u1", headers=head)).status_code == 404
        listing = (await http.get("/api/events", params={"limit": "100"}, headers=head)).json()
        assert "u1" not in str(listing)
