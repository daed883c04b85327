"""How secrets are hashed for storage.

Every stored hash names the hasher that made it (argon2's PHC string starts
with ``$argon2id$``, ours with ``$hmac-sha256$``), so one store can hold keys
of both kinds and the authenticator picks the hasher from the hash itself.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from typing import Final, Protocol, runtime_checkable

import argon2
from argon2 import PasswordHasher, profiles
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from ._errors import ConfigurationError, InvalidStoredHash

__all__ = [
    "ARGON2_PROFILES",
    "Argon2Hasher",
    "HMACHasher",
    "Hasher",
    "check_memory_budget",
    "default_hash_memory_mib",
    "default_hashers",
    "hash_memory_kib",
]


@runtime_checkable
class Hasher(Protocol):
    """What the authenticator needs from a hasher.

    ``verify`` returns ``False`` for a wrong secret and raises
    :class:`InvalidStoredHash` for a hash it cannot read.
    """

    #: The start of every hash this hasher makes; how a stored hash is routed.
    identifier: str
    #: Whether a verify costs enough (milliseconds) to be worth caching,
    #: bounding and moving off an event loop.
    expensive: bool

    def hash(self, secret: str) -> str: ...

    def verify(self, stored: str, secret: str) -> bool: ...

    def needs_rehash(self, stored: str) -> bool: ...


#: Named argon2id parameter sets.  ``owasp`` (the default) is OWASP's argon2id
#: minimum: a key's secret has about 190 bits of entropy, so a heavier work
#: factor adds no security, while every cold verification pays for it.
ARGON2_PROFILES: Final[dict[str, argon2.Parameters]] = {
    "owasp": argon2.Parameters(
        type=argon2.Type.ID,
        version=19,
        salt_len=16,
        hash_len=32,
        time_cost=2,
        memory_cost=19 * 1024,
        parallelism=1,
    ),
    "rfc9106-low-memory": profiles.RFC_9106_LOW_MEMORY,
    "rfc9106-high-memory": profiles.RFC_9106_HIGH_MEMORY,
    # For test suites only: microseconds, no security.
    "cheapest": profiles.CHEAPEST,
}


class Argon2Hasher:
    """argon2id through argon2-cffi's :class:`~argon2.PasswordHasher`.

    *profile* names one of :data:`ARGON2_PROFILES` or is an
    :class:`argon2.Parameters`.  Parameters are validated once, here.
    """

    identifier = "$argon2"
    expensive = True

    def __init__(self, profile: str | argon2.Parameters = "owasp") -> None:
        if isinstance(profile, str):
            try:
                params = ARGON2_PROFILES[profile]
            except KeyError:
                names = ", ".join(sorted(ARGON2_PROFILES))
                raise ConfigurationError(
                    f"unknown argon2 profile {profile!r} (choose one of {names})"
                ) from None
        else:
            params = profile
        if params.type is not argon2.Type.ID:
            raise ConfigurationError("only argon2id is supported")
        self.parameters = params
        self._ph = PasswordHasher.from_parameters(params)

    def __repr__(self) -> str:
        p = self.parameters
        return f"Argon2Hasher(m={p.memory_cost}, t={p.time_cost}, p={p.parallelism})"

    def hash(self, secret: str) -> str:
        return self._ph.hash(secret)

    def verify(self, stored: str, secret: str) -> bool:
        try:
            return self._ph.verify(stored, secret)
        except VerifyMismatchError:
            return False
        except (InvalidHashError, VerificationError) as exc:
            # A corrupt hash or a wrong argon2 variant: a data problem, not a
            # wrong secret.  The message holds no secret.
            raise InvalidStoredHash(f"unreadable argon2 hash: {type(exc).__name__}") from None

    def memory_kib(self, stored: str | None = None) -> int:
        """KiB of memory one verification of *stored* (or one new hash) takes:
        argon2's ``m``, read from the hash itself, which names its parameters."""
        if stored is None:
            return self.parameters.memory_cost
        try:
            return argon2.extract_parameters(stored).memory_cost
        except (InvalidHashError, ValueError):
            return 0  # unreadable: verify refuses it without hashing

    def needs_rehash(self, stored: str) -> bool:
        """Whether *stored* is weaker than this hasher's parameters.

        Unlike argon2-cffi's ``check_needs_rehash`` (any difference), a hash
        made with a stronger profile is kept: rewriting it with the
        configured one would be a downgrade.  Each parameter is compared,
        and a hash that is stronger in any of them is never rewritten.
        """
        try:
            old = argon2.extract_parameters(stored)
        except (InvalidHashError, ValueError):
            return False
        return _weaker(old, self.parameters)


def _weaker(old: argon2.Parameters, new: argon2.Parameters) -> bool:
    """Whether hashes made with *new* are stronger than with *old* in some
    parameter and weaker in none (argon2id ranks above the other types)."""
    pairs = (
        (old.type is argon2.Type.ID, new.type is argon2.Type.ID),
        (old.version, new.version),
        (old.memory_cost, new.memory_cost),
        (old.time_cost, new.time_cost),
        (old.parallelism, new.parallelism),
        (old.hash_len, new.hash_len),
        (old.salt_len, new.salt_len),
    )
    return all(a <= b for a, b in pairs) and any(a < b for a, b in pairs)


