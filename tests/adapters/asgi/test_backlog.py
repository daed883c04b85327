"""The ASGI middleware and the argon2 queue: a client that hangs up while its
key waits for argon2 withdraws that work, and a burst of wrong secrets from
connections closed at once cannot build a backlog that delays a real key."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import pytest

from aqnt_auth import Argon2Hasher, Authenticator, KeyManager, SQLiteKeyStore, checksum
from aqnt_auth.adapters.asgi import APIKeyMiddleware
from tests import bodies
from tests.core._support import CountingHasher, InstrumentedStore

from ._servers import request, send_only, uvicorn_servers

Message = MutableMapping[str, Any]


def scope_for(key: str, method: str = "GET") -> dict[str, Any]:
    return {"type": "http", "method": method, "path": "/v1", "root_path": "",
            "headers": [(b"authorization", f"Bearer {key}".encode())],
            "client": ("203.0.113.5", 1234)}


def wrong(key: str, n: int) -> str:
    head = key[:20] + f"{n:032d}"
    return head + checksum(head)


class Recorder:
    def __init__(self) -> None:
        self.sent: list[Message] = []
        self.bodies: list[bytes] = []

    async def app(self, scope: Any, receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.bodies.append(body)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def send(self, message: Message) -> None:
        self.sent.append(message)


@pytest.fixture
def held() -> Any:
    gate = threading.Event()
    hasher = CountingHasher(gate)
    store = InstrumentedStore()
    key = KeyManager(store, hasher=hasher).create("k").key
    auth = Authenticator(store, hashers=[hasher], max_concurrent_hashes=1, max_hash_wait=60)
    yield gate, hasher, key, auth
    gate.set()
    auth.close()


@pytest.mark.anyio
async def test_a_client_that_hangs_up_withdraws_its_verification(held: Any) -> None:
    """http.disconnect while the key is queued for argon2: no argon2 for it,
    no response, the app never runs."""
    gate, hasher, key, auth = held
    recorder = Recorder()
    app = APIKeyMiddleware(recorder.app, authenticator=auth)
    blocker = asyncio.ensure_future(app(scope_for(wrong(key, 1)), _request_then_wait(),
                                        recorder.send))
    while hasher.running == 0:
        await asyncio.sleep(0.001)
    hang_up = asyncio.Event()
    gone = asyncio.ensure_future(app(scope_for(wrong(key, 2)), _request_then(hang_up),
                                     recorder.send))
    while auth._gate.pending == 0:
        await asyncio.sleep(0.001)
    hang_up.set()
    await gone
    gate.set()
    await blocker
    while auth._gate.pending:
        await asyncio.sleep(0.001)
    assert hasher.calls == 1
    assert [m["status"] for m in recorder.sent if "status" in m] == [401]
    assert recorder.bodies == []


@pytest.mark.anyio
async def test_the_body_read_while_watching_reaches_the_app(held: Any) -> None:
    """What the middleware read from ``receive`` while it watched for a hang-up
    is replayed to the app, in order."""
    gate, hasher, _, auth = held
    recorder = Recorder()
    app = APIKeyMiddleware(recorder.app, authenticator=auth)
    chunks = [{"type": "http.request", "body": b"abc", "more_body": True},
              {"type": "http.request", "body": b"def", "more_body": False}]
    read = asyncio.Event()

    async def receive() -> Message:
        if chunks:
            message = chunks.pop(0)
            if not chunks:
                read.set()
            return message
        await asyncio.Event().wait()  # no disconnect
        raise AssertionError

    good = KeyManager(auth.store, hasher=hasher).create("good").key
    call = asyncio.ensure_future(app(scope_for(good, "POST"), receive, recorder.send))
    await read.wait()
    gate.set()
    await call
    assert recorder.bodies == [b"abcdef"]
    assert recorder.sent[0]["status"] == 200


@pytest.mark.anyio
async def test_a_receive_that_never_blocks_is_read_a_bounded_number_of_times(held: Any) -> None:
    """A ``receive`` that answers ``http.request`` again at once after the
    request is complete (not what servers do, but what hand-written test and
    benchmark harnesses often pass) is read twice while watching, not in a
    loop that never yields: the cold key is verified and the app runs."""
    gate, hasher, _, auth = held
    recorder = Recorder()
    app = APIKeyMiddleware(recorder.app, authenticator=auth)
    reads = 0

    async def receive() -> Message:
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": b"", "more_body": False}

    good = KeyManager(auth.store, hasher=hasher).create("good").key
    gate.set()
    await asyncio.wait_for(app(scope_for(good), receive, recorder.send), 30)
    assert recorder.sent[0]["status"] == 200
    assert recorder.bodies == [b""]
    assert reads == 2  # the request, then the one read that is not a disconnect


def _request_then_wait() -> Any:
    async def receive() -> Message:
        await asyncio.Event().wait()
        raise AssertionError

    return receive


def _request_then(event: asyncio.Event) -> Any:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await event.wait()
        return {"type": "http.disconnect"}

    return receive


@pytest.mark.slow
def test_a_burst_of_abandoned_wrong_secrets_does_not_delay_a_real_key(tmp_path: Path) -> None:
    """A real uvicorn process, keys hashed with the default (OWASP) profile:
    300 requests with random wrong secrets for one key id, each connection
    closed as soon as it is sent.  Before the bounds, each of the 300 ran
    argon2 and a legitimate key waited behind all of them.  Now a legitimate
    key that has never been used, sent during the burst, is answered at once
    (200, or 503 with Retry-After if the queue is still full), and one sent
    once the server has taken in the burst is verified (200); at most the
    running and queued verifications (2 + 8 here) of the burst ran argon2."""
    path = tmp_path / "keys.db"
    store = SQLiteKeyStore(path)
    manager = KeyManager(store, hasher=Argon2Hasher())
    target = manager.create("attacked").key
    during, after = manager.create("during").key, manager.create("after").key
    store.close()
    env = {"AQNT_TEST_STORE": str(path), "AQNT_TEST_PROFILE": "owasp",
           "AQNT_TEST_OPTIONS": json.dumps({"max_concurrent_hashes": 2,
                                            "max_queued_hashes": 8})}
    with uvicorn_servers(1, env) as (port,):
        for n in range(300):
            send_only(port, "/v1", wrong(target, n)).close()
        answer = request(port, "/v1", during)
        assert answer in ((200, b'{"hello": "world"}'), (503, bodies.UNAVAILABLE))
        for _ in range(1000):  # until the server has taken in every request
            stats = json.loads(request(port, "/_stats")[1])
            if sum(stats["statuses"].values()) >= 300 + 1:
                break
            threading.Event().wait(0.02)
        assert request(port, "/v1", after) == (200, b'{"hello": "world"}')
        stats = json.loads(request(port, "/_stats")[1])
    statuses = stats["statuses"]
    assert sum(statuses.values()) == 300 + 2
    burst_hashes = stats["argon2"] - statuses["200"]
    assert burst_hashes <= 2 + 8
    refused = statuses.get("503", 0) + statuses.get("429", 0) + statuses.get("none", 0)
    assert refused >= 300 - (2 + 8)
