"""Authenticator: the verification decision, its order, and both drivers."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import sqlite3
import threading
from typing import ClassVar

import pytest

from aqnt_auth import (
    Argon2Hasher,
    Authenticator,
    ConfigurationError,
    DisabledAPIKey,
    InvalidAPIKey,
    IPNotAllowed,
    KeyManager,
    MissingAPIKey,
    PermissionDenied,
    RevokedAPIKey,
    StoreUnavailable,
    checksum,
    require_scopes,
)
from tests import bodies
from tests.forged import wrong_secret

from ._support import BlockingInstrumentedStore, CountingHasher, InstrumentedStore

UTC = dt.timezone.utc


class TestSuccess:
    def test_principal(self, auth: Authenticator, keys: KeyManager) -> None:
        """A valid key gives its principal: id, name, mode, livemode, scopes."""
        issued = keys.create("Production Server", mode="live", scopes=["charges:write"],
                             owner="acct_1", metadata={"plan": "pro"})
        principal = auth.authenticate(f"Bearer {issued.key}")
        assert principal.id == issued.record.id
        assert principal.name == "Production Server"
        assert principal.livemode is True
        assert principal.scopes == frozenset({"charges:write"})
        assert principal.owner == "acct_1"
        assert principal.metadata["plan"] == "pro"
        assert "hash" not in principal.to_dict()
        assert issued.key not in repr(principal)

    def test_test_mode(self, auth: Authenticator, keys: KeyManager) -> None:
        """The app can always tell the mode of the key that authenticated."""
        issued = keys.create("ci", mode="test")
        principal = auth.authenticate(f"Bearer {issued.key}")
        assert principal.mode == "test"
        assert principal.livemode is False

    @pytest.mark.anyio
    async def test_async(self, auth: Authenticator, keys: KeyManager) -> None:
        issued = keys.create("async")
        principal = await auth.authenticate_async(f"Bearer {issued.key}")
        assert principal.id == issued.record.id

    def test_warm_key_runs_argon2_once(self, auth: Authenticator, keys: KeyManager,
                                       hasher: CountingHasher) -> None:
        """The second request with a key is served from the verification cache."""
        issued = keys.create("warm")
        for _ in range(5):
            auth.authenticate(f"Bearer {issued.key}")
        assert hasher.calls == 1

    def test_store_read_on_every_request(self, auth: Authenticator, keys: KeyManager,
                                         store: InstrumentedStore) -> None:
        """The cache saves argon2, never the record read."""
        issued = keys.create("reads")
        for _ in range(3):
            auth.authenticate(f"Bearer {issued.key}")
        assert store.gets == 3


class TestOrder:
    def test_malformed_costs_no_store_call(self, auth: Authenticator,
                                           store: InstrumentedStore,
                                           hasher: CountingHasher) -> None:
        """Garbage and typos are rejected before any store call or hash."""
        for header in ["Bearer sk_live_nope", "Bearer " + "sk_live_" + "a" * 50]:
            with pytest.raises(InvalidAPIKey):
                auth.authenticate(header)
        assert (store.gets, hasher.calls) == (0, 0)

    def test_unknown_id_costs_no_argon2(self, auth: Authenticator, hasher: CountingHasher,
                                        store: InstrumentedStore) -> None:
        """An unknown id is one store read and no argon2."""
        key = auth.format.generate("live").raw
        with pytest.raises(InvalidAPIKey):
            auth.authenticate(f"Bearer {key}")
        assert (store.gets, hasher.calls) == (1, 0)

    def test_wrong_secret(self, auth: Authenticator, keys: KeyManager) -> None:
        issued = keys.create("k")
        with pytest.raises(InvalidAPIKey):
            auth.authenticate(f"Bearer {wrong_secret(issued.key)}")

    def test_wrong_secret_is_never_cached(self, auth: Authenticator, keys: KeyManager,
                                          hasher: CountingHasher) -> None:
        issued = keys.create("k")
        bad = f"Bearer {wrong_secret(issued.key)}"
        for _ in range(3):
            with pytest.raises(InvalidAPIKey):
                auth.authenticate(bad)
        assert hasher.calls == 3
        assert len(auth.cache) == 0

    def test_revoked_needs_the_secret_first(self, auth: Authenticator,
                                            keys: KeyManager) -> None:
        """key_revoked only after the secret verified; an id alone reveals nothing."""
        issued = keys.create("k")
        keys.revoke(issued.record.id)
        with pytest.raises(InvalidAPIKey):
            auth.authenticate(f"Bearer {wrong_secret(issued.key)}")
        with pytest.raises(RevokedAPIKey):
            auth.authenticate(f"Bearer {issued.key}")

    def test_revocation_is_immediate_for_a_warm_key(self, auth: Authenticator,
                                                    keys: KeyManager) -> None:
        issued = keys.create("k")
        auth.authenticate(f"Bearer {issued.key}")
        keys.revoke(issued.record.id)
        with pytest.raises(RevokedAPIKey):
            auth.authenticate(f"Bearer {issued.key}")

    def test_disabled_needs_the_secret_first(self, auth: Authenticator,
                                             keys: KeyManager) -> None:
        """key_disabled only after the secret verified, like key_revoked."""
        issued = keys.create("k")
        keys.disable(issued.record.id)
        with pytest.raises(InvalidAPIKey):
            auth.authenticate(f"Bearer {wrong_secret(issued.key)}")
        with pytest.raises(DisabledAPIKey) as raised:
            auth.authenticate(f"Bearer {issued.key}")
        assert raised.value.status_code == 401
        assert raised.value.to_json() == bodies.DISABLED

    @pytest.mark.anyio
    async def test_disable_and_enable_are_immediate_for_a_warm_key(
            self, auth: Authenticator, keys: KeyManager) -> None:
        """Every path (sync, async, nowait) refuses a warm key once disabled,
        and takes it again once enabled, without argon2."""
        issued = keys.create("k")
        header = f"Bearer {issued.key}"
        auth.authenticate(header)
        keys.disable(issued.record.id)
        with pytest.raises(DisabledAPIKey):
            auth.authenticate(header)
        with pytest.raises(DisabledAPIKey):
            await auth.authenticate_async(header)
        with pytest.raises(DisabledAPIKey):
            auth.authenticate_nowait(header)
        keys.enable(issued.record.id)
        assert auth.authenticate(header).id == issued.record.id
        assert (await auth.authenticate_async(header)).id == issued.record.id
        principal = auth.authenticate_nowait(header)
        assert principal is not None
        assert principal.disabled_at is None

    def test_a_disabled_key_that_expired_is_expired(self, store: InstrumentedStore,
                                                    hasher: CountingHasher,
                                                    keys: KeyManager) -> None:
        """An expiry outranks a disable, as KeyRecord.status() says."""
        issued = keys.create("k", expires_in=dt.timedelta(hours=1))
        keys.disable(issued.record.id)
        now = [issued.record.created_at.timestamp()]
        with Authenticator(store, hashers=[hasher], clock=lambda: now[0]) as auth:
            with pytest.raises(DisabledAPIKey):
                auth.authenticate(f"Bearer {issued.key}")
            now[0] += 3600
            with pytest.raises(RevokedAPIKey):
                auth.authenticate(f"Bearer {issued.key}")

    @pytest.mark.anyio
    async def test_ip_allowlist_on_every_path(self, auth: Authenticator, keys: KeyManager,
                                              hasher: CountingHasher) -> None:
        """Cold and warm, sync and async: from an allowed address the key works,
        from another it gets ip_not_allowed, only after the secret verified;
        the nowait path hands such a key to the async one, which has the client."""
        issued = keys.create("k", allowed_ips=["192.0.2.0/24", "2001:db8::/32"])
        header = f"Bearer {issued.key}"
        with pytest.raises(InvalidAPIKey):
            auth.authenticate(f"Bearer {wrong_secret(issued.key)}", client="198.51.100.1")
        with pytest.raises(IPNotAllowed) as raised:
            auth.authenticate(header, client="198.51.100.1")  # cold
        assert raised.value.to_json() == bodies.IP_NOT_ALLOWED
        assert auth.authenticate(header, client="192.0.2.1").id == issued.record.id
        calls = hasher.calls
        with pytest.raises(IPNotAllowed):
            auth.authenticate(header, client="198.51.100.1")  # warm
        with pytest.raises(IPNotAllowed):
            auth.authenticate(header)  # no client: fails closed
        assert auth.authenticate(header, client="::ffff:192.0.2.9").id == issued.record.id
        assert auth.authenticate_nowait(header) is None
        with pytest.raises(IPNotAllowed):
            await auth.authenticate_async(header, client="198.51.100.1")
        principal = await auth.authenticate_async(header, client="2001:db8::5")
        assert principal.allowed_ips == ("192.0.2.0/24", "2001:db8::/32")
        assert hasher.calls == calls  # all warm

    def test_ip_allowlist_sees_the_client_behind_trusted_proxies(
            self, store: InstrumentedStore, hasher: CountingHasher, keys: KeyManager) -> None:
        """The client is the one TrustedProxies resolves: X-Forwarded-For past
        a trusted proxy, the peer itself otherwise (a spoofed header is ignored)."""
        issued = keys.create("k", allowed_ips=["203.0.113.7"])
        header = f"Bearer {issued.key}"
        with Authenticator(store, hashers=[hasher], trusted_proxies=["10.0.0.0/8"]) as auth:
            assert auth.authenticate(header, client="10.1.1.1",
                                     x_forwarded_for="203.0.113.7").id == issued.record.id
            assert auth.authenticate(header, client="10.1.1.1",
                                     forwarded="for=203.0.113.7").id == issued.record.id
            with pytest.raises(IPNotAllowed):
                auth.authenticate(header, client="10.1.1.1", x_forwarded_for="198.51.100.1")
            with pytest.raises(IPNotAllowed):
                auth.authenticate(header, client="192.0.2.1", x_forwarded_for="203.0.113.7")

    def test_a_key_without_policies_stays_nowait(self, auth: Authenticator,
                                                 keys: KeyManager) -> None:
        """No allowlist: no client needed, the nowait path answers as before."""
        issued = keys.create("k")
        assert not issued.record.policed
        header = f"Bearer {issued.key}"
        auth.authenticate(header)
        principal = auth.authenticate_nowait(header)
        assert principal is not None
        assert principal.allowed_ips == ()

    def test_expired_gets_the_revoked_body(self, store: InstrumentedStore,
                                           hasher: CountingHasher, keys: KeyManager) -> None:
        """An expired key answers key_revoked, as the product docs list it."""
        issued = keys.create("k", expires_in=dt.timedelta(hours=1))
        now = [issued.record.created_at.timestamp()]
        with Authenticator(store, hashers=[hasher], clock=lambda: now[0]) as auth:
            auth.authenticate(f"Bearer {issued.key}")
            now[0] += 3600
            with pytest.raises(RevokedAPIKey):
                auth.authenticate(f"Bearer {issued.key}")

    def test_mode_not_allowed(self, store: InstrumentedStore, hasher: CountingHasher,
                              keys: KeyManager) -> None:
        """A key of a mode this deployment does not allow is invalid_api_key."""
        issued = keys.create("k", mode="test")
        with Authenticator(store, hashers=[hasher], allowed_modes=["live"]) as auth, \
                pytest.raises(InvalidAPIKey):
            auth.authenticate(f"Bearer {issued.key}")

    def test_mode_swapped_in_the_key_is_invalid(self, auth: Authenticator,
                                                keys: KeyManager,
                                                hasher: CountingHasher) -> None:
        """sk_test_<id of a live key><its secret> is invalid, without argon2."""
        issued = keys.create("k", mode="live")
        head = "sk_test_" + issued.key[8:-6]
        with pytest.raises(InvalidAPIKey):
            auth.authenticate(f"Bearer {head}{checksum(head)}")
        assert hasher.calls == 0

    def test_missing(self, auth: Authenticator) -> None:
        with pytest.raises(MissingAPIKey):
            auth.authenticate(None)

    def test_changed_hash_misses_the_cache(self, auth: Authenticator, keys: KeyManager,
                                           store: InstrumentedStore,
                                           hasher: CountingHasher) -> None:
        """A stored hash that changed is verified again (a rehash, a restore...):
        the warm path hands over to the flow."""
        issued = keys.create("k")
        auth.authenticate(f"Bearer {issued.key}")
        record = store.get(issued.record.id)
        assert record is not None
        new_hash = hasher.hash(issued.key[20:52])
        assert store.replace_hash(record.id, record.hash, new_hash)
        assert auth.authenticate(f"Bearer {issued.key}").id == issued.record.id
        assert hasher.calls == 2


class TestRestrictions:
    def test_read_only(self, auth: Authenticator, keys: KeyManager) -> None:
        issued = keys.create("ro", read_only=True)
        header = f"Bearer {issued.key}"
        for method in ("GET", "HEAD", "OPTIONS"):
            auth.authenticate(header, method=method, path="/v1/x")
        for method in ("POST", "PUT", "PATCH", "DELETE", "TRACE"):
            with pytest.raises(PermissionDenied):
                auth.authenticate(header, method=method, path="/v1/x")

    def test_allowed_paths_on_segment_boundaries(self, auth: Authenticator,
                                                 keys: KeyManager) -> None:
        issued = keys.create("paths", allowed_paths=["/v1/charges"])
        header = f"Bearer {issued.key}"
        for path in ("/v1/charges", "/v1/charges/", "/v1/charges/ch_1"):
            auth.authenticate(header, method="GET", path=path)
        for path in ("/v1/chargesX", "/v1/refunds", "/v1/charges/../admin", "//v1/charges",
                     "/v1/charges//x", "/"):
            with pytest.raises(PermissionDenied):
                auth.authenticate(header, method="GET", path=path)

    def test_scopes(self, auth: Authenticator, keys: KeyManager) -> None:
        issued = keys.create("scoped", scopes=["charges:read"])
        principal = auth.authenticate(f"Bearer {issued.key}")
        require_scopes(principal, ["charges:read"])
        with pytest.raises(PermissionDenied) as info:
            require_scopes(principal, ["charges:read", "charges:write"])
        response = auth.render_error(info.value)
        assert response.status == 403
        assert dict(response.headers)["WWW-Authenticate"] == (
            'Bearer realm="api", error="insufficient_scope", scope="charges:read charges:write"'
        )


class TestErrorsOnTheWire:
    BODIES: ClassVar[dict[str, bytes]] = {
        "missing": bodies.MISSING, "invalid": bodies.INVALID, "revoked": bodies.REVOKED,
    }

    def test_exact_bodies_and_challenges(self, keys: KeyManager, store: InstrumentedStore,
                                         hasher: CountingHasher) -> None:
        """The three 401 bodies are byte-exact; the realm is configurable."""
        issued = keys.create("k")
        keys.revoke(issued.record.id)
        with Authenticator(store, hashers=[hasher], realm="payments") as auth:
            cases = {"missing": None, "invalid": "Bearer nope", "revoked": f"Bearer {issued.key}"}
            for name, header in cases.items():
                with pytest.raises((MissingAPIKey, InvalidAPIKey, RevokedAPIKey)) as info:
                    auth.authenticate(header)
                response = auth.render_error(info.value)
                assert response.status == 401
                assert response.body == self.BODIES[name]
                headers = dict(response.headers)
                assert headers["Content-Type"] == "application/json"
                challenge = 'Bearer realm="payments"'
                if name != "missing":
                    challenge += ', error="invalid_token"'
                assert headers["WWW-Authenticate"] == challenge

    @pytest.mark.parametrize(
        ("template", "body", "challenge"),
        [
            ("{key}", bodies.MISSING, bodies.BARE_KEY_CHALLENGE),
            ("  {key}\t", bodies.MISSING, bodies.BARE_KEY_CHALLENGE),
            ("Token {key}", bodies.MISSING, bodies.BARE_KEY_CHALLENGE),
            ("Bearer{key}", bodies.MISSING, bodies.BARE_KEY_CHALLENGE),
            ("Bearer Bearer {key}", bodies.INVALID, bodies.DOUBLED_CHALLENGE),
            ("bearer BEARER   {key}", bodies.INVALID, bodies.DOUBLED_CHALLENGE),
            # Unchanged: no key of ours in sight, or a plain bad key.
            ("Basic dXNlcjpwYXNz", bodies.MISSING, bodies.CHALLENGE),
            ("Bearer", bodies.MISSING, bodies.CHALLENGE),
            ("Bearer {key} x", bodies.INVALID, bodies.INVALID_CHALLENGE),
            ("Bearer x{key}", bodies.INVALID, bodies.INVALID_CHALLENGE),
            ("Bearer Basic {key}", bodies.INVALID, bodies.INVALID_CHALLENGE),
        ],
    )
    def test_bad_headers_explain_themselves(self, auth: Authenticator, keys: KeyManager,
                                            template: str, body: bytes, challenge: str) -> None:
        """A key sent without Bearer, or with Bearer twice, gets an
        error_description naming the fix; the code and body stay the contract's."""
        header = template.format(key=keys.create("k").key)
        with pytest.raises((MissingAPIKey, InvalidAPIKey)) as info:
            auth.authenticate(header)
        response = auth.render_error(info.value)
        assert (response.status, response.body) == (401, body)
        assert dict(response.headers)["WWW-Authenticate"] == challenge
        assert header.strip().rpartition(" ")[2] not in str(info.value)

    def test_restrictions_explain_themselves(self, auth: Authenticator,
                                             keys: KeyManager) -> None:
        """A read-only key's write says "read-only key"; a key outside its
        paths says so; the body is the one 403 of the contract."""
        reader = f"Bearer {keys.create('ro', read_only=True).key}"
        limited = f"Bearer {keys.create('p', allowed_paths=['/v1/charges']).key}"
        for header, method, path, challenge in [
            (reader, "POST", "/v1/x", bodies.READ_ONLY_CHALLENGE),
            (limited, "GET", "/v1/refunds", bodies.PATHS_CHALLENGE),
        ]:
            with pytest.raises(PermissionDenied) as info:
                auth.authenticate(header, method=method, path=path)
            response = auth.render_error(info.value)
            assert (response.status, response.body) == (403, bodies.FORBIDDEN)
            assert dict(response.headers)["WWW-Authenticate"] == challenge

    def test_described_challenge_takes_the_realm(self, store: InstrumentedStore,
                                                 keys: KeyManager,
                                                 hasher: CountingHasher) -> None:
        with Authenticator(store, hashers=[hasher], realm="payments") as auth, \
                pytest.raises(MissingAPIKey) as info:
            auth.authenticate(keys.create("k").key)
        assert dict(auth.render_error(info.value).headers)["WWW-Authenticate"] == (
            'Bearer realm="payments", error_description="the key needs the Bearer scheme: '
            'use Authorization: Bearer <key>"'
        )

    def test_store_unavailable(self, auth: Authenticator, keys: KeyManager,
                               store: InstrumentedStore) -> None:
        """A broken store is a 503 with Retry-After, never a 401."""
        issued = keys.create("k")
        store.failure = sqlite3.OperationalError("database is locked")
        with pytest.raises(StoreUnavailable) as info:
            auth.authenticate(f"Bearer {issued.key}")
        response = auth.render_error(info.value)
        assert response.status == 503
        assert response.body == bodies.UNAVAILABLE
        assert dict(response.headers)["Retry-After"] == "1"

    @pytest.mark.anyio
    async def test_store_unavailable_async(self, auth: Authenticator, keys: KeyManager,
                                           store: InstrumentedStore) -> None:
        issued = keys.create("k")
        store.failure = RuntimeError("boom")
        with pytest.raises(StoreUnavailable):
            await auth.authenticate_async(f"Bearer {issued.key}")

    def test_bad_realm(self) -> None:
        with pytest.raises(ConfigurationError):
            Authenticator("memory://", realm='a"b')

    def test_no_key_in_logs_or_messages(self, auth: Authenticator, keys: KeyManager,
                                        store: InstrumentedStore,
                                        caplog: pytest.LogCaptureFixture) -> None:
        """Neither a log line nor an error message contains the presented key."""
        caplog.set_level(logging.DEBUG)
        issued = keys.create("k")
        seen: list[str] = []
        for header in [f"Bearer {issued.key}", f"Bearer {wrong_secret(issued.key)}",
                       f"Bearer {issued.key}x"]:
            try:
                auth.authenticate(header)
            except Exception as exc:
                seen += [str(exc), repr(exc)]
        store.failure = RuntimeError("boom")
        with pytest.raises(StoreUnavailable) as info:
            auth.authenticate(f"Bearer {issued.key}")
        seen += [str(info.value), repr(info.value), caplog.text, repr(auth)]
        for text in seen:
            assert issued.key[8:] not in text
            assert issued.key[20:52] not in text


