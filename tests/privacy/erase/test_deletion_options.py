"""The deletion route's options: booleans only, each refusal naming the option."""

from __future__ import annotations

import pytest

from protocol.errors import InvalidInput
from server.privacy.deletion_routes import check_user_id, parse_options
from storage.deletion_records import DeletionOptions


def test_defaults_body_and_query() -> None:
    assert parse_options({}, b"") == DeletionOptions(retention_override=False, anonymize_only=False, cascade_delete=True)
    assert parse_options({}, b'{"anonymizeOnly": true}').anonymize_only
    # a query parameter wins over the body
    assert not parse_options({"anonymizeOnly": "false"}, b'{"anonymizeOnly": true}').anonymize_only
    assert not parse_options({"cascadeDelete": " FALSE "}, b"").cascade_delete


@pytest.mark.parametrize(
    ("query", "body", "field"),
    [
        ({"cascadeDelete": "yes"}, b"", "cascadeDelete"),
        ({"retentionOverride": ""}, b"", "retentionOverride"),
        ({}, b'{"anonymizeOnly": null}', "$.anonymizeOnly"),
        ({}, b'{"anonymizeOnly": "true"}', "$.anonymizeOnly"),
        ({}, b'{"cascade": true}', "$"),
        ({}, b"[1]", "$"),
        ({}, b"{", "$"),
    ],
)
def test_bad_options_are_named(query: dict[str, str], body: bytes, field: str) -> None:
    with pytest.raises(InvalidInput) as bad:
        parse_options(query, body)
    assert bad.value.field == field and bad.value.status == 400


def test_user_ids_that_cannot_be_stored_are_refused() -> None:
    assert check_user_id("u-1") == "u-1"
    for bad in ("x" * 257, "a\x00b"):
        with pytest.raises(InvalidInput) as refused:
            check_user_id(bad)
        assert refused.value.field == "userId"
