"""find_keys: what counts as a key, where it is, and what a finding shows."""

from __future__ import annotations

import pytest

from aqnt_auth._scan import LeakFinding, find_keys, format_finding

from ._support import assert_no_key, bad_checksum, new_key


def found(text: bytes | str, prefixes: list[str] | None = None) -> list[LeakFinding]:
    return list(find_keys(text, "f.txt", prefixes=prefixes))


class TestKeys:
    def test_finding_fields_and_line(self) -> None:
        key = new_key("test")
        (finding,) = found(f"a = 1\n\n  token: '{key}'\n")
        assert finding.path == "f.txt"
        assert finding.line == 3
        assert finding.commit is None
        assert (finding.mode, finding.prefix) == ("test", "sk")
        assert finding.key_id == key[8:20]
        assert finding.hint == key[:8] + "..." + key[-4:]
        assert finding.key is None

    def test_output_shows_the_hint_never_the_key(self) -> None:
        key = new_key()
        (finding,) = list(find_keys(key, "cfg.py", keep_keys=True))
        assert format_finding(finding) == (
            f"cfg.py:1: sk_live_...{key[-4:]} (id {key[8:20]}, live)"
        )
        assert finding.key is not None
        assert finding.key.raw == key
        for shown in (repr(finding), str(finding), format_finding(finding),
                      str(finding.to_dict())):
            assert_no_key(shown, key)

    @pytest.mark.parametrize("prefix", ["sk", "rk", "abcdefgh"])
    def test_any_valid_prefix_by_default(self, prefix: str) -> None:
        key = new_key(prefix=prefix)
        (finding,) = found(f"x {key} y")
        assert finding.prefix == prefix
        assert finding.hint.startswith(f"{prefix}_live_...")

    def test_prefixes_restrict(self) -> None:
        sk, rk = new_key(), new_key(prefix="rk")
        text = f"{sk}\n{rk}\n"
        assert [f.prefix for f in found(text, prefixes=["rk"])] == ["rk"]
        assert [f.prefix for f in found(text, prefixes=["sk", "rk"])] == ["sk", "rk"]
        assert found(text, prefixes=["pk"]) == []

    def test_several_keys_lines_and_edges(self) -> None:
        a, b, c = new_key(), new_key("test"), new_key(prefix="rk")
        text = f"{a} {b}\n\r\n{c}"
        assert [(f.line, f.key_id) for f in found(text)] == [
            (1, a[8:20]), (1, b[8:20]), (3, c[8:20]),
        ]

    @pytest.mark.parametrize(
        "before", ["", " ", "=", '"', "Bearer%20", "\\n", "\\t", "MY_KEY_", "x", "0", "\t"],
    )
    def test_left_edge_need_not_be_a_boundary(self, before: str) -> None:
        """Escapes and URL-encoding glue letters to a key's front; the checksum decides."""
        key = new_key()
        (finding,) = found(f"{before}{key}")
        assert finding.key_id == key[8:20]
        assert finding.prefix == "sk"

    @pytest.mark.parametrize("after", ["", "\n", '"', "%0A", "\\n", "_", ".", "-", " "])
    def test_right_edge_boundaries(self, after: str) -> None:
        key = new_key()
        assert len(found(f"{key}{after}")) == 1

    def test_bytes_binary_and_invalid_utf8(self) -> None:
        key = new_key()
        data = b"\x00\xff\xfe\x80" * 100 + key.encode() + b"\x00\n\xc3(" + key.encode()
        findings = found(data)
        assert [f.line for f in findings] == [1, 2]
        assert [f.line for f in find_keys(bytearray(data))] == [1, 2]


class TestLookAlikes:
    def test_bad_checksum(self) -> None:
        assert found(bad_checksum(new_key())) == []

    def test_placeholders(self) -> None:
        text = "sk_live_" + "x" * 50 + "\nsk_test_" + "0" * 50 + "\nsk_live_...abcd\n"
        assert found(text) == []

    def test_wrong_length(self) -> None:
        key = new_key()
        assert found(key[:-1]) == []  # 49 characters of body
        assert found(key[:20] + "A" + key[20:]) == []  # 51

    @pytest.mark.parametrize("after", ["A", "z", "0"])
    def test_more_letters_or_digits_after(self, after: str) -> None:
        """A key followed by a letter or digit is part of a longer token."""
        assert found(new_key() + after) == []

    def test_wrong_case_or_separator(self) -> None:
        key = new_key()
        assert found(key.upper()) == []
        assert found(key.replace("_live_", "-live-")) == []
        assert found(key.replace("_live_", "_LIVE_")) == []

    def test_character_outside_base62(self) -> None:
        key = new_key()
        assert found(key[:30] + "-" + key[31:]) == []
        assert found(key[:30] + "é" + key[31:]) == []

    def test_prefix_too_long_is_cut_to_the_checksummed_one(self) -> None:
        """Nine letters cannot be a prefix; the key is the part the checksum covers."""
        key = new_key(prefix="abcdefgh")
        (finding,) = found("z" + key)
        assert finding.prefix == "abcdefgh"
        assert found(bad_checksum("z" + key)) == []


class TestChunks:
    def test_a_key_split_anywhere_is_found_once(self) -> None:
        """Every split point of a text with two keys gives the same findings."""
        a, b = new_key(), new_key("test", "rk")
        data = f"line one\n x{a}\n\n{b} tail\n".encode()
        expected = [(f.line, f.key_id) for f in found(data)]
        assert expected == [(2, a[8:20]), (4, b[8:20])]
        for cut in range(len(data) + 1):
            pieces = [data[:cut], data[cut:]]
            assert [(f.line, f.key_id) for f in find_keys(pieces)] == expected, cut

    def test_one_byte_chunks_and_str_chunks(self) -> None:
        a, b = new_key(), new_key()
        text = f"{a}\n{b}"
        one_byte = [bytes([c]) for c in text.encode()]
        assert [f.line for f in find_keys(one_byte)] == [1, 2]
        assert [f.line for f in find_keys(list(text))] == [1, 2]

    def test_long_input_many_chunks(self) -> None:
        """Lines are counted across chunks; filler of near-misses costs nothing."""
        key = new_key()
        filler = ("sk_live_" + "y" * 60 + " _test_ " + "\n") * 5000
        chunks = [filler.encode()] * 3 + [f"{key}\n".encode()] + [filler.encode()]
        (finding,) = find_keys(chunks)
        assert finding.line == 15001