class HMACHasher:
    """HMAC-SHA256 keyed by a server-side secret (a pepper).

    For teams that want no per-process warm-up: a verify costs about a
    microsecond, so nothing is cached.  The stored hash names the pepper by
    id (``$hmac-sha256$k=<id>$<digest>``) so peppers can be rotated: pass the
    old ones in *previous* and keys re-hash to the current one on use.

    Anyone with the database *and* the pepper can test guesses at full speed;
    since secrets carry about 190 bits of entropy that is still hopeless,
    but keep the pepper out of the database.
    """

    identifier = "$hmac-sha256$"
    expensive = False

    def __init__(
        self,
        pepper: bytes | str,
        *,
        pepper_id: str = "1",
        previous: dict[str, bytes | str] | None = None,
    ) -> None:
        peppers = {pepper_id: pepper, **(previous or {})}
        self._peppers: dict[str, bytes] = {}
        for kid, value in peppers.items():
            if not kid or not (kid.isascii() and kid.isalnum()):
                raise ConfigurationError("pepper ids must be ASCII letters and digits")
            raw = value.encode() if isinstance(value, str) else bytes(value)
            if len(raw) < 16:
                raise ConfigurationError("an HMAC pepper must be at least 16 bytes")
            self._peppers[kid] = raw
        self._current = pepper_id

    def __repr__(self) -> str:
        return f"HMACHasher(pepper_id={self._current!r})"

    @classmethod
    def from_env(cls, variable: str = "AQNT_AUTH_PEPPER") -> HMACHasher | None:
        """Return a hasher for the pepper in environment *variable*, if set."""
        value = os.environ.get(variable)
        return cls(value) if value else None

    def _digest(self, kid: str, secret: str) -> bytes:
        return hmac.new(self._peppers[kid], secret.encode(), hashlib.sha256).digest()

    def hash(self, secret: str) -> str:
        digest = base64.urlsafe_b64encode(self._digest(self._current, secret)).rstrip(b"=")
        return f"{self.identifier}k={self._current}${digest.decode()}"

    def _split(self, stored: str) -> tuple[str, bytes]:
        try:
            params, encoded = stored[len(self.identifier):].split("$")
            if not params.startswith("k="):
                raise ValueError
            kid = params[2:]
            digest = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        except ValueError:
            raise InvalidStoredHash("unreadable hmac-sha256 hash") from None
        if kid not in self._peppers:
            raise InvalidStoredHash(f"hash made with unknown pepper id {kid!r}")
        if len(digest) != hashlib.sha256().digest_size:
            raise InvalidStoredHash("hmac-sha256 hash has the wrong length")
        return kid, digest

    def verify(self, stored: str, secret: str) -> bool:
        kid, expected = self._split(stored)
        return hmac.compare_digest(self._digest(kid, secret), expected)

    def needs_rehash(self, stored: str) -> bool:
        try:
            return self._split(stored)[0] != self._current
        except InvalidStoredHash:
            return False


#: The floor of the default argon2 memory budget, per process, in MiB:
#: room for sixteen RFC 9106 low-memory verifications at once, and none of
#: the 2 GiB high-memory profile.
MIN_DEFAULT_HASH_MEMORY_MIB: Final = 1024


def default_hash_memory_mib(concurrency: int | None = None) -> int:
    """The default argon2 memory budget of a process, in MiB: enough for
    *concurrency* (default: the CPU count) verifications of the default
    (OWASP) profile at once, and at least :data:`MIN_DEFAULT_HASH_MEMORY_MIB`."""
    count = concurrency if concurrency is not None else (os.cpu_count() or 1)
    owasp_mib = -(-ARGON2_PROFILES["owasp"].memory_cost // 1024)
    return max(MIN_DEFAULT_HASH_MEMORY_MIB, count * owasp_mib)


def hash_memory_kib(hasher: Hasher, stored: str | None = None) -> int:
    """KiB one verification of *stored* (or one new hash) by *hasher* takes;
    0 for hashers that do not say (they use no memory worth counting)."""
    memory = getattr(hasher, "memory_kib", None)
    return int(memory(stored)) if memory is not None else 0


def check_memory_budget(hasher: Hasher, budget_mib: int) -> None:
    """Raise :class:`ConfigurationError` if one hash by *hasher* needs more
    memory than *budget_mib*: every verification of such a key would be
    refused, so the key must not be created."""
    need = hash_memory_kib(hasher)
    if need > budget_mib * 1024:
        raise ConfigurationError(
            f"{hasher!r} needs {-(-need // 1024)} MiB per hash, more than the argon2 memory "
            f"budget of {budget_mib} MiB per process (max_hash_memory_mib): choose a smaller "
            "profile, or raise the budget"
        )


def default_hashers() -> tuple[Hasher, ...]:
    """argon2id (OWASP profile), plus HMAC when ``AQNT_AUTH_PEPPER`` is set."""
    hmac_hasher = HMACHasher.from_env()
    argon = Argon2Hasher()
    return (argon, hmac_hasher) if hmac_hasher else (argon,)
