"""The SDK's privacy calls against a real Pulse: consent recorded and read back, an erasure with
exact counts, and refusals raised with Pulse's field and reason."""

from __future__ import annotations

import uuid

import pytest

from pulse_sdk import Client, Privacy, PrivacyError
from tests.e2e.server_process import ServerProcess
from tests.sdk.conftest import stored_events


def test_consent_and_erasure_through_the_sdk(keyed_pulse: ServerProcess, service: str) -> None:
    user = f"sdk-user-{uuid.uuid4().hex[:8]}"
    with Client(keyed_pulse.url, key=keyed_pulse.public_key, service_name=service) as client:
        for n in range(3):
            client.track("viewed", {"metadata": {"n": n}}, user_id=user)
        assert client.flush(timeout=10)
    privacy = Privacy(keyed_pulse.url, key=keyed_pulse.secret_key)
    recorded = privacy.consent(user, granted=True, categories={"analytics": True, "marketing": False}, source="sdk")
    assert recorded["granularConsent"] == {"analytics": True, "marketing": False, "personalization": False,
                                           "advertising": False}  # fmt: skip
    assert privacy.consent_of(user)["auditTrail"][0]["consentSource"] == "sdk"

    erased = privacy.erase(user)
    assert erased["status"] == "completed" and erased["dataRemoved"]["events"] == 3
    assert stored_events(keyed_pulse, service) == []
    assert privacy.erasure_status(user)["deletionId"] == erased["deletionId"]

    with pytest.raises(PrivacyError) as bad:
        privacy.consent(user, granted=True, categories={"telepathy": True})
    assert bad.value.status == 400 and "granularConsent.telepathy" in bad.value.reason
    with pytest.raises(PrivacyError) as public:
        Privacy(keyed_pulse.url, key=keyed_pulse.public_key).erase(user)
    assert public.value.status == 403
