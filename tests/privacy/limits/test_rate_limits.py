"""Rate limits end to end: 429 with Retry-After past the burst, nothing of a refused request
stored and everything answered 2xx stored, per key and per client IP, on both edges; the CLI."""

from __future__ import annotations

import base64
import pathlib
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.server_process import ROOT, ServerProcess, serving
from tests.e2e.ws_client import Client

RATE = 0.1  # requests per second: no token comes back while a test sends its requests (one per 10 s)


@pytest.fixture(params=["pulse", "hypercorn"])
def keyed(tmp_path: pathlib.Path, request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    with serving(tmp_path / "data", host="0.0.0.0", extra=["--edge", request.param, "--trusted-proxies", "127.0.0.1"]) as proc:
        yield proc


def new_project(server: ServerProcess, name: str, policy: dict[str, Any]) -> dict[str, Any]:
    admin = {"Authorization": f"Bearer {server.secret_key}"}
    project: dict[str, Any] = httpx.post(f"{server.url}/api/admin/projects", json={"name": name}, headers=admin).json()
    changed = httpx.patch(f"{server.url}/api/admin/projects/{project['id']}/policy", json=policy, headers=admin)
    assert changed.status_code == 200, changed.text
    return project


def stored_count(server: ServerProcess, secret_key: str) -> int:
    answer = httpx.get(f"{server.url}/api/events", params={"limit": 1000}, headers={"Authorization": f"Bearer {secret_key}"})
    assert answer.status_code == 200, answer.text
    return int(answer.json()["total"])


def test_past_the_burst_a_key_gets_429_and_only_2xx_answers_are_stored(keyed: ServerProcess) -> None:
    project = new_project(keyed, "limited", {"rateLimit": RATE, "rateLimitBurst": 5})
    key = {"Authorization": f"Bearer {project['publicKey']}"}
    routes = [  # every kind of ingest route takes from the same bucket
        ("/api/v1/behavioral/events", {"eventType": "click", "sessionId": "s1"}),
        ("/api/v1/behavioral/batch", {"events": [{"eventType": "click", "sessionId": "s1"}] * 3}),
        ("/api/events/track/signup", {"userId": "u1"}),
        ("/api/events/track/batch", {"events": [{"eventName": "a"}, {"eventName": "b"}]}),
        ("/api/v1/behavioral/events/privacy-compliant",
         {"anonymizedSessionId": "s2", "consentLevel": "full", "eventType": "page_view"}),
        ("/api/v1/behavioral/events", {"eventType": "click", "sessionId": "s1"}),
        ("/api/v1/behavioral/batch", {"events": [{"eventType": "click", "sessionId": "s1"}] * 4}),
    ]  # fmt: skip
    answers = [httpx.post(f"{keyed.url}{path}", json=body, headers=key) for path, body in routes]
    assert [a.status_code for a in answers] == [200] * 5 + [429, 429], [a.text for a in answers]
    refused = answers[5]
    assert 1 <= int(refused.headers["retry-after"]) <= 10  # the bucket's refill time, whole seconds
    assert refused.json()["success"] is False and refused.json()["error"]["code"] == "rate_limited"
    assert stored_count(keyed, project["secretKey"]) == 1 + 3 + 1 + 2 + 1  # the five 200s, and nothing else
    unlimited = {"Authorization": f"Bearer {keyed.public_key}"}  # another project: its own (absent) limits
    assert httpx.post(f"{keyed.url}/api/v1/behavioral/events", json={"eventType": "x"}, headers=unlimited).status_code == 200
    drops = httpx.get(f"{keyed.url}/api/v1/behavioral/monitoring/performance",
                      headers={"Authorization": f"Bearer {keyed.secret_key}"}).json()["drops"]  # fmt: skip
    assert drops["rate_limited"] == 2


def test_each_client_ip_has_its_own_bucket(keyed: ServerProcess) -> None:
    project = new_project(keyed, "per-ip", {"ipRateLimit": RATE})
    key = project["publicKey"]

    def post(ip: str) -> int:
        headers = {"Authorization": f"Bearer {key}", "X-Forwarded-For": ip}
        return httpx.post(f"{keyed.url}/api/v1/behavioral/events", json={"eventType": "view"}, headers=headers).status_code

    assert [post("198.51.100.1"), post("198.51.100.2"), post("198.51.100.1"), post("198.51.100.2")] == [200, 200, 429, 429]
    assert stored_count(keyed, project["secretKey"]) == 2


def test_a_segment_request_with_its_key_in_basic_auth_is_limited(keyed: ServerProcess) -> None:
    project = new_project(keyed, "segment", {"rateLimit": RATE, "rateLimitBurst": 1})
    basic = {"Authorization": "Basic " + base64.b64encode(f"{project['publicKey']}:".encode()).decode()}
    track = {"type": "track", "event": "Signed Up", "userId": "u1"}
    codes = [httpx.post(f"{keyed.url}/v1/track", json=track, headers=basic).status_code for _ in range(2)]
    assert codes == [200, 429]
    assert stored_count(keyed, project["secretKey"]) == 1


def test_segment_and_posthog_keys_sent_in_the_body_are_limited(keyed: ServerProcess) -> None:
    project = new_project(keyed, "body-keys", {"rateLimit": RATE, "rateLimitBurst": 2})
    segment = {"writeKey": project["publicKey"], "batch": [{"type": "track", "event": "Viewed", "userId": "u1"}]}
    posthog = {"api_key": project["publicKey"], "batch": [{"event": "viewed", "distinct_id": "u2"}]}
    codes = [
        httpx.post(f"{keyed.url}/v1/batch", json=segment).status_code,
        httpx.post(f"{keyed.url}/batch/", json=posthog).status_code,
        httpx.post(f"{keyed.url}/v1/batch", json=segment).status_code,
        httpx.post(f"{keyed.url}/batch/", json=posthog).status_code,
    ]
    assert codes == [200, 200, 429, 429]
    assert stored_count(keyed, project["secretKey"]) == 2


def test_the_cli_creates_a_project_with_limits_that_the_admin_route_shows(tmp_path: pathlib.Path) -> None:
    data = tmp_path / "data"

    def pulse(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "server.cli", "project", *args, "--data-dir", str(data)],
                              cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)  # fmt: skip

    created = pulse("create", "shop", "--rate-limit", "20", "--ip-rate-limit", "5", "--retention-days", "30",
                    "--consent-default", "denied")  # fmt: skip
    assert created.returncode == 0, created.stderr
    changed = pulse("policy", "shop", "--rate-limit-burst", "40", "--adaptive-sampling", "on")
    assert changed.returncode == 0, changed.stderr
    bad = pulse("policy", "shop", "--rate-limit", "-3")
    assert bad.returncode == 2 and "--rate-limit" in bad.stderr
    missing = pulse("policy", "nope", "--rate-limit", "3")
    assert missing.returncode == 1 and "no project named 'nope'" in missing.stderr
    project_id = created.stdout.split("\t")[1]
    with serving(data, host="0.0.0.0") as server:
        admin = {"Authorization": f"Bearer {server.secret_key}"}
        policy = httpx.get(f"{server.url}/api/admin/projects/{project_id}/policy", headers=admin).json()
    assert policy == {"consentDefault": "denied", "rateLimit": 20.0, "rateLimitBurst": 40.0, "ipRateLimit": 5.0,
                      "adaptiveSampling": True, "retentionDays": 30}  # fmt: skip


async def test_each_websocket_ingest_message_takes_a_token(keyed: ServerProcess) -> None:
    project = new_project(keyed, "socket", {"rateLimit": RATE, "rateLimitBurst": 2})
    ws = await Client.connect(keyed.url, f"/api/v1/behavioral/stream?key={project['publicKey']}")
    await ws.send({"type": "connection", "sessionId": "w1"})
    assert (await ws.json())["type"] == "connection_ack"
    answers = []
    for n in range(3):
        await ws.send({"type": "event", "requestId": f"r{n}", "event": {"eventType": "click", "sessionId": "w1"}})
        answer = await ws.json()
        while answer.get("requestId") != f"r{n}":  # the session's own stream messages come too
            answer = await ws.json()
        answers.append(answer)
    await ws.aclose()
    assert [a["type"] for a in answers] == ["ack", "ack", "error"], answers
    assert answers[2]["code"] == "rate_limited" and answers[2]["requestId"] == "r2" and answers[2]["retryAfter"] >= 1
    assert stored_count(keyed, project["secretKey"]) == 2
