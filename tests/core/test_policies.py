"""The IP allowlist (#13): parsed once when set, checked from the cached record."""

from __future__ import annotations

import pytest

from aqnt_auth import ConfigurationError, IPNotAllowed
from aqnt_auth._policies import MAX_ALLOWED_IPS, check_client_ip, normalise_allowed_ips
from aqnt_auth._response import render_error
from tests import bodies


class TestNormalise:
    def test_canonical_deduplicated_and_mapped_to_ipv4(self) -> None:
        """Addresses lose a /32 or /128, IPv6 is compressed, an IPv4-mapped entry
        becomes IPv4 (as client addresses do), duplicates go; order is kept."""
        assert normalise_allowed_ips([
            "10.0.0.0/8", " 192.0.2.7/32 ", "2001:DB8:0::/32", "::ffff:198.51.100.1",
            "::ffff:198.51.100.0/120", "10.0.0.0/8", "::1",
        ]) == ("10.0.0.0/8", "192.0.2.7", "2001:db8::/32", "198.51.100.1", "198.51.100.0/24",
               "::1")
        assert normalise_allowed_ips("127.0.0.1") == ("127.0.0.1",)
        assert normalise_allowed_ips([]) == ()

    @pytest.mark.parametrize("bad", ["10.0.0.1/8", "example.com", "", "300.1.1.1", "1.2.3.4/33",
                                     "fe80::1%eth0/64"])
    def test_strict_parsing(self, bad: str) -> None:
        """Host bits set (a likely typo), names and garbage are refused, not widened."""
        with pytest.raises(ConfigurationError, match="allowed IP"):
            normalise_allowed_ips([bad])

    def test_at_most_100(self) -> None:
        ok = [f"10.0.{i // 256}.{i % 256}" for i in range(MAX_ALLOWED_IPS)]
        assert len(normalise_allowed_ips(ok)) == MAX_ALLOWED_IPS
        with pytest.raises(ConfigurationError, match="at most 100"):
            normalise_allowed_ips([*ok, "192.0.2.1"])

    def test_not_a_string(self) -> None:
        with pytest.raises(ConfigurationError):
            normalise_allowed_ips([1234])  # type: ignore[list-item]


class TestCheck:
    ALLOWED = ("10.0.0.0/8", "192.0.2.7", "2001:db8::/32")

    @pytest.mark.parametrize("client", ["10.1.2.3", "192.0.2.7", "2001:db8::42",
                                        "::ffff:10.9.9.9"])
    def test_inside(self, client: str) -> None:
        check_client_ip(self.ALLOWED, client)

    @pytest.mark.parametrize("client", ["11.0.0.1", "192.0.2.8", "2001:db9::1", "::1", None,
                                        "testclient", "", "unix:/tmp/socket"])
    def test_outside_or_unknown_fails_closed(self, client: str | None) -> None:
        with pytest.raises(IPNotAllowed):
            check_client_ip(self.ALLOWED, client)

    def test_the_answer(self) -> None:
        """403 with the exact body and no WWW-Authenticate: not a token-scope matter."""
        response = render_error(IPNotAllowed())
        assert response.status == 403
        assert response.body == bodies.IP_NOT_ALLOWED
        assert dict(response.headers) == {"Content-Type": "application/json"}
