"""Keys in every state the ASGI adapter tests need, on the memory store."""

from __future__ import annotations

import datetime as dt

import pytest

from aqnt_auth import KeyManager, MemoryKeyStore

from ._support import Keys


@pytest.fixture
def keys(manager: KeyManager, memory_store: MemoryKeyStore) -> Keys:
    live = manager.create("live", scopes=["charges:read"])
    revoked = manager.create("revoked")
    manager.revoke(revoked.record.id)
    expired = manager.create("expired", expires_in=dt.timedelta(days=1))
    memory_store.set_expiry(expired.record.id, dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc))
    return Keys(
        live=live.key,
        test=manager.create("test", mode="test").key,
        revoked=revoked.key,
        expired=expired.key,
        read_only=manager.create("reader", read_only=True).key,
        charges_only=manager.create("charges", allowed_paths=["/v1/charges"]).key,
        writer=manager.create("writer", scopes=["charges:read", "charges:write"]).key,
        live_id=live.record.id,
    )

