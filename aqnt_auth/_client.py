"""The client's address: the peer, or, past trusted proxies, the client they forwarded for.

Every adapter hands over what its server gives (the peer address) and the raw
``Forwarded`` (RFC 7239) and ``X-Forwarded-For`` values; the decision is made
here, once:

* an IPv4 client reaching a server bound to ``[::]`` arrives as an
  IPv4-mapped IPv6 address (``::ffff:192.0.2.7``): it is the IPv4 address;
* a forwarded header counts only when the peer is a trusted proxy; the
  client is then the rightmost address that is not a trusted proxy, walking
  from the peer leftwards (each proxy appends what it saw on its right, so
  everything left of the first untrusted hop was written by the client and
  proves nothing);
* anything the walk cannot read (garbage, ``unknown``, an obfuscated
  identifier, more hops than :data:`MAX_HOPS`, both headers naming
  different clients) leaves the client at the nearest trusted proxy: such a
  request shares that proxy's budget rather than inventing a fresh one.

Pure functions of strings; nothing here reads a request or a clock.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from typing import Final

from ._errors import ConfigurationError

__all__ = ["MAX_HOPS", "TrustedProxies", "forwarded_headers", "normalise_address"]

#: Hops of a forwarded header read at most, from the right.
MAX_HOPS: Final = 16
#: A ``Forwarded`` value longer than this is not parsed (the client is the proxy).
MAX_FORWARDED_LENGTH: Final = 8192

_Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_TOKEN: Final = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"  # noqa: S105 - RFC 7230's token, no secret
_QUOTED: Final = r'"(?:[^"\\]|\\.)*"'
# One forwarded-pair of RFC 7239 §4, and what follows it: ";" (the element
# goes on), "," (the next element) or the end.
_PAIR: Final = re.compile(rf"[ \t]*({_TOKEN})=({_TOKEN}|{_QUOTED})[ \t]*(;|,[ \t]*|$)")
_ESCAPE: Final = re.compile(r"\\(.)")
_PORT: Final = re.compile(r"[0-9]{1,5}")


def _ip(text: str) -> _Address | None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if address.version == 6:
        mapped = address.ipv4_mapped
        if mapped is not None:
            return mapped
    return address


def normalise_address(address: str | None) -> str | None:
    """*address* as one client is counted: an IP address in its canonical form,
    an IPv4-mapped IPv6 address as the IPv4 address; anything that is not an
    IP address (a Unix socket path, a test client's name) as it is."""
    if address is None:
        return None
    parsed = _ip(address)
    return str(parsed) if parsed is not None else address


def _node(text: str | None) -> _Address | None:
    """The address in one forwarded hop (``192.0.2.7``, ``192.0.2.7:4711``,
    ``[2001:db8::1]:4711``, ``2001:db8::1``), or ``None`` when it names none
    (``unknown``, ``_hidden``, garbage)."""
    if text is None:
        return None
    text = text.strip()
    if text.startswith("["):
        end = text.find("]")
        rest = text[end + 1:]
        if end < 0 or (rest and not (rest[0] == ":" and _PORT.fullmatch(rest[1:]))):
            return None
        address = _ip(text[1:end])
        return address if address is not None and address.version == 6 else None
    if text.count(":") == 1:
        host, port = text.split(":")
        if not _PORT.fullmatch(port):
            return None
        address = _ip(host)
        return address if address is not None and address.version == 4 else None
    return _ip(text)


def _forwarded_for(value: str) -> list[str | None] | None:
    """The ``for=`` value of each element of a ``Forwarded`` header, left to
    right (``None`` for an element without one), or ``None`` if the header
    does not parse."""
    if len(value) > MAX_FORWARDED_LENGTH:
        return None
    hops: list[str | None] = []
    current: str | None = None
    position = 0
    while position < len(value):
        pair = _PAIR.match(value, position)
        if pair is None or pair.end() == position:
            return None
        name, text, separator = pair.groups()
        if name.lower() == "for":
            if current is not None:
                return None  # two for= in one element
            current = _ESCAPE.sub(r"\1", text[1:-1]) if text.startswith('"') else text
        position = pair.end()
        if separator != ";":
            hops.append(current)
            current = None
    return hops


def forwarded_headers(headers: Iterable[tuple[bytes, bytes]]) -> tuple[str | None, str | None]:
    """``(Forwarded, X-Forwarded-For)`` from raw ASGI-style headers (lower-case
    names), each repeated header joined with ``", "`` as WSGI servers join them."""
    forwarded: list[str] = []
    forwarded_for: list[str] = []
    for name, value in headers:
        if name == b"forwarded":
            forwarded.append(value.decode("latin-1"))
        elif name == b"x-forwarded-for":
            forwarded_for.append(value.decode("latin-1"))
    return (", ".join(forwarded) if forwarded else None,
            ", ".join(forwarded_for) if forwarded_for else None)


class TrustedProxies:
    """The proxies whose forwarded headers are believed, parsed once.

    :param proxies: IP addresses or networks (``"10.0.0.0/8"``,
        ``"2001:db8::/32"``, ``"127.0.0.1"``).  None by default: forwarded
        headers are then ignored and the client is the peer.

    :meth:`resolve` is the whole decision (see the module documentation).
    """

    __slots__ = ("networks",)

    def __init__(self, proxies: Iterable[str] = ()) -> None:
        if isinstance(proxies, str):
            proxies = (proxies,)
        networks: list[_Network] = []
        for proxy in proxies:
            if not isinstance(proxy, str):
                raise ConfigurationError(f"trusted proxy {proxy!r} must be a string")
            try:
                network = ipaddress.ip_network(proxy.strip())
            except ValueError as exc:
                raise ConfigurationError(
                    f"trusted proxy {proxy!r} is not an IP address or network: {exc}"
                ) from None
            if network.version == 6 and network.subnet_of(_MAPPED):
                # Servers on [::] show IPv4 peers mapped; they are compared as IPv4.
                network = ipaddress.ip_network(
                    f"{network.network_address.ipv4_mapped}/{network.prefixlen - 96}"
                )
            networks.append(network)
        self.networks: tuple[_Network, ...] = tuple(networks)

    def __repr__(self) -> str:
        return f"TrustedProxies({[str(n) for n in self.networks]!r})"

    def __bool__(self) -> bool:
        return bool(self.networks)

    def trusts(self, address: _Address) -> bool:
        """Whether *address* is one of the trusted proxies."""
        for network in self.networks:
            if address.version == network.version and address in network:
                return True
        return False

    def resolve(self, peer: str | None, forwarded: str | None = None,
                x_forwarded_for: str | None = None) -> str | None:
        """The client's address, from the *peer* address the server gives and
        the raw ``Forwarded`` and ``X-Forwarded-For`` values (``None`` when
        absent).  The headers are read only when the peer is trusted."""
        if not self.networks:
            return normalise_address(peer)
        address = _ip(peer) if peer is not None else None
        if address is None:
            return peer
        if not self.trusts(address):
            return str(address)
        found: set[_Address | None] = set()
        if forwarded is not None:
            hops = _forwarded_for(forwarded)
            found.add(self._walk(hops) if hops is not None else None)
        if x_forwarded_for is not None:
            found.add(self._walk(x_forwarded_for.rsplit(",", MAX_HOPS)))
        client = found.pop() if len(found) == 1 else None
        return str(client if client is not None else address)

    def _walk(self, hops: Sequence[str | None]) -> _Address | None:
        """The rightmost untrusted address of *hops* (left to right), or
        ``None`` if a hop is unreadable or every hop read is trusted."""
        for hop in reversed(hops[-MAX_HOPS:]):
            address = _node(hop)
            if address is None:
                return None
            if not self.trusts(address):
                return address
        return None


_MAPPED: Final = ipaddress.IPv6Network("::ffff:0:0/96")
