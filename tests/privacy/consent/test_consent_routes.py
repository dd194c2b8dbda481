"""POST/GET /api/v1/behavioral/consent (server/privacy/consent_routes.py): the seed's body and answer,
400s naming the field, the project default, and projects kept apart."""

from __future__ import annotations

from typing import Any, Final

import httpx

from tests.e2e.server_process import ServerProcess
from tests.privacy.consent.helpers import CONSENT, EVENTS, consent, event

SEED_BODY: Final = {
    "userId": "user_456", "consentType": "behavioral_tracking", "consentStatus": "granted",
    "consentDate": "2024-01-01T10:00:00Z", "consentSource": "cookie_banner",
    "granularConsent": {"analytics": True, "marketing": True, "personalization": True, "advertising": False},
}


async def test_the_seed_body_is_recorded_and_answered(client: httpx.AsyncClient) -> None:
    answer = await client.post(CONSENT, json=SEED_BODY)
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["consentId"].startswith("consent_") and body["userId"] == "user_456"
    assert body["consentStatus"] == "granted" and body["consentDate"] == "2024-01-01T10:00:00.000Z"
    assert body["granularConsent"] == SEED_BODY["granularConsent"]
    assert body["recordedAt"].endswith("Z")
    # granted without granularConsent grants everything; denied with it grants nothing
    everything = (await client.post(CONSENT, json={"userId": "a", "consentStatus": "granted"})).json()
    assert all(everything["granularConsent"].values())
    nothing = (await client.post(CONSENT, json={**SEED_BODY, "userId": "b", "consentStatus": "denied"})).json()
    assert not any(nothing["granularConsent"].values())
    # a category left out of granularConsent is not granted
    partial = (await client.post(CONSENT, json={"userId": "c", "consentStatus": "granted",
                                                "granularConsent": {"analytics": True}})).json()
    assert partial["granularConsent"] == {"analytics": True, "marketing": False, "personalization": False,
                                          "advertising": False}
    view = (await client.get(f"{CONSENT}/user_456")).json()
    assert view["source"] == "record" and view["consentType"] == "behavioral_tracking"
    assert view["consentSource"] == "cookie_banner" and view["granularConsent"] == SEED_BODY["granularConsent"]
    assert [c["consentId"] for c in view["auditTrail"]] == [body["consentId"]]


async def test_bad_bodies_get_400s_naming_the_field(client: httpx.AsyncClient) -> None:
    cases: list[tuple[Any, str]] = [
        ({**SEED_BODY, "granularConsent": {"analytics": True, "tracking": True}}, "$.granularConsent.tracking"),
        ({**SEED_BODY, "granularConsent": {"analytics": "yes"}}, "$.granularConsent.analytics"),
        ({**SEED_BODY, "granularConsent": ["analytics"]}, "$.granularConsent"),
        ({**SEED_BODY, "consentStatus": "maybe"}, "$.consentStatus"),
        ({**SEED_BODY, "consentDate": "yesterday"}, "$.consentDate"),
        ({**SEED_BODY, "consentDate": 1704103200000}, "$.consentDate"),
        ({k: v for k, v in SEED_BODY.items() if k != "userId"}, "$.userId"),
        ({**SEED_BODY, "userId": ""}, "$.userId"),
        ({**SEED_BODY, "consentSource": 7}, "$.consentSource"),
        ({**SEED_BODY, "colour": "red"}, "$.colour"),
        ([SEED_BODY], "$"),
    ]
    for body, field in cases:
        answer = await client.post(CONSENT, json=body)
        assert answer.status_code == 400, (body, answer.text)
        assert answer.json()["error"]["field"] == field, answer.text
    assert (await client.post(CONSENT, content=b"{nope")).status_code == 400
    bad_limit = await client.get(f"{CONSENT}/user_456", params={"limit": 0})
    assert bad_limit.status_code == 400 and bad_limit.json()["error"]["field"] == "limit"
    assert (await client.get(f"{CONSENT}/user_456")).json()["auditTrail"] == []  # nothing was recorded


async def test_projects_are_apart_and_the_default_is_a_project_setting(keyed_server: ServerProcess) -> None:
    base = keyed_server.url
    admin = {"Authorization": f"Bearer {keyed_server.secret_key}"}
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        created = (await http.post("/api/admin/projects", json={"name": "shop"}, headers=admin)).json()
        shop_public = {"Authorization": f"Bearer {created['publicKey']}"}
        shop_secret = {"Authorization": f"Bearer {created['secretKey']}"}
        mine_public = {"Authorization": f"Bearer {keyed_server.public_key}"}
        # a consent banner holds the public key: it may record, not read
        denied = await http.post(CONSENT, json=consent("u-x", "denied"), headers=mine_public)
        assert denied.status_code == 201
        assert (await http.get(f"{CONSENT}/u-x", headers=mine_public)).status_code == 403
        # the other project's u-x is its own user: no record, its events stored
        other = (await http.get(f"{CONSENT}/u-x", headers=shop_secret)).json()
        assert other["source"] == "project_default" and other["auditTrail"] == [] and other["consentId"] is None
        stored = (await http.post(EVENTS, json=event("u-x", "s-x"), headers=shop_public)).json()
        assert stored["eventId"] is not None
        assert (await http.post(EVENTS, json=event("u-x", "s-x"), headers=mine_public)).json()["stored"] is False
        # the shop's default becomes "denied": its users without a record are dropped, those granted are not
        policy = await http.patch(f"/api/admin/projects/{created['id']}/policy", json={"consentDefault": "denied"},
                                  headers=admin)
        assert policy.status_code == 200, policy.text
        dropped = (await http.post(EVENTS, json=event("u-new", "s-new"), headers=shop_public)).json()
        assert dropped["stored"] is False and dropped["dropped"]["category"] == "analytics"
        anonymous = (await http.post(EVENTS, json=event(None, "s-anon"), headers=shop_public)).json()
        assert anonymous["stored"] is False  # the subject is the session: no record, the default
        view = (await http.get(f"{CONSENT}/u-new", headers=shop_secret)).json()
        assert view["source"] == "project_default" and view["consentStatus"] == "denied"
        assert not any(view["granularConsent"].values())
        assert (await http.post(CONSENT, json=consent("u-new"), headers=shop_public)).status_code == 201
        assert (await http.post(EVENTS, json=event("u-new", "s-new"), headers=shop_public)).json()["eventId"] is not None
        # the default project's default did not change
        assert (await http.post(EVENTS, json=event("u-new", "s-new"), headers=mine_public)).json()["eventId"] is not None
