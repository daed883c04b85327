"""Per-key policies: checked once when they are set, enforced on every
request from the cached record.

A key without policies never gets here: :attr:`KeyRecord.policed` is false
and the authenticator skips this module on that one attribute test.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable
from typing import Final

from ._errors import ConfigurationError, IPNotAllowed
from ._records import KeyRecord

__all__ = ["MAX_ALLOWED_IPS", "budget_id", "check_client_ip", "normalise_allowed_ips"]

#: Addresses and networks one key may list.
MAX_ALLOWED_IPS: Final = 100

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def normalise_allowed_ips(values: Iterable[str]) -> tuple[str, ...]:
    """*values* (IPv4/IPv6 addresses and CIDR networks) in canonical form,
    without duplicates, or :class:`ConfigurationError`.

    A network with host bits set (``10.0.0.1/8``) is refused rather than
    widened silently: it is most likely a typo.  IPv4-mapped IPv6 entries
    (``::ffff:10.0.0.1``) become IPv4, as client addresses do.
    """
    if isinstance(values, str):
        values = (values,)
    out: list[str] = []
    for value in values:
        if not isinstance(value, str):
            raise ConfigurationError(f"allowed IP {value!r} must be a string")
        try:
            network: _Network = ipaddress.ip_network(value.strip(), strict=True)
        except ValueError as exc:
            raise ConfigurationError(
                f"allowed IP {value!r} is not an IPv4 or IPv6 address or network ({exc})"
            ) from None
        if isinstance(network, ipaddress.IPv6Network):
            mapped = network.network_address.ipv4_mapped
            if mapped is not None and network.prefixlen >= 96:
                network = ipaddress.IPv4Network(f"{mapped}/{network.prefixlen - 96}")
        text = str(network.network_address) if network.num_addresses == 1 else str(network)
        if text not in out:
            out.append(text)
    if len(out) > MAX_ALLOWED_IPS:
        raise ConfigurationError(
            f"a key allows at most {MAX_ALLOWED_IPS} IP addresses or networks, not {len(out)}"
        )
    return tuple(out)


@functools.lru_cache(maxsize=4096)
def _networks(allowed: tuple[str, ...]) -> tuple[_Network, ...]:
    # Records are immutable and share their tuple: parsed once per allowlist.
    return tuple(ipaddress.ip_network(entry) for entry in allowed)


def check_client_ip(allowed: tuple[str, ...], client: str | None) -> None:
    """Return if *client* (as :class:`~aqnt_auth.TrustedProxies` resolved it)
    is in *allowed*; else raise :class:`IPNotAllowed`.  An unknown or
    unparseable client (a Unix socket, a test client) is refused: an
    allowlist fails closed."""
    if client is None:
        raise IPNotAllowed("no client address")
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        raise IPNotAllowed("client address is not an IP address") from None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    for network in _networks(allowed):
        if address in network:
            return
    raise IPNotAllowed("client address not in the key's allowlist")


def budget_id(record: KeyRecord, *, per_owner: bool | None = None) -> str:
    """The name a key's counters are kept under: its rate limits, and its quota.

    ``"owner:<owner>"`` when the budget is per owner (*per_owner*, by default
    the key's :attr:`~KeyRecord.rate_limit_shared`) and the key has an
    owner: every key of that owner then shares it.  Otherwise
    ``"key:<id>"`` with the id of the first key of the key's rotation chain
    (:attr:`~KeyRecord.lineage_id`), so that a key and its successors, while
    both work during a rotation's grace period, share one budget.  A shared
    key without an owner counts per key.
    """
    if (record.rate_limit_shared if per_owner is None else per_owner) and record.owner:
        return "owner:" + record.owner
    return "key:" + (record.lineage_id or record.id)
