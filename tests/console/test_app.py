"""The console's spine: routing, who the admin is (Bearer key, the host
app's hook, added methods), per-route access, and the headers and error
bodies of every answer."""

from __future__ import annotations

import logging

import pytest

from aqnt_auth import Argon2Hasher, ConfigurationError, MemoryKeyStore
from aqnt_auth.console import Admin, Call, Console, Request, Response, json_response
from aqnt_auth.console import _app as app_module
from tests.forged import wrong_secret

from .conftest import Keys, body_of, call, error


class TestHeaders:
    """Every answer carries Cache-Control: no-store and nosniff."""

    @pytest.mark.parametrize(("method", "path", "status"), [
        ("GET", "/api/keys", 401),
        ("GET", "/api/nothing", 404),
        ("DELETE", "/api/keys", 405),
        ("GET", "/nothing", 404),
    ])
    def test_errors(self, console: Console, method: str, path: str, status: int) -> None:
        response = call(console, method, path)
        assert response.status == status
        assert response.header("Cache-Control") == "no-store"
        assert response.header("X-Content-Type-Options") == "nosniff"

    def test_success(self, console: Console, keys: Keys) -> None:
        response = call(console, "GET", "/api/keys", key=keys.read)
        assert response.status == 200
        assert response.header("Cache-Control") == "no-store"
        assert response.header("X-Content-Type-Options") == "nosniff"
        assert response.header("Content-Type") == "application/json"

    def test_response_hooks_run_last(self, console: Console, keys: Keys) -> None:
        seen: list[str] = []

        def hook(request: Request, response: Response) -> None:
            seen.append(request.path)
            response.headers.append(("X-Frame-Options", "DENY"))

        console.response_hooks.append(hook)
        assert call(console, "GET", "/nothing").header("X-Frame-Options") == "DENY"
        assert call(console, "GET", "/api/keys", key=keys.read).header("X-Frame-Options") == "DENY"
        assert seen == ["/nothing", "/api/keys"]


class TestRouting:
    """404 and 405 in JSON under /api/, in HTML elsewhere; HEAD is GET without a body."""

    def test_api_not_found(self, console: Console) -> None:
        response = call(console, "GET", "/api/keys/abc/nothing")
        assert (response.status, body_of(response)) == (404, error("not_found"))

    def test_api_method_not_allowed(self, console: Console) -> None:
        response = call(console, "PUT", "/api/keys/abc")
        assert (response.status, body_of(response)) == (405, error("method_not_allowed"))
        assert response.header("Allow") == "GET, HEAD, PATCH"

    def test_html_not_found(self, console: Console) -> None:
        response = call(console, "GET", "/nothing")
        assert response.status == 404
        assert response.header("Content-Type") == "text/html; charset=utf-8"
        assert b"No such page or API route" in response.body

    def test_html_method_not_allowed(self, console: Console) -> None:
        console.router.add("GET", "/page", lambda c: Response(200, [], b"page"),
                           access="public")
        response = call(console, "POST", "/page")
        assert response.status == 405
        assert response.header("Allow") == "GET, HEAD"
        assert response.header("Content-Type") == "text/html; charset=utf-8"

    def test_params_and_head(self, console: Console) -> None:
        got: list[dict[str, str]] = []

        def view(c: Call) -> Response:
            got.append(dict(c.params))
            return Response(200, [("Content-Type", "text/plain")], b"hello")

        console.router.add("GET", "/things/{id}/parts/{part}", view, access="public")
        assert call(console, "GET", "/things/a1/parts/b2").body == b"hello"
        head = call(console, "HEAD", "/things/a1/parts/b2")
        assert (head.status, head.body) == (200, b"")
        assert got == [{"id": "a1", "part": "b2"}] * 2
        # A parameter is one path segment.
        assert call(console, "GET", "/things/a/b/parts/c").status == 404

    def test_mount_point_without_slash_redirects(self, console: Console) -> None:
        response = console.handle(Request("GET", "", root_path="/keys-admin"))
        assert (response.status, response.header("Location")) == (308, "/keys-admin/")

    def test_route_registered_twice(self, console: Console) -> None:
        with pytest.raises(ConfigurationError, match="registered twice"):
            console.router.add("GET", "/api/keys", lambda c: Response(200))

    def test_pattern_must_be_absolute(self, console: Console) -> None:
        with pytest.raises(ConfigurationError, match="must start with '/'"):
            console.router.add("GET", "keys", lambda c: Response(200))

    def test_a_failing_view_is_a_500_without_details(
            self, console: Console, caplog: pytest.LogCaptureFixture) -> None:
        def boom(c: Call) -> Response:
            raise RuntimeError("internal detail")

        console.router.add("GET", "/api/boom", boom, access="public")
        with caplog.at_level(logging.ERROR, "aqnt_auth.console"):
            response = call(console, "GET", "/api/boom")
        assert response.status == 500
        assert body_of(response) == {"error": {"type": "api_error", "message": "Internal error",
                                               "code": "internal_error"}}
        assert b"internal detail" not in response.body
        assert "GET /api/boom failed" in caplog.text


