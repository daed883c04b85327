"""The demo: keys prepared once, the app's answers, and what it prints."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from aqnt_auth import Argon2Hasher, KeyManager
from aqnt_auth.adapters import _demo
from tests import bodies

from ._support import assert_refused, bearer


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'demo.db'}"


@pytest.fixture
def first(store_url: str, cheap_hasher: Argon2Hasher) -> _demo.DemoKeys:
    return _demo.prepare_keys(store_url, hasher=cheap_hasher)


@pytest.fixture
async def client(store_url: str, first: _demo.DemoKeys) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=_demo.build_app(store_url)),
                                 base_url="http://testserver") as c:
        yield c


class TestKeys:
    def test_first_run_issues_a_key_and_stores_only_its_hash(
        self, first: _demo.DemoKeys, tmp_path: Path
    ) -> None:
        assert first.new_key is not None
        assert first.new_key.startswith("sk_test_")
        assert first.hint == first.new_key[:8] + "..." + first.new_key[-4:]
        database = b"".join(p.read_bytes() for p in tmp_path.iterdir())
        assert first.new_key.encode() not in database
        assert first.new_key[8:].encode() not in database  # not even id + secret

    def test_later_runs_reuse_it_and_replace_the_revoked_key(
        self, first: _demo.DemoKeys, store_url: str, cheap_hasher: Argon2Hasher
    ) -> None:
        again = _demo.prepare_keys(store_url, hasher=cheap_hasher)
        assert again.new_key is None
        assert again.hint == first.hint
        assert again.revoked_key != first.revoked_key
        with KeyManager(store_url) as manager:
            records = manager.list()
        assert sorted(r.status() for r in records) == ["active", "revoked"]

    def test_a_new_key_when_the_old_one_was_revoked(
        self, first: _demo.DemoKeys, store_url: str, cheap_hasher: Argon2Hasher
    ) -> None:
        with KeyManager(store_url) as manager:
            demo = next(r for r in manager.list() if r.status() == "active")
            manager.revoke(demo.id)
        again = _demo.prepare_keys(store_url, hasher=cheap_hasher)
        assert again.new_key is not None
        assert again.new_key != first.new_key

    def test_repr_hides_the_keys(self, first: _demo.DemoKeys) -> None:
        assert first.new_key is not None
        assert first.new_key not in repr(first)
        assert first.revoked_key not in repr(first)


@pytest.mark.anyio
class TestApp:
    async def test_health_is_open(self, client: httpx.AsyncClient) -> None:
        assert (await client.get("/health")).json() == {"status": "ok"}

    async def test_success(self, client: httpx.AsyncClient, first: _demo.DemoKeys) -> None:
        assert first.new_key is not None
        response = await client.get("/v1/whoami", headers=bearer(first.new_key))
        assert response.status_code == 200
        body = response.json()
        assert body["name"] == "demo key"
        assert body["livemode"] is False
        assert body["scopes"] == ["charges:read"]
        charges = await client.get("/v1/charges", headers=bearer(first.new_key))
        assert charges.json() == {"object": "list", "data": [], "livemode": False}

    async def test_the_refusals_the_banner_promises(self, client: httpx.AsyncClient,
                                                    first: _demo.DemoKeys) -> None:
        assert first.new_key is not None
        assert_refused(await client.get("/v1/whoami"), 401, bodies.MISSING, bodies.CHALLENGE)
        assert_refused(await client.get("/v1/whoami", headers=bearer("sk_test_not_a_real_key")),
                       401, bodies.INVALID, bodies.INVALID_CHALLENGE)
        assert_refused(await client.get("/v1/whoami", headers=bearer(first.revoked_key)),
                       401, bodies.REVOKED, bodies.INVALID_CHALLENGE)
        assert_refused(await client.post("/v1/charges", headers=bearer(first.new_key)), 403,
                       bodies.FORBIDDEN,
                       'Bearer realm="api", error="insufficient_scope", scope="charges:write"')


class TestBanner:
    def test_first_run_shows_the_key_once(self, first: _demo.DemoKeys, store_url: str) -> None:
        text = _demo.banner(first, host="127.0.0.1", port=8000, store_url=store_url)
        assert first.new_key is not None
        assert text.count(first.new_key) == 1
        assert f"export AQNT_KEY={first.new_key}" in text
        assert 'curl -i -H "Authorization: Bearer $AQNT_KEY" http://127.0.0.1:8000/v1/whoami' \
            in text
        assert "curl -i http://127.0.0.1:8000/v1/whoami" in text
        assert "sk_test_not_a_real_key" in text
        assert f"Bearer {first.revoked_key}" in text
        assert "curl -i -X POST" in text

    def test_later_run_says_how_to_get_a_key(self, store_url: str,
                                             cheap_hasher: Argon2Hasher,
                                             first: _demo.DemoKeys) -> None:
        again = _demo.prepare_keys(store_url, hasher=cheap_hasher)
        text = _demo.banner(again, host="0.0.0.0", port=9000, store_url=store_url)
        assert first.new_key is not None
        assert first.new_key not in text
        assert again.hint in text
        assert (f"aqnt-auth keys create --test --name 'demo key' --scope charges:read "
                f"--store {store_url}") in text
        assert "http://127.0.0.1:9000/health" in text

    def test_says_to_use_a_second_terminal(self, first: _demo.DemoKeys, store_url: str
                                           ) -> None:
        """The server holds this terminal: the banner sends the curl commands elsewhere."""
        text = _demo.banner(first, host="127.0.0.1", port=8000, store_url=store_url)
        lines = text.splitlines()
        hint = next(i for i, line in enumerate(lines) if "second terminal" in line)
        assert hint < next(i for i, line in enumerate(lines) if "curl" in line)

    def test_ipv6_host(self, first: _demo.DemoKeys) -> None:
        text = _demo.banner(first, host="::1", port=8000, store_url="sqlite:///x.db")
        assert "http://[::1]:8000/health" in text


def test_run_prints_then_serves(monkeypatch: pytest.MonkeyPatch, store_url: str,
                                capsys: pytest.CaptureFixture[str]) -> None:
    """run() prepares the keys, prints the banner, then hands the app to uvicorn."""
    import uvicorn

    served: list[tuple[object, str, int]] = []
    prepare = _demo.prepare_keys
    monkeypatch.setattr(uvicorn, "run",
                        lambda app, host, port: served.append((app, host, port)))
    monkeypatch.setattr(_demo, "prepare_keys",
                        lambda url: prepare(url, hasher=Argon2Hasher("cheapest")))
    _demo.run(host="127.0.0.1", port=8123, store_url=store_url)
    out = capsys.readouterr().out
    assert "export AQNT_KEY=sk_test_" in out
    assert "http://127.0.0.1:8123/v1/whoami" in out
    assert [(host, port) for _, host, port in served] == [("127.0.0.1", 8123)]
