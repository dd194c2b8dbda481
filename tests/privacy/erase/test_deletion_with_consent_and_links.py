"""An erasure meets the other privacy parts: the user's later events are dropped (consent stage)
until consent is granted again, and the user's linked devices and their links go with the user."""

from __future__ import annotations

import time

import httpx

from tests.e2e.server_process import ServerProcess

BEHAVIORAL = "/api/v1/behavioral"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def send(http: httpx.AsyncClient, events: list[dict[str, object]]) -> dict[str, object]:
    answer = await http.post(f"{BEHAVIORAL}/batch", json={"events": events})
    assert answer.status_code == 200, answer.text
    body: dict[str, object] = answer.json()
    return body


async def count(http: httpx.AsyncClient, **params: str) -> int:
    answer = await http.get("/api/events", params={**params, "limit": "1"})
    assert answer.status_code == 200, answer.text
    return int(answer.json()["filtered"])


async def test_a_deleted_users_later_events_are_dropped_until_consent_is_granted_again(server: ServerProcess) -> None:
    at = now_ms() - 60_000
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        await send(http, [{"eventType": "page_view", "sessionId": "d1", "userId": "gone", "timestamp": at + i} for i in range(3)])
        erased = await http.delete(f"{BEHAVIORAL}/data/gone")
        assert erased.status_code == 200 and erased.json()["dataRemoved"]["events"] == 3, erased.text

        later = await send(http, [{"eventType": "click", "sessionId": "d2", "userId": "gone", "timestamp": at + 10}])
        assert later["stored"] == 0 and later["dropped"] == 1
        assert later["results"][0]["dropped"] == {"reason": "consent", "category": "analytics",
                                                  "detail": later["results"][0]["dropped"]["detail"]}
        assert await count(http, userId="gone") == 0
        trail = (await http.get(f"{BEHAVIORAL}/consent/gone")).json()
        assert trail["auditTrail"][0]["consentSource"] == "deletion"  # the suppression is on record

        granted = await http.post(f"{BEHAVIORAL}/consent", json={"userId": "gone", "consentStatus": "granted"})
        assert granted.status_code == 201, granted.text
        again = await send(http, [{"eventType": "click", "sessionId": "d3", "userId": "gone", "timestamp": at + 20}])
        assert again["stored"] == 1
        assert await count(http, userId="gone") == 1


async def test_an_erasure_takes_the_users_linked_devices_and_their_links(server: ServerProcess) -> None:
    at = now_ms() - 60_000
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        await send(http, [{"eventType": "page_view", "sessionId": "phone", "userId": "ana", "timestamp": at + i}
                          for i in range(2)])  # fmt: skip
        await send(http, [{"eventType": "page_view", "sessionId": "laptop", "timestamp": at + 10 + i} for i in range(4)])
        await send(http, [{"eventType": "page_view", "sessionId": "stranger", "timestamp": at + 20}])
        body = {"primarySessionId": "phone", "secondarySessionId": "laptop", "linkingMethod": "user_login"}
        linked = await http.post(f"{BEHAVIORAL}/cross-device/link", json=body)
        assert linked.status_code == 201, linked.text
        linking_id = linked.json()["linkingId"]

        erased = await http.delete(f"{BEHAVIORAL}/data/ana")
        assert erased.status_code == 200, erased.text
        assert erased.json()["dataRemoved"] == {"events": 6, "sessions": 2, "profiles": 1}
        assert await count(http, sessionId="laptop") == 0  # the linked anonymous device was the same person
        assert await count(http, sessionId="stranger") == 1
        assert (await http.delete(f"{BEHAVIORAL}/cross-device/link/{linking_id}")).status_code == 404
        assert (await http.get(f"{BEHAVIORAL}/cross-device/sync/ana")).status_code == 404