class TestBearerAdmin:
    """An API route takes an admin key in Authorization: Bearer."""

    def test_no_credential(self, console: Console) -> None:
        response = call(console, "GET", "/api/keys")
        assert (response.status, body_of(response)) == (401, error("missing_api_key"))
        assert response.header("WWW-Authenticate") == 'Bearer realm="api"'

    def test_invalid_key(self, console: Console, keys: Keys) -> None:
        # Another last character (the checksum's): "x" when the key ends in "x"
        # would be the same key.
        typo = keys.admin[:-1] + ("x" if keys.admin[-1] != "x" else "y")
        response = call(console, "GET", "/api/keys", key=typo)
        assert (response.status, body_of(response)) == (401, error("invalid_api_key"))

    def test_key_without_console_scope(self, console: Console, keys: Keys) -> None:
        response = call(console, "GET", "/api/keys", key=keys.plain)
        assert (response.status, body_of(response)) == (403, error("insufficient_scope"))
        assert response.header("WWW-Authenticate") == (
            'Bearer realm="api", error="insufficient_scope", scope="aqnt:read"')

    def test_read_only_admin_reads(self, console: Console, keys: Keys) -> None:
        assert call(console, "GET", "/api/keys", key=keys.read).status == 200

    def test_read_only_admin_cannot_change(self, console: Console, keys: Keys) -> None:
        response = call(console, "POST", "/api/keys", key=keys.read, body={"name": "x"})
        assert (response.status, body_of(response)) == (403, error("insufficient_scope"))
        assert response.header("WWW-Authenticate") == (
            'Bearer realm="api", error="insufficient_scope", scope="aqnt:admin"')

    def test_admin_changes(self, console: Console, keys: Keys) -> None:
        response = call(console, "POST", "/api/keys", key=keys.admin, body={"name": "x"})
        assert response.status == 201

    def test_revoked_admin_key(self, console: Console, keys: Keys) -> None:
        console.manager.revoke(keys.admin_id)
        response = call(console, "GET", "/api/keys", key=keys.admin)
        assert (response.status, body_of(response)) == (401, error("key_revoked"))

    def test_custom_scopes(self, memory_store: MemoryKeyStore, cheap_hasher: Argon2Hasher,
                           keys: Keys) -> None:
        console = Console(memory_store, secret_key="s" * 32, hashers=[cheap_hasher],
                          admin_scope="charges:write", read_scope="charges:read")
        # The billing key carries charges:write: an admin of this console.
        assert call(console, "POST", "/api/keys/" + keys.read_id + "/disable",
                    key=keys.plain).status == 200
        response = call(console, "GET", "/api/keys", key=keys.admin)
        assert (response.status, body_of(response)) == (403, error("insufficient_scope"))
        console.close()

    def test_failed_attempts_hit_the_failure_limiter(self, console: Console,
                                                     keys: Keys) -> None:
        wrong = wrong_secret(keys.admin)
        codes = [body_of(call(console, "GET", "/api/keys", key=wrong))["error"]["code"]
                 for _ in range(11)]
        # The per-key-id limit (10 a minute) refuses the 11th at once.
        assert codes == ["invalid_api_key"] * 10 + ["rate_limited"]
        response = call(console, "GET", "/api/keys", key=wrong)
        assert (response.status, body_of(response)) == (429, error("rate_limited"))
        assert response.header("Retry-After") is not None