class TestConcurrency:
    def test_single_flight_threads(self, keys: KeyManager, store: InstrumentedStore) -> None:
        """Concurrent first requests with the same key run argon2 once."""
        gate = threading.Event()
        hasher = CountingHasher(gate)
        issued = keys.create("k")
        with Authenticator(store, hashers=[hasher]) as auth:
            results: list[str] = []

            def call() -> None:
                results.append(auth.authenticate(f"Bearer {issued.key}").id)

            threads = [threading.Thread(target=call) for _ in range(10)]
            for t in threads:
                t.start()
            while hasher.calls == 0:
                threading.Event().wait(0.001)
            gate.set()
            for t in threads:
                t.join()
        assert results == [issued.record.id] * 10
        assert hasher.calls == 1

    @pytest.mark.anyio
    async def test_single_flight_async(self, keys: KeyManager,
                                       store: InstrumentedStore) -> None:
        gate = threading.Event()
        hasher = CountingHasher(gate)
        issued = keys.create("k")
        auth = Authenticator(store, hashers=[hasher])
        tasks = [asyncio.ensure_future(auth.authenticate_async(f"Bearer {issued.key}"))
                 for _ in range(10)]
        while hasher.calls == 0:
            await asyncio.sleep(0.001)
        gate.set()
        principals = await asyncio.gather(*tasks)
        assert {p.id for p in principals} == {issued.record.id}
        assert hasher.calls == 1
        await auth.aclose()

    @pytest.mark.anyio
    async def test_cancelled_waiter_does_not_cancel_the_flight(
        self, keys: KeyManager, store: InstrumentedStore
    ) -> None:
        """One client hanging up does not fail the others waiting on the same argon2."""
        gate = threading.Event()
        hasher = CountingHasher(gate)
        issued = keys.create("k")
        auth = Authenticator(store, hashers=[hasher])
        first = asyncio.ensure_future(auth.authenticate_async(f"Bearer {issued.key}"))
        second = asyncio.ensure_future(auth.authenticate_async(f"Bearer {issued.key}"))
        while hasher.calls == 0:
            await asyncio.sleep(0.001)
        first.cancel()
        gate.set()
        assert (await second).id == issued.record.id
        assert hasher.calls == 1
        await auth.aclose()

    def test_argon2_concurrency_is_bounded_threads(self, keys: KeyManager,
                                                   store: InstrumentedStore) -> None:
        """200 concurrent wrong secrets never run more argon2 at once than the bound."""
        hasher = CountingHasher()
        issued = keys.create("k")
        # No failure limiter and a queue long enough for all: this counts
        # the 200 verifications and how many ran at once (the queue's own
        # bounds are tested in test_backlog).
        auth = Authenticator(store, hashers=[hasher], max_concurrent_hashes=2, rate_limit=None,
                             max_queued_hashes=200, max_hash_wait=60)
        fmt = auth.format

        def attempt() -> None:
            head = issued.key[:20] + fmt.generate("live").secret
            with pytest.raises(InvalidAPIKey):
                auth.authenticate(f"Bearer {head}{checksum(head)}")

        threads = [threading.Thread(target=attempt) for _ in range(200)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert hasher.calls == 200
        assert 1 <= hasher.peak <= 2
        auth.close()

    @pytest.mark.anyio
    async def test_argon2_concurrency_is_bounded_async(self, keys: KeyManager,
                                                       store: InstrumentedStore) -> None:
        hasher = CountingHasher()
        issued = keys.create("k")
        # No failure limiter and a queue long enough for all: this counts
        # the 200 verifications and how many ran at once (the queue's own
        # bounds are tested in test_backlog).
        auth = Authenticator(store, hashers=[hasher], max_concurrent_hashes=2, rate_limit=None,
                             max_queued_hashes=200, max_hash_wait=60)

        async def attempt() -> None:
            head = issued.key[:20] + auth.format.generate("live").secret
            with pytest.raises(InvalidAPIKey):
                await auth.authenticate_async(f"Bearer {head}{checksum(head)}")

        await asyncio.gather(*(attempt() for _ in range(200)))
        assert hasher.calls == 200
        assert 1 <= hasher.peak <= 2
        assert threading.get_ident() not in hasher.threads
        await auth.aclose()

    @pytest.mark.anyio
    async def test_memory_store_stays_on_the_loop(self, auth: Authenticator,
                                                  keys: KeyManager,
                                                  store: InstrumentedStore) -> None:
        """A store that does no I/O is called on the event loop thread itself."""
        issued = keys.create("k")
        await auth.authenticate_async(f"Bearer {issued.key}")
        await auth.authenticate_async(f"Bearer {issued.key}")
        assert store.get_threads == {threading.get_ident()}

    @pytest.mark.anyio
    async def test_blocking_store_leaves_the_loop(self, hasher: CountingHasher) -> None:
        """A store that does I/O is called from worker threads, never the loop."""
        store = BlockingInstrumentedStore()
        issued = KeyManager(store, hasher=hasher).create("k")
        async with Authenticator(store, hashers=[hasher]) as auth:
            await auth.authenticate_async(f"Bearer {issued.key}")
        assert threading.get_ident() not in store.get_threads
        assert threading.get_ident() not in hasher.threads


class TestRehash:
    def test_outdated_hash_is_upgraded(self, store: InstrumentedStore) -> None:
        """After a successful verify, check_needs_rehash upgrades the stored hash."""
        old = Argon2Hasher("cheapest")
        issued = KeyManager(store, hasher=old).create("k")
        new = Argon2Hasher(dataclasses.replace(old.parameters, time_cost=2))
        with Authenticator(store, hashers=[new]) as auth:
            auth.authenticate(f"Bearer {issued.key}")
            record = store.get(issued.record.id)
            assert record is not None
            assert record.hash != issued.record.hash
            assert new.needs_rehash(record.hash) is False
            # And the upgraded hash serves the next request without argon2.
            auth.authenticate(f"Bearer {issued.key}")

    def test_stronger_hash_is_not_rewritten(self, store: InstrumentedStore) -> None:
        """A key stored with a stronger profile than the configured one keeps
        its hash on use (it was rewritten with the weaker default before)."""
        weak = Argon2Hasher("cheapest")
        strong = Argon2Hasher(dataclasses.replace(weak.parameters, memory_cost=16, time_cost=2))
        issued = KeyManager(store, hasher=strong).create("k")
        with Authenticator(store, hashers=[weak]) as auth:
            auth.authenticate(f"Bearer {issued.key}")
        record = store.get(issued.record.id)
        assert record is not None
        assert record.hash == issued.record.hash

    @pytest.mark.anyio
    async def test_outdated_hash_is_upgraded_async(self) -> None:
        store = BlockingInstrumentedStore()
        old = Argon2Hasher("cheapest")
        issued = KeyManager(store, hasher=old).create("k")
        new = Argon2Hasher(dataclasses.replace(old.parameters, time_cost=2))
        async with Authenticator(store, hashers=[new]) as auth:
            await auth.authenticate_async(f"Bearer {issued.key}")
        record = store.get(issued.record.id)
        assert record is not None
        assert not new.needs_rehash(record.hash)

    def test_corrupt_stored_hash_is_invalid_and_logged(
        self, auth: Authenticator, keys: KeyManager, store: InstrumentedStore,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        issued = keys.create("k")
        record = store.get(issued.record.id)
        assert record is not None
        store.replace_hash(record.id, record.hash, "$argon2id$corrupt")
        with pytest.raises(InvalidAPIKey):
            auth.authenticate(f"Bearer {issued.key}")
        assert "corrupt" not in caplog.text or issued.key not in caplog.text
        assert any(r.levelno == logging.ERROR for r in caplog.records)


class TestUsage:
    def test_counts_are_exact_after_threads_and_close(self, store: InstrumentedStore,
                                                      hasher: CountingHasher) -> None:
        issued = KeyManager(store, hasher=hasher).create("k")
        auth = Authenticator(store, hashers=[hasher], usage_flush_interval=0.01)

        def work() -> None:
            for _ in range(500):
                auth.authenticate(f"Bearer {issued.key}")

        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        auth.close()
        record = store.get(issued.record.id)
        assert record is not None
        assert record.usage_count == 4000
        assert record.last_used_at is not None

    def test_no_write_per_request(self, store: InstrumentedStore,
                                  hasher: CountingHasher) -> None:
        """Counts wait in memory until a flush."""
        issued = KeyManager(store, hasher=hasher).create("k")
        auth = Authenticator(store, hashers=[hasher], usage_flush_interval=3600)
        for _ in range(3):
            auth.authenticate(f"Bearer {issued.key}")
        assert auth.pending_usage() == {issued.record.id: 3}
        record = store.get(issued.record.id)
        assert record is not None
        assert record.usage_count == 0
        assert auth.flush_usage() is True
        record = store.get(issued.record.id)
        assert record is not None
        assert record.usage_count == 3
        auth.close()

    def test_failed_flush_loses_nothing(self, store: InstrumentedStore,
                                        hasher: CountingHasher) -> None:
        issued = KeyManager(store, hasher=hasher).create("k")
        auth = Authenticator(store, hashers=[hasher], usage_flush_interval=3600)
        auth.authenticate(f"Bearer {issued.key}")
        store.failure = StoreUnavailable("down")
        assert auth.flush_usage() is False
        store.failure = None
        auth.authenticate(f"Bearer {issued.key}")
        auth.close()
        record = store.get(issued.record.id)
        assert record is not None
        assert record.usage_count == 2
