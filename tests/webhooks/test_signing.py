"""Standard Webhooks signatures: the spec's own example, the reference library (when installed),
and the secrets we accept or generate."""

from __future__ import annotations

import base64
import datetime

import pytest

from server.webhooks import signing

# The example of the Standard Webhooks specification and its reference libraries' tests.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_the_spec_example_signs_to_the_spec_signature() -> None:
    key = base64.b64decode(SPEC_SECRET.removeprefix("whsec_"))
    assert signing.signature(key, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE


def test_headers_carry_id_timestamp_and_signature() -> None:
    key = signing.secret_key(signing.new_secret())
    headers = signing.headers(key, "msg_1", 1700000000, b"{}")
    assert headers["webhook-id"] == "msg_1"
    assert headers["webhook-timestamp"] == "1700000000"
    assert headers["webhook-signature"] == signing.signature(key, "msg_1", 1700000000, b"{}")
    assert headers["content-type"] == "application/json"


def test_the_reference_library_verifies_our_signatures() -> None:
    standardwebhooks = pytest.importorskip("standardwebhooks")
    secret = signing.new_secret()
    body = b'{"type":"purchase","timestamp":"2026-01-01T00:00:00.000Z","data":{"x":1}}'
    now = int(datetime.datetime.now(datetime.UTC).timestamp())
    headers = signing.headers(signing.secret_key(secret), "msg_abc", now, body)
    assert standardwebhooks.Webhook(secret).verify(body, headers) == {"type": "purchase",
                                                                       "timestamp": "2026-01-01T00:00:00.000Z",
                                                                       "data": {"x": 1}}
    tampered = {**headers, "webhook-id": "msg_other"}
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        standardwebhooks.Webhook(secret).verify(body, tampered)


def test_generated_secrets_are_whsec_base64_of_32_random_bytes() -> None:
    first, second = signing.new_secret(), signing.new_secret()
    assert first.startswith("whsec_") and first != second
    assert len(signing.secret_key(first)) == 32


@pytest.mark.parametrize(
    ("secret", "reason"),
    [
        ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "must start with 'whsec_'"),
        ("whsec_not base64!", "not valid base64"),
        ("whsec_" + base64.b64encode(b"short").decode(), "24 to 64 bytes, got 5"),
        ("whsec_" + base64.b64encode(b"x" * 65).decode(), "24 to 64 bytes, got 65"),
    ],
)
def test_bad_secrets_are_refused_with_the_reason(secret: str, reason: str) -> None:
    with pytest.raises(signing.BadSecret, match=reason):
        signing.secret_key(secret)


def test_unpadded_base64_secrets_are_accepted_like_the_reference_library_does() -> None:
    padded = "whsec_" + base64.b64encode(b"k" * 25).decode()
    assert padded.endswith("=")
    assert signing.secret_key(padded.rstrip("=")) == b"k" * 25