class TestAuthorizeHook:
    """The host app's authorize(request) hook, and added methods."""

    def _console(self, store: MemoryKeyStore, hasher: Argon2Hasher,
                 authorize: object) -> Console:
        return Console(store, secret_key="s" * 32, hashers=[hasher], hasher=hasher,
                       authorize=authorize)  # type: ignore[arg-type]

    def test_actor_name_may_write(self, memory_store: MemoryKeyStore,
                                  cheap_hasher: Argon2Hasher) -> None:
        console = self._console(memory_store, cheap_hasher, lambda r: "user:alice")
        assert console.authenticate(Request("GET", "/api/keys")) == Admin(
            "user:alice", True, "hook")
        response = call(console, "POST", "/api/keys", body={"name": "From the hook"})
        assert response.status == 201

    def test_read_only_admin(self, memory_store: MemoryKeyStore,
                             cheap_hasher: Argon2Hasher) -> None:
        console = self._console(memory_store, cheap_hasher,
                                lambda r: Admin("user:bob", False))
        assert call(console, "GET", "/api/keys").status == 200
        response = call(console, "POST", "/api/keys", body={"name": "x"})
        assert (response.status, body_of(response)) == (403, error("insufficient_scope"))

    def test_none_is_signed_out(self, memory_store: MemoryKeyStore,
                                cheap_hasher: Argon2Hasher) -> None:
        console = self._console(memory_store, cheap_hasher, lambda r: None)
        response = call(console, "GET", "/api/keys")
        assert (response.status, body_of(response)) == (401, error("missing_api_key"))

    def test_hook_sees_the_native_request(self, memory_store: MemoryKeyStore,
                                          cheap_hasher: Argon2Hasher) -> None:
        native = object()
        seen: list[object] = []

        def authorize(request: Request) -> None:
            seen.append(request.native)

        console = self._console(memory_store, cheap_hasher, authorize)
        console.handle(Request("GET", "/api/keys", native=native))
        assert seen == [native]

    def test_bearer_decides_alone_on_the_api(self, memory_store: MemoryKeyStore,
                                             cheap_hasher: Argon2Hasher) -> None:
        console = self._console(memory_store, cheap_hasher, lambda r: "user:alice")
        response = call(console, "GET", "/api/keys", key="sk_live_not_a_key")
        assert (response.status, body_of(response)) == (401, error("invalid_api_key"))

    @pytest.mark.parametrize("answer", [42, "x" * 201, "line\nbreak",
                                        Admin("x" * 201, True)])
    def test_bad_hook_answer(self, memory_store: MemoryKeyStore, cheap_hasher: Argon2Hasher,
                             answer: object) -> None:
        console = self._console(memory_store, cheap_hasher, lambda r: answer)
        assert call(console, "GET", "/api/keys").status == 500

    def test_cookie_change_needs_json(self, memory_store: MemoryKeyStore,
                                      cheap_hasher: Argon2Hasher) -> None:
        """A browser's credentials (hook or session) change keys only with a
        JSON request, which a cross-site form cannot send."""
        console = self._console(memory_store, cheap_hasher, lambda r: "user:alice")
        key_id = console.manager.create("Victim").record.id
        for content_type in (None, "application/x-www-form-urlencoded", "text/plain"):
            response = call(console, "POST", f"/api/keys/{key_id}/revoke",
                            content_type=content_type, raw=b"")
            assert (response.status, body_of(response)) == (415, error("unsupported_media_type"))
        assert console.manager.get(key_id).revoked_at is None
        response = call(console, "POST", f"/api/keys/{key_id}/revoke",
                        content_type="application/json")
        assert response.status == 200

    def test_added_authentication(self, console: Console, keys: Keys) -> None:
        console.add_authentication(
            lambda r: Admin("session:carol", False, "session") if r.cookies.get("s") else None)
        signed_in = call(console, "GET", "/api/keys", headers={"cookie": "s=1"})
        assert signed_in.status == 200
        assert call(console, "GET", "/api/keys").status == 401

    def test_html_route_signed_out(self, console: Console) -> None:
        """A signed-out visitor of a page is sent to the sign-in form (the
        pages' answer), under the mount's prefix."""
        console.router.add("GET", "/extra", lambda c: Response(200, [], b"extra"))
        response = call(console, "GET", "/extra")
        assert (response.status, response.header("Location")) == (
            303, "/sign-in?next=%2Fextra")
        response = console.handle(Request("GET", "/extra", root_path="/admin"))
        assert (response.status, response.header("Location")) == (
            303, "/admin/sign-in?next=%2Fextra")

    def test_html_routes_ignore_bearer(self, console: Console, keys: Keys) -> None:
        console.router.add("GET", "/extra", lambda c: Response(200, [], b"extra"))
        assert call(console, "GET", "/extra", key=keys.admin).status == 303
        assert call(console, "GET", "/keys", key=keys.admin).status == 303


