"""Key format: generation, parsing, checksum."""

from __future__ import annotations

import contextlib
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aqnt_auth import ConfigurationError, InvalidAPIKey, KeyFormat, checksum
from aqnt_auth._format import ALPHABET, CHECKSUM_LENGTH

FMT = KeyFormat()
KEY_RE = re.compile(r"^sk_(live|test)_[0-9A-Za-z]{50}$")


class TestGenerate:
    def test_shape(self) -> None:
        """A key is sk_<mode>_ plus 50 base62 characters: 58 in all."""
        for mode in ("live", "test"):
            key = FMT.generate(mode)
            assert len(key.raw) == 58
            assert KEY_RE.match(key.raw)
            assert key.raw.startswith(f"sk_{mode}_")
            assert len(key.key_id) == 12
            assert len(key.secret) == 32

    def test_checksum_is_crc32_of_the_rest(self) -> None:
        """The last six characters are the zero-padded base62 CRC32 of the rest."""
        import zlib

        key = FMT.generate("live").raw
        value = 0
        for ch in key[-6:]:
            value = value * 62 + ALPHABET.index(ch)
        assert value == zlib.crc32(key[:-6].encode())
        assert checksum(key[:-6]) == key[-6:]

    def test_keys_are_distinct(self) -> None:
        """Ids and secrets come from a CSPRNG: no repeats in a thousand."""
        keys = {FMT.generate("live").raw for _ in range(1000)}
        assert len(keys) == 1000

    def test_custom_prefix(self) -> None:
        """The prefix is configurable, for example rk for restricted keys."""
        fmt = KeyFormat(("rk", "sk"))
        key = fmt.generate("test", "rk")
        assert key.raw.startswith("rk_test_")
        assert fmt.parse(key.raw) == key
        assert fmt.generate("live").prefix == "rk"

    @pytest.mark.parametrize("prefix", ["", "SK", "s_k", "1sk", "toolongprefix", "sk!"])
    def test_bad_prefix_refused(self, prefix: str) -> None:
        """Prefixes are 1-8 lower-case letters or digits starting with a letter."""
        with pytest.raises(ConfigurationError):
            KeyFormat((prefix,))

    def test_unknown_mode_refused(self) -> None:
        with pytest.raises(ConfigurationError):
            FMT.generate("prod")  # type: ignore[arg-type]

    def test_repr_hides_secret(self) -> None:
        """A parsed key's repr shows the id, never the secret or the key."""
        key = FMT.generate("live")
        assert key.secret not in repr(key)
        assert key.raw not in repr(key)
        assert key.key_id in repr(key)


class TestParse:
    @given(st.sampled_from(["live", "test"]))
    def test_round_trip(self, mode: str) -> None:
        """parse(generate()) gives back the same parts."""
        key = FMT.generate(mode)  # type: ignore[arg-type]
        assert FMT.parse(key.raw) == key

    def test_every_single_character_change_is_rejected(self) -> None:
        """Any one-character typo anywhere in the key fails the checksum or the shape."""
        key = FMT.generate("live").raw
        changed = 0
        for i in range(len(key)):
            for ch in ALPHABET + "_":
                if ch == key[i]:
                    continue
                typo = key[:i] + ch + key[i + 1:]
                assert not FMT.checksum_ok(typo) or not FMT.is_key(typo), typo
                with pytest.raises(InvalidAPIKey):
                    FMT.parse(typo)
                changed += 1
        assert changed == 58 * 62

    @pytest.mark.parametrize(
        "token",
        [
            "",
            "sk_live_",
            "sk_live_short",
            "sk_prod_" + "a" * 50,
            "pk_live_" + "a" * 50,
            "SK_LIVE_" + "a" * 50,
            "sk-live-" + "a" * 50,
            "sk_live_" + "a" * 51,
            "sk_live_" + "a" * 10_000,
        ],
    )
    def test_malformed(self, token: str) -> None:
        """Wrong prefix, mode, separators or length: InvalidAPIKey."""
        with pytest.raises(InvalidAPIKey):
            FMT.parse(token)
        assert not FMT.is_key(token)

    def test_non_base62_with_valid_checksum_is_rejected(self) -> None:
        """A body character outside base62 is refused even if the CRC matches."""
        head = "sk_live_" + "a" * 11 + "-" + "b" * 32
        token = head + checksum(head)
        with pytest.raises(InvalidAPIKey):
            FMT.parse(token)

    @given(st.text(max_size=200))
    def test_arbitrary_text_never_crashes(self, text: str) -> None:
        """Any text either parses or raises InvalidAPIKey."""
        with contextlib.suppress(InvalidAPIKey):
            FMT.parse(text)

    def test_wrong_prefix_for_this_deployment(self) -> None:
        """A key with a prefix this format does not accept is invalid."""
        rk = KeyFormat(("rk",)).generate("live").raw
        with pytest.raises(InvalidAPIKey):
            FMT.parse(rk)


class TestChecksumDecoding:
    """checksum_ok decodes the checksum two characters at a time (#12): the
    same answer as the plain base62 reading, and never a match for a
    character outside the alphabet."""

    def test_agrees_with_base62_for_every_checksum_character(self) -> None:
        fmt = KeyFormat()
        head = fmt.generate("live").raw[:-CHECKSUM_LENGTH]
        good = checksum(head)
        for i in range(CHECKSUM_LENGTH):
            for char in ALPHABET:
                token = head + good[:i] + char + good[i + 1:]
                assert fmt.checksum_ok(token) is (char == good[i])

    def test_characters_outside_the_alphabet_never_match(self) -> None:
        fmt = KeyFormat()
        head = fmt.generate("live").raw[:-CHECKSUM_LENGTH]
        good = checksum(head)
        for i in range(CHECKSUM_LENGTH):
            for code in range(128):
                char = chr(code)
                if char in ALPHABET:
                    continue
                assert not fmt.checksum_ok(head + good[:i] + char + good[i + 1:])
