"""KeyFormat.checksum_ok (#12: one struct call per key length, no slicing)
agrees with the plain reading: length, head, ASCII, base62 CRC32 of what
precedes the checksum."""

from __future__ import annotations

import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aqnt_auth import KeyFormat, checksum
from aqnt_auth._format import ALPHABET, BODY_LENGTH, CHECKSUM_LENGTH


def plain_checksum_ok(fmt: KeyFormat, token: str) -> bool:
    """checksum_ok as first written: a set of lengths, the head by slicing,
    and the checksum read character by character."""
    lengths = {len(f"{p}_{m}_") + BODY_LENGTH for p in fmt.prefixes for m in ("live", "test")}
    heads = {f"{p}_{m}_" for p in fmt.prefixes for m in ("live", "test")}
    if len(token) not in lengths or token[:-BODY_LENGTH] not in heads or not token.isascii():
        return False
    value = 0
    for char in token[-CHECKSUM_LENGTH:]:
        if char not in ALPHABET:
            return False
        value = value * 62 + ALPHABET.index(char)
    return value == zlib.crc32(token[:-CHECKSUM_LENGTH].encode())


FORMATS = [KeyFormat(), KeyFormat(("sk", "rk")), KeyFormat(("a", "ab", "abcdefgh"))]


class TestChecksumShapes:
    @pytest.mark.parametrize("fmt", FORMATS, ids=repr)
    def test_every_prefix_and_mode(self, fmt: KeyFormat) -> None:
        for prefix in fmt.prefixes:
            for mode in ("live", "test"):
                key = fmt.generate(mode, prefix).raw
                assert fmt.checksum_ok(key)
                assert not fmt.checksum_ok(key[:-1] + ("A" if key[-1] != "A" else "B"))

    def test_a_head_of_another_length_is_refused(self) -> None:
        """Prefixes of different lengths: a key of one prefix, padded or cut
        to the length of another's, never passes."""
        fmt = KeyFormat(("a", "ab"))
        for body_head in ("a_live_", "ab_live_", "a_live_X", "ab_live"):
            head = body_head + "0" * (BODY_LENGTH - CHECKSUM_LENGTH)
            token = head + checksum(head)
            assert fmt.checksum_ok(token) is plain_checksum_ok(fmt, token), token

    @settings(max_examples=400)
    @given(fmt=st.sampled_from(FORMATS), data=st.data())
    def test_agrees_with_the_plain_reading(self, fmt: KeyFormat, data: st.DataObject) -> None:
        prefix = data.draw(st.sampled_from([*fmt.prefixes, "sk", "zz", "a", "ab"]))
        mode = data.draw(st.sampled_from(["live", "test", "prod"]))
        body = data.draw(st.text(alphabet=ALPHABET + "_-! é\t",
                                 min_size=BODY_LENGTH - CHECKSUM_LENGTH - 2,
                                 max_size=BODY_LENGTH - CHECKSUM_LENGTH + 2))
        head = f"{prefix}_{mode}_{body}"
        try:
            tail = checksum(head)
        except UnicodeEncodeError:
            tail = data.draw(st.text(alphabet=ALPHABET, min_size=6, max_size=6))
        if data.draw(st.booleans()):
            tail = data.draw(st.text(min_size=0, max_size=7))
        token = head + tail
        assert fmt.checksum_ok(token) is plain_checksum_ok(fmt, token)

    @settings(max_examples=300)
    @given(st.text(max_size=120))
    def test_arbitrary_text(self, token: str) -> None:
        for fmt in FORMATS:
            assert fmt.checksum_ok(token) is plain_checksum_ok(fmt, token)

    @pytest.mark.parametrize("fmt", FORMATS, ids=repr)
    def test_every_checksum_character_counts(self, fmt: KeyFormat) -> None:
        """The pairs are compared from the last: a checksum whose last pair
        is right and whose first or middle pair is wrong is still refused,
        as is any character of it replaced by another of the alphabet or
        by one outside it."""
        key = fmt.generate("live").raw
        head, tail = key[:-CHECKSUM_LENGTH], key[-CHECKSUM_LENGTH:]
        for i in range(CHECKSUM_LENGTH):
            for char in ("0", "z", "Z", "_", "é", "\x00"):
                if char != tail[i]:
                    token = head + tail[:i] + char + tail[i + 1:]
                    assert not fmt.checksum_ok(token), (i, char)
                    assert plain_checksum_ok(fmt, token) is False
        assert fmt.checksum_ok(key)