class TestActor:
    def test_key_actor(self, console: Console, keys: Keys) -> None:
        admin = console.key_admin(Request("GET", "/api/keys",
                                          headers={"authorization": f"Bearer {keys.admin}"}))
        assert admin == Admin(f"key:{keys.admin_id}", True, "key")
        assert not admin.by_cookie


class TestSecretKey:
    def test_random_secret_warns_once(self, memory_store: MemoryKeyStore,
                                      caplog: pytest.LogCaptureFixture,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(app_module, "_secret_warned", False)
        with caplog.at_level(logging.WARNING, "aqnt_auth.console"):
            first = Console(memory_store)
            second = Console(memory_store)
        assert len(first.secret_key) == 32
        assert first.secret_key != second.secret_key
        warnings = [r for r in caplog.records if "no secret_key given" in r.getMessage()]
        assert len(warnings) == 1
        first.close()
        second.close()

    def test_given_secret(self, memory_store: MemoryKeyStore) -> None:
        console = Console(memory_store, secret_key="k" * 40)
        assert console.secret_key == b"k" * 40
        console.close()

    def test_short_secret_refused(self, memory_store: MemoryKeyStore) -> None:
        with pytest.raises(ConfigurationError, match="at least 16 bytes"):
            Console(memory_store, secret_key="short")

    def test_same_scopes_refused(self, memory_store: MemoryKeyStore) -> None:
        with pytest.raises(ConfigurationError, match="two different scopes"):
            Console(memory_store, secret_key="k" * 32, admin_scope="x", read_scope="x")


def test_json_response() -> None:
    response = json_response({"a": 1}, 201, [("X-A", "b")])
    assert (response.status, response.body) == (201, b'{"a": 1}')
    assert response.headers == [("Content-Type", "application/json"), ("X-A", "b")]


def test_without_jinja2(memory_store: MemoryKeyStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the console extra, building a console names the extra to install."""
    import sys

    monkeypatch.setitem(sys.modules, "jinja2", None)
    monkeypatch.delitem(sys.modules, "aqnt_auth.console._pages")
    with pytest.raises(ConfigurationError,
                       match=r"needs its extra: pip install 'aqnt-auth\[console\]'"):
        Console(memory_store, secret_key="s" * 32)
