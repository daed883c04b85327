"""Throttling failed verifications, per client address and per key id.

Built on the ``limits`` library (a dependency; Redis, for counters shared
between servers, needs the ``redis`` extra).  Only *failures* are counted,
and only requests that would cost work are checked, so:

* a request whose key is already proven good (a verification-cache hit)
  never touches the limiter: a key keeps working while its id is attacked;
* a client past its limit gets 429 before any store call or argon2;
* guessing secrets for a known id is throttled per (key id, client): one
  client's failures for an id never refuse another client, so an attacker
  who knows only a key id cannot lock its owner out, on any server sharing
  the counters, however many addresses it sends from.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._client import normalise_address
from ._errors import ConfigurationError, RateLimited

if TYPE_CHECKING:
    from limits import RateLimitItem

__all__ = ["FailureLimiter"]


class FailureLimiter:
    """Counts failed authentications and refuses clients and ids past a limit.

    :param per_key: failures allowed per key id *and client* (``limits``
        notation): wrong secrets for one id from one client address.
    :param per_client: failures allowed per client address, whatever it sent.
    :param storage_uri: ``memory://`` (per process, the default) or
        ``redis://127.0.0.1:6379`` (shared by every server).
    :param storage_options: keyword options of the ``limits`` storage, such
        as ``{"key_prefix": "myapp"}`` for Redis.
    :param strategy: ``fixed-window`` (the default) or ``moving-window``
        (exact, but with ``memory://`` the ``limits`` library keeps an entry
        for every client ever seen, so memory grows with the number of
        attacking addresses; fixed windows expire).
    :param ipv6_prefix: IPv6 clients are counted per network of this prefix
        length (``/64`` by default: one subscriber's allocation), so an
        attacker cannot get a fresh budget, and a fresh counter, per address.

    ``blocking`` is true for a networked storage: async callers then run the
    limiter in worker threads.
    """

    def __init__(
        self,
        per_key: str = "10/minute",
        per_client: str = "60/minute",
        *,
        storage_uri: str = "memory://",
        strategy: str = "fixed-window",
        ipv6_prefix: int = 64,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        from limits import parse, storage, strategies

        try:
            self._per_key: RateLimitItem = parse(per_key)
            self._per_client: RateLimitItem = parse(per_client)
        except ValueError as exc:
            raise ConfigurationError(f"bad rate limit: {exc}") from None
        kinds: dict[str, Any] = {
            "moving-window": strategies.MovingWindowRateLimiter,
            "fixed-window": strategies.FixedWindowRateLimiter,
        }
        if strategy not in kinds:
            raise ConfigurationError(f"strategy must be one of {sorted(kinds)}")
        try:
            self._storage = storage.storage_from_string(storage_uri, **(storage_options or {}))
        except Exception as exc:  # limits raises several types for bad URIs
            raise ConfigurationError(f"bad rate limit storage: {exc}") from None
        self._limiter = kinds[strategy](self._storage)
        if not 1 <= ipv6_prefix <= 128:
            raise ConfigurationError("ipv6_prefix must be between 1 and 128")
        self.ipv6_prefix = ipv6_prefix
        self.blocking = not storage_uri.startswith("memory://")
        self.storage_uri = storage_uri

    def __repr__(self) -> str:
        return (f"FailureLimiter(per_key={str(self._per_key)!r}, "
                f"per_client={str(self._per_client)!r}, storage={self.storage_uri!r})")

    def _refuse(self, item: RateLimitItem, *identifiers: str) -> RateLimited:
        reset = self._limiter.get_window_stats(item, *identifiers).reset_time
        return RateLimited("too many failures", retry_after=int(reset - time.time()) + 1)

    def _client(self, client: str | None) -> str | None:
        # An IPv4-mapped address (a server bound to [::]) is its IPv4 client.
        client = normalise_address(client)
        if client is None or ":" not in client or client == "::1":
            return client  # IPv4, the IPv6 loopback host, or not an address
        try:
            network = ipaddress.IPv6Network(f"{client}/{self.ipv6_prefix}", strict=False)
        except ValueError:
            return client  # not an IPv6 address (a Unix socket path...): as it is
        return str(network)

    def admit(self, client: str | None, key_id: str | None) -> None:
        """Raise :class:`RateLimited` if *client*, or *client* for *key_id*, is
        past its limit."""
        client = self._client(client)
        if client is not None and not self._limiter.test(self._per_client, "client", client):
            raise self._refuse(self._per_client, "client", client)
        if key_id is not None:
            # Per (id, client), never per id alone: failures from elsewhere
            # must not refuse the owner (a request without a client address
            # shares one bucket per id).
            who = client or "-"
            if not self._limiter.test(self._per_key, "key", key_id, who):
                raise self._refuse(self._per_key, "key", key_id, who)

    def failed(self, client: str | None, key_id: str | None) -> RateLimited | None:
        """Count one failure; return the 429 to answer instead if a limit was already hit."""
        client = self._client(client)
        refusal = None
        if client is not None and not self._limiter.hit(self._per_client, "client", client):
            refusal = self._refuse(self._per_client, "client", client)
        if key_id is not None:
            who = client or "-"
            if not self._limiter.hit(self._per_key, "key", key_id, who):
                refusal = refusal or self._refuse(self._per_key, "key", key_id, who)
        return refusal

    def reset(self) -> None:
        """Forget every counter (tests, or after an incident)."""
        self._storage.reset()
