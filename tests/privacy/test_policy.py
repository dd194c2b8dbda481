"""Project policies: stored on both backends with a salt written once, and the admin route."""

from __future__ import annotations

import httpx
import msgspec
import pytest

from protocol.errors import InvalidInput
from protocol.policy import DEFAULT_POLICY, ProjectPolicy, patched
from storage.base import Store
from tests.e2e.server_process import ServerProcess
from tests.storage.conftest import *  # noqa: F403 (the sqlite+postgres store fixtures)


async def test_a_policy_is_stored_and_its_salt_never_changes(store: Store) -> None:
    assert await store.project_policies() == {}
    first = await store.put_project_policy("prj_a", ProjectPolicy(rate_limit=20.0), 1)
    assert first.rate_limit == 20.0 and len(first.salt) == 32
    second = await store.put_project_policy("prj_a", ProjectPolicy(consent_default="denied", salt="other"), 2)
    assert second.salt == first.salt and second.consent_default == "denied" and second.rate_limit is None
    assert await store.project_policies() == {"prj_a": second}


def test_a_patch_names_the_bad_field() -> None:
    with pytest.raises(InvalidInput) as bad:
        patched(DEFAULT_POLICY, {"rateLimit": -1})
    assert bad.value.field == "$.rateLimit"
    with pytest.raises(InvalidInput) as unknown:
        patched(DEFAULT_POLICY, {"rateLimits": 5})
    assert unknown.value.field == "$.rateLimits"
    with pytest.raises(InvalidInput) as consent:
        patched(DEFAULT_POLICY, {"consentDefault": "maybe"})
    assert consent.value.field == "$.consentDefault"
    assert patched(DEFAULT_POLICY, {"retentionDays": 30, "adaptiveSampling": True}) == ProjectPolicy(
        retention_days=30, adaptive_sampling=True
    )


def test_the_admin_route_reads_and_changes_a_projects_policy(keyed_server: ServerProcess) -> None:
    base = keyed_server.url
    admin = {"Authorization": f"Bearer {keyed_server.secret_key}"}
    created = httpx.post(f"{base}/api/admin/projects", json={"name": "shop"}, headers=admin).json()
    url = f"{base}/api/admin/projects/{created['id']}/policy"
    assert httpx.get(url, headers=admin).json() == {
        "consentDefault": "granted", "rateLimit": None, "rateLimitBurst": None, "ipRateLimit": None,
        "adaptiveSampling": False, "retentionDays": None,
    }  # fmt: skip
    changed = httpx.patch(url, json={"rateLimit": 20, "consentDefault": "denied"}, headers=admin)
    assert changed.status_code == 200, changed.text
    assert changed.json()["rateLimit"] == 20.0 and changed.json()["rateLimitBurst"] == 20.0
    assert httpx.get(url, headers=admin).json()["consentDefault"] == "denied"
    assert "salt" not in msgspec.json.decode(changed.content)
    bad = httpx.patch(url, json={"retentionDays": "30_days"}, headers=admin)
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "$.retentionDays"
    project_key = {"Authorization": f"Bearer {created['secretKey']}"}
    assert httpx.get(url, headers=project_key).status_code == 403  # a project's own key is not the admin's
    missing = httpx.get(f"{base}/api/admin/projects/prj_nope/policy", headers=admin)
    assert missing.status_code == 404
