"""Exempt paths, mount points, CORS preflight: pure decisions on paths."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aqnt_auth import ConfigurationError, PathRules, is_cors_preflight, path_within, relative_path


class TestPathRules:
    RULES = PathRules(["/health", "/docs/*", "/static/"])

    @pytest.mark.parametrize("path", ["/health", "/docs", "/docs/", "/docs/a/b", "/static/"])
    def test_exempt(self, path: str) -> None:
        assert self.RULES.is_exempt(path)

    @pytest.mark.parametrize(
        "path",
        ["/healthz", "/health-admin", "/health/", "/health/x", "//health", "/health/../admin",
         "/HEALTH", "/health;x", "/%68ealth", "/docsx", "/docs/../admin", "/docs//x",
         "/docs/./x", "/static", "/static/x", "", "health", "/health\x00", "/health/."],
    )
    def test_not_exempt(self, path: str) -> None:
        """Look-alikes, traversal, case and parameters never borrow an exemption."""
        assert not self.RULES.is_exempt(path)

    @pytest.mark.parametrize("rule", ["health", "", "/a/../b", "//x", "/a/./b"])
    def test_bad_rules(self, rule: str) -> None:
        with pytest.raises(ConfigurationError):
            PathRules([rule])

    def test_root_prefix(self) -> None:
        rules = PathRules(["/*"])
        assert rules.is_exempt("/anything")
        assert not rules.is_exempt("/a/../b")

    def test_empty(self) -> None:
        assert not PathRules()
        assert not PathRules().is_exempt("/health")

    @given(st.text(max_size=60))
    def test_only_listed_paths_are_exempt(self, path: str) -> None:
        """Exactly /health, or /docs on a boundary with no dot or empty segment."""
        exempt = self.RULES.is_exempt(path)
        expected = path in ("/health", "/static/", "/docs") or (
            path.startswith("/docs/") and "//" not in path and "/./" not in path
            and "/../" not in path and not path.endswith(("/.", "/..")) and "\\" not in path
        )
        assert exempt == expected


class TestRelativePath:
    @pytest.mark.parametrize(
        ("path", "root", "expected"),
        [
            ("/api/health", "/api", "/health"),
            ("/api", "/api", "/"),
            ("/api/", "/api", "/"),
            ("/api-v2/health", "/api", "/api-v2/health"),
            ("/apihealth", "/api", "/apihealth"),
            ("/health", "", "/health"),
            ("/api//health", "/api", "/api//health"),
            ("/api/health", "/api/", "/health"),
        ],
    )
    def test_mount(self, path: str, root: str, expected: str) -> None:
        """Inside the mount the path is relative; a look-alike is left whole."""
        assert relative_path(path, root) == expected


def test_path_within() -> None:
    assert path_within("/v1/charges/ch_1", "/v1/charges")
    assert not path_within("/v1/chargesX", "/v1/charges")


def test_cors_preflight() -> None:
    assert is_cors_preflight("OPTIONS", "https://a.example", "POST")
    assert not is_cors_preflight("OPTIONS", None, "POST")
    assert not is_cors_preflight("OPTIONS", "https://a.example", None)
    assert not is_cors_preflight("GET", "https://a.example", "POST")
