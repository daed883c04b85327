"""The key format: ``<prefix>_<mode>_<id><secret><checksum>``.

* ``prefix``: ``sk`` by default, configurable (``rk`` for restricted keys...).
* ``mode``: ``live`` or ``test``.
* ``id``: 12 base62 characters, the lookup id.  Stored in clear; not secret.
* ``secret``: 32 base62 characters from :mod:`secrets` (about 190 bits).
* ``checksum``: 6 base62 characters, the CRC32 of everything before it,
  zero-padded, as in GitHub's token format.  It lets typos and random garbage
  be rejected offline, before any store call or hash, and lets scanners tell
  a real key from a look-alike.

Parsing never runs a regular expression: it checks the total length first,
then a set lookup of the head, then C-level ``isascii``/``isalnum`` over the
body, so its cost is linear and bounded whatever is presented.
"""

from __future__ import annotations

import secrets
import struct
import zlib
from collections.abc import Callable
from typing import Final, Literal, NamedTuple

from ._errors import ConfigurationError, InvalidAPIKey

__all__ = [
    "ALPHABET",
    "KeyFormat",
    "Mode",
    "ParsedKey",
    "checksum",
    "key_id_in",
    "validate_prefix",
]

Mode = Literal["live", "test"]
MODES: Final[tuple[Mode, ...]] = ("live", "test")

ALPHABET: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# bytes.translate() table from an alphabet byte to its digit value (the
# key scanner decodes checksums with it).
_DIGITS: Final = bytes(ALPHABET.find(chr(b)) % 256 for b in range(256))
# Two checksum characters, read as the big-endian 16-bit number of their
# ASCII bytes, to their value (62 * first + second); a pair with a byte
# outside the alphabet maps to a value beyond any CRC32, so it never matches.
# Checking the checksum is then one struct call, the CRC32, and the pairs
# compared from the last (one indexing and one modulo refuse almost every
# wrong checksum).  The table: a 64 Ki-entry list, about 0.6 MB.
_NOT_A_PAIR: Final = 1 << 40
_PAIRS: Final = [_NOT_A_PAIR] * 65536
for _i, _first in enumerate(ALPHABET.encode()):
    for _j, _second in enumerate(ALPHABET.encode()):
        _PAIRS[_first << 8 | _second] = _i * 62 + _j
del _i, _j, _first, _second
#: Splits an ASCII key into the bytes its checksum covers and the
#: checksum's three character pairs (see ``_PAIRS``).
_Splitter = Callable[[bytes], tuple[bytes, int, int, int]]
_tuple_new = tuple.__new__
_crc32 = zlib.crc32

ID_LENGTH: Final = 12
SECRET_LENGTH: Final = 32
CHECKSUM_LENGTH: Final = 6
BODY_LENGTH: Final = ID_LENGTH + SECRET_LENGTH + CHECKSUM_LENGTH
MAX_PREFIX_LENGTH: Final = 8


def _base62(value: int, width: int) -> str:
    digits = []
    for _ in range(width):
        value, rem = divmod(value, 62)
        digits.append(ALPHABET[rem])
    return "".join(reversed(digits))


def checksum(text: str) -> str:
    """Return the 6-character base62 CRC32 of *text* (ASCII)."""
    return _base62(zlib.crc32(text.encode("ascii")), CHECKSUM_LENGTH)


def _random_base62(length: int) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def validate_prefix(prefix: str) -> str:
    """Return *prefix* if it is 1-8 lower-case ASCII letters or digits, starting with a letter."""
    if (
        not isinstance(prefix, str)
        or not 1 <= len(prefix) <= MAX_PREFIX_LENGTH
        or not (prefix.isascii() and prefix.isalnum() and prefix.islower())
        or not prefix[0].isalpha()
    ):
        raise ConfigurationError(
            "key prefix must be 1 to 8 lower-case ASCII letters or digits, starting with a letter"
        )
    return prefix


def key_id_in(text: str) -> str | None:
    """The key id, if *text* starts like a whole key of any prefix (``sk_live_``
    and at least the id), valid checksum or not; else ``None``.

    What a front end asks before echoing an argument that should have been a
    key id: a pasted key, even one with a typo, holds its secret.
    """
    text = text.strip()
    for mode in MODES:
        head, sep, body = text.partition(f"_{mode}_")
        if (sep and 1 <= len(head) <= MAX_PREFIX_LENGTH and head.isascii() and head.isalnum()
                and head[0].isalpha() and len(body) >= ID_LENGTH
                and body[:ID_LENGTH].isascii() and body[:ID_LENGTH].isalnum()):
            return body[:ID_LENGTH]
    return None


