"""LZ-string's ``decompressFromBase64``: the ``compression=lz64`` bodies of older posthog-js.

LZ-string (pieroxy/lz-string, used by posthog-js before it switched to gzip) is an LZW variant over
UTF-16 code units whose bit stream is written six bits per base64 character, lowest token bit
first. Tokens are read ``num_bits`` wide (3 at the start, one more each time the dictionary
doubles): 0 and 1 introduce a new 8- or 16-bit character, 2 ends the stream, anything else names a
dictionary entry. The output is capped like any inflated body (server/http.py), so a small
request cannot make the server build a huge string.
"""

from __future__ import annotations

from typing import Final

from protocol.errors import InvalidInput, TooLarge
from server.http import MAX_INFLATED_BYTES

_ALPHABET: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
_VALUE: Final = {char: index for index, char in enumerate(_ALPHABET)}
_BITS_PER_CHAR: Final = 6
_END: Final = 2


class _Bits:
    """The input's bits, most significant first within each 6-bit character."""

    __slots__ = ("values", "index", "position", "current")

    def __init__(self, values: list[int]) -> None:
        self.values = values
        self.index = 1
        self.position = _BITS_PER_CHAR
        self.current = values[0]

    def exhausted(self) -> bool:
        return self.index > len(self.values)

    def read(self, count: int) -> int:
        """``count`` bits as a number whose lowest bit was read first."""
        number = 0
        for power in range(count):
            self.position -= 1
            number |= ((self.current >> self.position) & 1) << power
            if self.position == 0:
                self.position = _BITS_PER_CHAR
                self.current = self.values[self.index] if self.index < len(self.values) else 0
                self.index += 1
        return number


def decompress_from_base64(text: str, *, field: str) -> str:
    """The original string, or a 400 naming ``field`` when ``text`` is not LZ-string base64."""
    text = text.strip().replace(" ", "+")  # a form-encoded '+' arrives as a space
    if not text:
        raise InvalidInput(field, "lz64 body is empty")
    try:
        values = [_VALUE[char] for char in text]
    except KeyError as exc:
        raise InvalidInput(field, f"lz64 body has a character outside base64: {exc.args[0]!r}") from None
    units = _decompress(_Bits(values), field)
    try:
        return "".join(units).encode("utf-16-le", "surrogatepass").decode("utf-16-le")
    except UnicodeError:
        raise InvalidInput(field, "lz64 body decompresses to invalid utf-16") from None


def _decompress(bits: _Bits, field: str) -> list[str]:
    first = bits.read(2)
    if first == _END:
        return []
    if first > 1:
        raise InvalidInput(field, "lz64 body does not start with a character token")
    word = chr(bits.read(8 + 8 * first))
    dictionary: list[str] = ["", "", "", word]  # 0, 1, 2 are the token codes, not entries
    out = [word]
    size = len(word)
    num_bits = 3
    enlarge_in = 4
    while not bits.exhausted():
        code = bits.read(num_bits)
        if code == _END:
            return out
        if code < 2:
            dictionary.append(chr(bits.read(8 + 8 * code)))
            code = len(dictionary) - 1
            enlarge_in -= 1
            if enlarge_in == 0:
                enlarge_in = 1 << num_bits
                num_bits += 1
        if code < len(dictionary):
            entry = dictionary[code]
        elif code == len(dictionary):
            entry = word + word[0]
        else:
            raise InvalidInput(field, "lz64 body refers to a dictionary entry that does not exist")
        out.append(entry)
        size += len(entry)
        if size > MAX_INFLATED_BYTES:
            raise TooLarge(field, f"decompressed body exceeds the limit of {MAX_INFLATED_BYTES} bytes")
        dictionary.append(word + entry[0])
        word = entry
        enlarge_in -= 1
        if enlarge_in == 0:
            enlarge_in = 1 << num_bits
            num_bits += 1
    raise InvalidInput(field, "lz64 body is truncated (no end-of-stream token)")
