"""POST /api/v1/behavioral/events/privacy-compliant end to end: what GET /api/events shows of the
stored event for each anonymization level, the proxy rule, retention, consent, the 400s, the logs."""

from __future__ import annotations

import json
import pathlib
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.e2e.server_process import ServerProcess, serving
from tests.privacy.limits.test_units import CHROME

PATH = "/api/v1/behavioral/events/privacy-compliant"
UA = CHROME + " PulsePrivacyProbe/7.3"  # a token no generalised user agent can contain


def body(anonymization: str = "low", **changes: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "anonymizedSessionId": "anon_session_123",
        "consentLevel": "analytics_only",
        "eventType": "page_view",
        "eventData": {"url": "https://shop.example/product/category?email=a%40b.c#top",
                      "timestamp": 1703123456789, "performance": {"loadTime": 1250}, "userId": "user_456"},
        "privacySettings": {"anonymization": anonymization, "retention": "30_days", "sharing": "none"},
    }  # fmt: skip
    event.update(changes)
    return event


def events(server: ServerProcess, key: str | None = None) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    answer = httpx.get(f"{server.url}/api/events", params={"limit": 1000}, headers=headers)
    assert answer.status_code == 200, answer.text
    found: list[dict[str, Any]] = answer.json()["events"]
    return found


@pytest.fixture
def proxied(tmp_path: pathlib.Path, request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    """A loopback server that trusts itself as a proxy, so a test can set the client's address."""
    edge = getattr(request, "param", "pulse")
    with serving(tmp_path / "data", extra=["--trusted-proxies", "127.0.0.1", "--edge", edge,
                                            "--log-level", "debug"]) as proc:  # fmt: skip
        yield proc


def send(server: ServerProcess, event: dict[str, Any], *, ip: str = "203.0.113.77", key: str | None = None) -> httpx.Response:
    headers = {"User-Agent": UA, "X-Forwarded-For": ip}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return httpx.post(f"{server.url}{PATH}", json=event, headers=headers)


@pytest.mark.parametrize("proxied", ["pulse", "hypercorn"], indirect=True)
def test_each_level_stores_what_it_promises_and_nothing_more(proxied: ServerProcess) -> None:
    answers = {level: send(proxied, body(level)) for level in ("none", "low", "high")}
    for level, answer in answers.items():
        assert answer.status_code == 200, answer.text
        assert answer.json()["stored"] is True and answer.json()["anonymization"] == level
    stored = {e["payload"]["privacy"]["anonymization"]: e for e in events(proxied)}
    none, low, high = stored["none"], stored["low"], stored["high"]

    assert none["sessionId"] == "anon_session_123"
    assert none["payload"]["context"] == {"ip": "203.0.113.77", "userAgent": UA}
    assert none["payload"]["eventData"]["url"].endswith("?email=a%40b.c#top")

    assert low["payload"]["context"] == {"ip": "203.0.113.0", "userAgent": "Chrome 120"}
    assert low["payload"]["eventData"]["url"] == "https://shop.example/product/category"
    assert low["sessionId"].startswith("anon_") and low["sessionId"] != "anon_session_123"
    assert low["payload"]["eventData"]["userId"].startswith("anon_")
    assert low["payload"]["privacy"] == {"anonymization": "low", "retention": "30_days", "sharing": "none",
                                         "consentLevel": "analytics_only"}  # fmt: skip

    assert high["payload"]["context"] == {"userAgent": "Chrome"}
    assert high["payload"]["eventData"]["url"] == "/product/category"
    assert high["sessionId"] == low["sessionId"]  # one salt per project: the same pseudonym
    assert answers["high"].json()["anonymizedSessionId"] == high["sessionId"]

    # neither the full address nor the exact user agent of an anonymized event is anywhere
    anonymized = json.dumps([low, high])
    assert "203.0.113.77" not in anonymized and "PulsePrivacyProbe" not in anonymized
    proxied.stop()
    logged = "".join(proxied.output)
    assert "203.0.113.77" not in logged and "PulsePrivacyProbe" not in logged  # --log-level debug


def test_forwarded_for_counts_only_behind_a_trusted_proxy(server: ServerProcess) -> None:
    assert send(server, body("none")).status_code == 200  # no --trusted-proxies: the header is ignored
    [event] = events(server)
    assert event["payload"]["context"]["ip"] == "127.0.0.1"


def test_the_pseudonym_differs_between_projects(keyed_server: ServerProcess) -> None:
    admin = {"Authorization": f"Bearer {keyed_server.secret_key}"}
    other = httpx.post(f"{keyed_server.url}/api/admin/projects", json={"name": "other"}, headers=admin).json()
    assert send(keyed_server, body("high"), key=keyed_server.public_key).status_code == 200
    assert send(keyed_server, body("high"), key=other["publicKey"]).status_code == 200
    [mine] = events(keyed_server, keyed_server.secret_key)
    [theirs] = events(keyed_server, other["secretKey"])
    assert mine["sessionId"].startswith("anon_") and theirs["sessionId"].startswith("anon_")
    assert mine["sessionId"] != theirs["sessionId"]


def test_retention_sets_expires_at_and_bad_settings_are_400s(server: ServerProcess) -> None:
    before = time.time()
    answer = send(server, body("low", privacySettings={"anonymization": "low", "retention": "2_weeks"}))
    after = time.time()
    assert answer.status_code == 200, answer.text
    expires = datetime.fromisoformat(answer.json()["expiresAt"].replace("Z", "+00:00")).timestamp()
    assert before + 14 * 86_400 - 1 <= expires <= after + 14 * 86_400 + 1
    kept = send(server, body("low", privacySettings={"anonymization": "low"}))
    assert kept.json()["expiresAt"] is None and kept.json()["retention"] is None  # the project's retention
    for changes, field in (
        ({"privacySettings": {"retention": "forever"}}, "$.privacySettings.retention"),
        ({"privacySettings": {"anonymization": "medium"}}, "$.privacySettings.anonymization"),
        ({"consentLevel": "maybe"}, "$.consentLevel"),
        ({"anonymizedSessionId": None}, "$.anonymizedSessionId"),
    ):
        refused = send(server, body("low", **changes))
        assert refused.status_code == 400 and refused.json()["error"]["field"] == field, refused.text
    assert len(events(server)) == 2


def test_no_analytics_consent_is_answered_and_never_stored(server: ServerProcess) -> None:
    for level in ("none", "essential"):
        answer = send(server, body("low", consentLevel=level))
        assert answer.status_code == 200, answer.text
        assert answer.json()["stored"] is False
        assert answer.json()["dropped"]["reason"] == "consent" and answer.json()["dropped"]["category"] == "analytics"
    assert events(server) == []
    drops = httpx.get(f"{server.url}/api/v1/behavioral/monitoring/performance").json()["drops"]
    assert drops["consent_analytics"] == 2
