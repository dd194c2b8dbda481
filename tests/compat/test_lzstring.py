"""server/compat/lzstring.py against outputs of the reference lz-string.js (1.4.4, pieroxy/lz-string)."""

from __future__ import annotations

import pytest

from protocol.errors import InvalidInput, TooLarge
from server.compat import lzstring
from server.compat.lzstring import decompress_from_base64

# (original, LZString.compressToBase64(original)), computed with node and lz-string.js 1.4.4
VECTORS = [
    ('[{"event":"$pageview","distinct_id":"u-lz","properties":{"token":"abc",'
     '"$current_url":"https://example.com/\u00fc\u20ac\U0001f600"}}]',
     "NobwRApgbhB2AuYBcYAkAHAhgc2gSwgHcwAaMAEzwGd49YBjeAfT3OTAFcBaAGwC9SYdACcA9ugjDaEKsnDxRAazjtMAI3qDU9Ds"
     "OFxmunuwAW8eOipIA9NYgAPTAFt0PCADp6op9YA/gGoJAXg3AAD2wAF8wgF0gA=="),
    ("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaabababababababab", "IY18ZXQRscPkhQ=="),
    ("", "Q="),
    ('[{"event":"plus-0","distinct_id":"u","properties":{"token":"phc_k"}}]',
     "NobwRApgbhB2AuYBcYAOAbArgZwLQAYwAaMAEwEtt5zYBjeAfXNOTE2LQCcB7VCT6hGzJw8bgGs4rVAAtaDcWAC+SgLpA="),
]


@pytest.mark.parametrize(("original", "compressed"), VECTORS)
def test_reference_outputs_decompress_to_their_input(original: str, compressed: str) -> None:
    assert decompress_from_base64(compressed, field="body") == original


def test_a_form_encoded_plus_read_as_a_space_is_restored() -> None:
    original, compressed = VECTORS[3]
    assert "+" in compressed
    assert decompress_from_base64(compressed.replace("+", " "), field="body") == original


@pytest.mark.parametrize(("text", "reason"), [
    ("", "empty"),
    ("not*base64", "outside base64"),
    ("IY18ZXQRsc", "truncated"),
])
def test_broken_input_is_refused_naming_the_field(text: str, reason: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        decompress_from_base64(text, field="data")
    assert refused.value.field == "data"
    assert reason in refused.value.reason


def test_output_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lzstring, "MAX_INFLATED_BYTES", 10)  # the 60-character vector is over it
    with pytest.raises(TooLarge):
        decompress_from_base64(VECTORS[1][1], field="body")