class ParsedKey(NamedTuple):
    """A presented key whose format and checksum are valid.

    Holds the secret, so its ``repr`` shows only the public parts.
    """

    prefix: str
    mode: Mode
    key_id: str
    secret: str
    raw: str

    def __repr__(self) -> str:
        return f"ParsedKey(prefix={self.prefix!r}, mode={self.mode!r}, key_id={self.key_id!r})"

    @property
    def hint(self) -> str:
        """``sk_live_...`` and the last four characters: safe to show and log."""
        return hint(self.raw)


def hint(key: str) -> str:
    """Return the displayable hint of a full key: its head and last four characters."""
    return key[: -BODY_LENGTH] + "..." + key[-4:]


class KeyFormat:
    """Generates and parses keys for a set of allowed prefixes.

    *prefixes* are the prefixes this deployment accepts (``("sk",)`` by
    default).  Instances are immutable and safe to share between threads.
    """

    __slots__ = ("_heads", "_max_length", "_shapes", "prefixes")

    def __init__(self, prefixes: tuple[str, ...] | list[str] | str = ("sk",)) -> None:
        if isinstance(prefixes, str):
            prefixes = (prefixes,)
        if not prefixes:
            raise ConfigurationError("at least one key prefix is required")
        self.prefixes: tuple[str, ...] = tuple(validate_prefix(p) for p in prefixes)
        # "sk_live_" -> ("sk", "live"): one dict lookup replaces any pattern.
        self._heads: dict[str, tuple[str, Mode]] = {
            f"{p}_{m}_": (p, m) for p in self.prefixes for m in MODES
        }
        # Per key length: the heads a key of that length starts with, and
        # the struct that splits it into what the checksum covers and the
        # checksum's three character pairs (one C call, no slicing).
        self._shapes: dict[int, tuple[tuple[str, ...], _Splitter]] = {}
        for head in self._heads:
            length = len(head) + BODY_LENGTH
            heads = self._shapes[length][0] if length in self._shapes else ()
            self._shapes[length] = (
                (*heads, head), struct.Struct(f">{length - CHECKSUM_LENGTH}s3H").unpack)
        self._max_length = max(self._shapes)

    def __repr__(self) -> str:
        return f"KeyFormat(prefixes={self.prefixes!r})"

    @property
    def max_length(self) -> int:
        """Length of the longest key this format accepts."""
        return self._max_length

    def generate(self, mode: Mode, prefix: str | None = None) -> ParsedKey:
        """Return a new random key.  The id and secret come from :mod:`secrets`."""
        if mode not in MODES:
            raise ConfigurationError("mode must be 'live' or 'test'")
        prefix = self.prefixes[0] if prefix is None else prefix
        if prefix not in self.prefixes:
            raise ConfigurationError(f"prefix {prefix!r} is not one of {self.prefixes!r}")
        key_id = _random_base62(ID_LENGTH)
        secret = _random_base62(SECRET_LENGTH)
        head = f"{prefix}_{mode}_{key_id}{secret}"
        return ParsedKey(prefix, mode, key_id, secret, head + checksum(head))

    def parse(self, token: str) -> ParsedKey:
        """Return the parts of *token* or raise :class:`InvalidAPIKey`.

        Checks, in order of cost: length, head, checksum, alphabet.
        """
        if not self.checksum_ok(token):
            raise InvalidAPIKey("malformed key or bad checksum")
        return self.split(token)

    def checksum_ok(self, token: str) -> bool:
        """Whether *token* has the length and head of a key and a valid checksum.

        The filter every presented token goes through first: it rejects
        typos and garbage in about a microsecond, without raising.
        """
        # Few bytecodes and no slice (each costs on the refusal path): the
        # heads of keys of this length (startswith: a token of the head's
        # length plus the body's), ASCII, then one struct call.
        shape = self._shapes.get(len(token))
        if shape is None or not token.startswith(shape[0]) or not token.isascii():
            return False
        covered, a, b, c = shape[1](token.encode())
        crc = _crc32(covered)
        # The last pair first: a wrong checksum almost always differs there,
        # and is refused after one indexing and one modulo.
        return _PAIRS[c] == crc % 3844 and _PAIRS[a] * 3844 + _PAIRS[b] == crc // 3844

    def split(self, token: str) -> ParsedKey:
        """The parts of a token that passed :meth:`checksum_ok`; raises
        :class:`InvalidAPIKey` if its body is not all base62."""
        body = token[-BODY_LENGTH:]
        if not body.isalnum():
            raise InvalidAPIKey("malformed key: character outside base62")
        prefix, mode = self._heads[token[:-BODY_LENGTH]]
        # tuple.__new__ skips the NamedTuple's Python-level constructor.
        return _tuple_new(
            ParsedKey, (prefix, mode, body[:ID_LENGTH], body[ID_LENGTH:-CHECKSUM_LENGTH], token)
        )

    def is_key(self, token: str) -> bool:
        """Return whether *token* is a well-formed key with a valid checksum."""
        return self.checksum_ok(token) and token[-BODY_LENGTH:].isalnum()
