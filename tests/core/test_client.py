"""The client address: IPv4-mapped peers, trusted proxies, Forwarded and X-Forwarded-For."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aqnt_auth import (
    Authenticator,
    ConfigurationError,
    FailureLimiter,
    MemoryKeyStore,
    RateLimited,
    TrustedProxies,
    forwarded_headers,
    normalise_address,
)
from aqnt_auth._client import MAX_FORWARDED_LENGTH, MAX_HOPS, _node

PROXY = "10.0.0.1"
CLIENT = "203.0.113.7"


@pytest.fixture
def proxies() -> TrustedProxies:
    return TrustedProxies(["10.0.0.0/8", "2001:db8:1::/48"])


class TestNormalise:
    @pytest.mark.parametrize(("peer", "client"), [
        ("::ffff:127.0.0.1", "127.0.0.1"),
        ("::ffff:127.0.0.2", "127.0.0.2"),
        ("::FFFF:7f00:1", "127.0.0.1"),
        ("127.0.0.1", "127.0.0.1"),
        ("::1", "::1"),
        ("2001:DB8::0001", "2001:db8::1"),
        ("testclient", "testclient"),
        ("/run/app.sock", "/run/app.sock"),
        (None, None),
    ])
    def test_peer(self, peer: str | None, client: str | None) -> None:
        """An IPv4-mapped peer is its IPv4 address; addresses are canonical; the
        rest (socket paths, test clients' names) is kept as it is."""
        assert normalise_address(peer) == client
        assert TrustedProxies().resolve(peer) == client


class TestConfiguration:
    @pytest.mark.parametrize("bad", ["10.0.0.1/8", "proxy.internal", "", "10.0.0.0/33", "*"])
    def test_bad_proxy(self, bad: str) -> None:
        with pytest.raises(ConfigurationError, match="trusted proxy"):
            TrustedProxies([bad])

    def test_a_string_is_one_proxy(self) -> None:
        assert TrustedProxies("10.0.0.1").resolve("10.0.0.1", None, CLIENT) == CLIENT

    def test_mapped_network_is_compared_as_ipv4(self) -> None:
        """A proxy written IPv4-mapped matches the IPv4 peer it stands for."""
        proxies = TrustedProxies(["::ffff:10.0.0.0/104"])
        assert proxies.resolve("::ffff:10.1.2.3", None, CLIENT) == CLIENT

    def test_authenticator_option(self) -> None:
        auth = Authenticator(MemoryKeyStore(), trusted_proxies=["127.0.0.1"], track_usage=False)
        assert auth.client_address("::ffff:127.0.0.1", x_forwarded_for=CLIENT) == CLIENT
        assert auth.client_address("127.0.0.2", x_forwarded_for=CLIENT) == "127.0.0.2"
        with pytest.raises(ConfigurationError):
            Authenticator(MemoryKeyStore(), trusted_proxies=["localhost"], track_usage=False)


class TestXForwardedFor:
    def test_untrusted_peer_is_the_client(self, proxies: TrustedProxies) -> None:
        """A forwarded header from a peer that is not a trusted proxy is ignored."""
        assert proxies.resolve("198.51.100.9", None, CLIENT) == "198.51.100.9"
        assert proxies.resolve("198.51.100.9", f"for={CLIENT}", CLIENT) == "198.51.100.9"

    def test_without_proxies_headers_are_ignored(self) -> None:
        assert TrustedProxies().resolve(PROXY, f"for={CLIENT}", CLIENT) == PROXY

    def test_rightmost_untrusted(self, proxies: TrustedProxies) -> None:
        """The client spoofs the left of the list; the proxies append on the right."""
        value = f"1.1.1.1, 2.2.2.2, {CLIENT}, 10.0.0.2, 10.0.0.3"
        assert proxies.resolve(PROXY, None, value) == CLIENT

    def test_two_clients_apart(self, proxies: TrustedProxies) -> None:
        assert proxies.resolve(PROXY, None, "203.0.113.7") == "203.0.113.7"
        assert proxies.resolve(PROXY, None, "203.0.113.8") == "203.0.113.8"

    @pytest.mark.parametrize(("value", "client"), [
        ("203.0.113.7:4711", CLIENT),
        ("[2001:db8::7]:4711", "2001:db8::7"),
        ("[2001:db8::7]", "2001:db8::7"),
        ("2001:db8::7", "2001:db8::7"),
        ("::ffff:203.0.113.7", CLIENT),
        (" 203.0.113.7 ", CLIENT),
    ])
    def test_address_forms(self, proxies: TrustedProxies, value: str, client: str) -> None:
        assert proxies.resolve(PROXY, None, value) == client

    @pytest.mark.parametrize("value", [
        "", " ", ",", "unknown", "_hidden", "garbage", "203.0.113.7:", "203.0.113.7:port",
        "203.0.113.7:123456", "[2001:db8::7", "[2001:db8::7]x", "[203.0.113.7]",
        "2001:db8::7]:80", "203.0.113.7\x00", "203.0.113.256", "0x7f.1",
        "\uff12\uff10\uff13.0.113.7",
        f"{CLIENT}, unknown", f"{CLIENT},,", f"{CLIENT}, 10.0.0.2, _hidden",
    ])
    def test_unreadable_hop_leaves_the_proxy(self, proxies: TrustedProxies, value: str) -> None:
        """A hop the walk cannot read: the client stays the trusted proxy, which
        no one can vary to get a fresh budget."""
        assert proxies.resolve(PROXY, None, value) == PROXY

    def test_too_many_trusted_hops(self, proxies: TrustedProxies) -> None:
        """At most MAX_HOPS hops are read, from the right."""
        trusted = ", ".join(["10.9.9.9"] * MAX_HOPS)
        assert proxies.resolve(PROXY, None, f"{CLIENT}, {trusted}") == PROXY
        within = ", ".join(["10.9.9.9"] * (MAX_HOPS - 1))
        assert proxies.resolve(PROXY, None, f"{CLIENT}, {within}") == CLIENT

    def test_huge_header(self, proxies: TrustedProxies) -> None:
        """A megabyte of hops costs a split from the right, not a parse of each."""
        value = "1.2.3.4, " * 100_000 + CLIENT
        assert proxies.resolve(PROXY, None, value) == CLIENT

    def test_everyone_trusted(self, proxies: TrustedProxies) -> None:
        assert proxies.resolve(PROXY, None, "10.0.0.2, 10.0.0.3") == PROXY


class TestForwarded:
    @pytest.mark.parametrize(("value", "client"), [
        (f"for={CLIENT}", CLIENT),
        (f"For={CLIENT}", CLIENT),
        (f'for="{CLIENT}"', CLIENT),
        (f'for="{CLIENT}:4711";proto=https;by=10.0.0.1', CLIENT),
        (f"proto=https;for={CLIENT}", CLIENT),
        ('for="[2001:db8:cafe::17]:4711"', "2001:db8:cafe::17"),
        ('for="[2001:db8:cafe::17]"', "2001:db8:cafe::17"),
        (f"for=198.51.100.1, for={CLIENT}, for=10.0.0.2", CLIENT),
        (f"for=198.51.100.1,for={CLIENT};proto=http", CLIENT),
        (f'for="198.51.100.1, spoof", for={CLIENT}', CLIENT),
        (f'for="\\1\\9\\8.51.100.1", for={CLIENT}', CLIENT),
    ])
    def test_rightmost_untrusted(self, proxies: TrustedProxies, value: str, client: str) -> None:
        assert proxies.resolve(PROXY, value, None) == client

    @pytest.mark.parametrize("value", [
        "", "for=unknown", "for=_hidden", 'for="_gazonk"', f"for={CLIENT};for=1.2.3.4",
        f"by={PROXY}", f"for={CLIENT}, by={PROXY}", f"for={CLIENT},,", f"for={CLIENT}, junk",
        f"for={CLIENT} x", f'for="{CLIENT}', "for=[2001:db8::1]:80", "for=", f"for ={CLIENT}",
        f"for={CLIENT};", f"for={CLIENT}\r\nfor=1.2.3.4",
        "for=" + "9" * MAX_FORWARDED_LENGTH,
        ", ".join([f"for={CLIENT}"] * 1000),
    ])
    def test_unreadable_leaves_the_proxy(self, proxies: TrustedProxies, value: str) -> None:
        """Garbage, obfuscated identifiers, two for= in one element, an element
        without one, bad quoting, a header too long to parse: the proxy."""
        assert proxies.resolve(PROXY, value, None) == PROXY

    def test_quoted_escapes(self, proxies: TrustedProxies) -> None:
        assert proxies.resolve(PROXY, 'for="203.0.113.\\7"', None) == CLIENT


class TestBothHeaders:
    def test_agreeing(self, proxies: TrustedProxies) -> None:
        assert proxies.resolve(PROXY, f"for={CLIENT}", f"1.1.1.1, {CLIENT}") == CLIENT

    def test_disagreeing_leaves_the_proxy(self, proxies: TrustedProxies) -> None:
        """A proxy that writes one header passes the other through from the client:
        when they name different clients, neither is believed."""
        assert proxies.resolve(PROXY, "for=198.51.100.1", CLIENT) == PROXY
        assert proxies.resolve(PROXY, f"for={CLIENT}", "garbage") == PROXY


def test_forwarded_headers_from_asgi() -> None:
    """Repeated headers are joined as WSGI servers join them; other headers ignored."""
    raw = [(b"x-forwarded-for", b"1.1.1.1"), (b"forwarded", b"for=2.2.2.2"),
           (b"x-forwarded-for", b"3.3.3.3"), (b"x-real-ip", b"4.4.4.4")]
    assert forwarded_headers(raw) == ("for=2.2.2.2", "1.1.1.1, 3.3.3.3")
    assert forwarded_headers([(b"host", b"x")]) == (None, None)


class TestLimiterBuckets:
    def test_mapped_ipv4_clients_are_apart(self) -> None:
        """IPv4 clients of a server on [::] each get their own budget (they all
        fell into ::/64 before)."""
        limiter = FailureLimiter(per_key="100/minute", per_client="1/minute")
        limiter.failed("::ffff:127.0.0.1", None)
        limiter.admit("::ffff:127.0.0.2", None)
        limiter.admit("::1", None)
        with pytest.raises(RateLimited):
            limiter.admit("127.0.0.1", None)

    def test_ipv6_still_per_64(self) -> None:
        limiter = FailureLimiter(per_key="100/minute", per_client="1/minute")
        limiter.failed("2001:db8::1", None)
        with pytest.raises(RateLimited):
            limiter.admit("2001:db8::ffff", None)
        limiter.admit("2001:db8:0:1::1", None)


_HOP = st.one_of(
    st.ip_addresses().map(str),
    st.ip_addresses(v=6).map(lambda a: f"[{a}]:80"),
    st.sampled_from(["unknown", "_x", "", " ", "10.0.0.2", "[", "]:"]),
    st.text(max_size=12),
)


@given(hops=st.lists(_HOP, max_size=30), peer=st.sampled_from([PROXY, "198.51.100.9"]))
def test_any_value(hops: list[str], peer: str) -> None:
    """Whatever the headers say, the answer is the peer or one of the hops, never an error."""
    proxies = TrustedProxies(["10.0.0.0/8"])
    candidates = {peer} | {str(a) for a in (_node(h) for h in hops) if a is not None}
    assert proxies.resolve(peer, None, ", ".join(hops)) in candidates
    # Quoted as Forwarded for= values (hops that would need escapes aside).
    plain = [hop for hop in hops if '"' not in hop and "\\" not in hop]
    forwarded = ", ".join(f'for="{hop}"' for hop in plain)
    assert proxies.resolve(peer, forwarded, None) in candidates
