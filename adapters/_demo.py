"""``aqnt-auth demo``: a small protected API to try with curl.

A Starlette app behind :class:`~aqnt_auth.adapters.asgi.APIKeyMiddleware` on
the default store (``sqlite:///aqnt_keys.db``, the one ``aqnt-auth keys``
uses), served by uvicorn (the ``demo`` extra).  The first run issues
a test key and prints it once; the store keeps only its hash.  Each run also
issues and revokes a throw-away key, so the ``key_revoked`` answer can be
tried too.

:func:`prepare_keys`, :func:`build_app` and :func:`banner` do the work and
:func:`run` only strings them together, so each can be tested on its own.
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Callable
from typing import Any, Final, TypeVar

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from aqnt_auth import DEFAULT_STORE_URL, Hasher, KeyManager, Principal
from aqnt_auth.adapters import starlette as aqnt_starlette
from aqnt_auth.adapters.asgi import APIKeyMiddleware

__all__ = ["DemoKeys", "banner", "build_app", "prepare_keys", "run"]

#: The store every command uses by default, so ``aqnt-auth keys list`` shows
#: the demo's keys and ``aqnt-auth verify`` knows them.
DEMO_STORE_URL: Final = DEFAULT_STORE_URL
KEY_NAME: Final = "demo key"
KEY_SCOPES: Final = ("charges:read",)
_F = TypeVar("_F", bound=Callable[..., Any])
# mypy sees aqnt_auth.adapters as untyped (see pyproject.toml): restate the type.
requires: Callable[..., Callable[[_F], _F]] = aqnt_starlette.requires

# Marks the demo's own keys in their metadata, so reruns find them.
_MARK: Final = "aqnt_demo"


@dataclasses.dataclass(frozen=True)
class DemoKeys:
    """What :func:`prepare_keys` did.

    :attr:`new_key` is the plaintext of the demo key if this run created it
    (shown once, never stored), else ``None``; :attr:`hint` names the demo
    key either way.  :attr:`revoked_key` is a key revoked at start-up: its
    plaintext is harmless.
    """

    new_key: str | None = dataclasses.field(repr=False)
    hint: str
    revoked_key: str = dataclasses.field(repr=False)


def prepare_keys(store_url: str = DEMO_STORE_URL, *, hasher: Hasher | None = None) -> DemoKeys:
    """Make sure the store holds a usable demo key, and a freshly revoked one."""
    with KeyManager(store_url, hasher=hasher) as manager:
        demo_hint = None
        for record in manager.list():
            role = record.metadata.get(_MARK)
            if role == "revoked":
                manager.delete(record.id)  # the previous run's: keep one at a time
            elif role == "key" and demo_hint is None and record.status() in ("active", "expiring"):
                demo_hint = record.hint
        new_key = None
        if demo_hint is None:
            issued = manager.create(
                KEY_NAME, mode="test", scopes=KEY_SCOPES, metadata={_MARK: "key"}
            )
            new_key, demo_hint = issued.key, issued.record.hint
        revoked = manager.create("demo revoked key", mode="test", metadata={_MARK: "revoked"})
        manager.revoke(revoked.record.id)
    return DemoKeys(new_key=new_key, hint=demo_hint, revoked_key=revoked.key)


def _key_json(key: Principal) -> dict[str, object]:
    return {"id": key.id, "name": key.name, "livemode": key.livemode,
            "scopes": sorted(key.scopes)}


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def whoami(request: Request) -> JSONResponse:
    return JSONResponse(_key_json(request.state.api_key))


@requires("charges:read")
async def list_charges(request: Request) -> JSONResponse:
    return JSONResponse({"object": "list", "data": [], "livemode": request.state.api_key.livemode})


@requires("charges:write")
async def create_charge(request: Request) -> JSONResponse:
    return JSONResponse({"object": "charge", "livemode": request.state.api_key.livemode},
                        status_code=201)


def build_app(store_url: str = DEMO_STORE_URL) -> Starlette:
    """The demo API: ``/health`` is open; ``/v1/...`` needs a key."""
    return Starlette(
        routes=[
            Route("/health", health),
            Route("/v1/whoami", whoami),
            Route("/v1/charges", list_charges, methods=["GET"]),
            Route("/v1/charges", create_charge, methods=["POST"]),
        ],
        middleware=[Middleware(APIKeyMiddleware, store=store_url, exempt_paths=["/health"])],
    )


def _curl_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - naming the wildcard, not binding it
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def banner(keys: DemoKeys, *, host: str, port: int, store_url: str) -> str:
    """What the demo prints at start: the key (first run only) and curl commands."""
    base = f"http://{_curl_host(host)}:{port}"
    store = shlex.quote(store_url)
    lines = [f"aqnt-auth demo: a protected API on {base} (keys in {store_url})", ""]
    if keys.new_key is not None:
        lines += [
            "Your demo key, shown this once (the store keeps only its hash):",
            f"  export AQNT_KEY={keys.new_key}",
        ]
    else:
        lines += [
            f"The demo key {keys.hint} exists; it was shown once, when it was created.",
            "To get a new one, create it and export what it prints:",
            f"  aqnt-auth keys create --test --name {shlex.quote(KEY_NAME)} "
            f"--scope {KEY_SCOPES[0]} --store {store}",
            "  export AQNT_KEY=sk_test_...",
        ]
    bearer = '-H "Authorization: Bearer $AQNT_KEY"'
    lines += [
        "",
        "Try it in a second terminal (this one runs the server until Ctrl-C);",
        "run the export line there first:",
        "  # 200, no key needed",
        f"  curl -i {base}/health",
        "  # 200, the key's details",
        f"  curl -i {bearer} {base}/v1/whoami",
        "  # 401 missing_api_key",
        f"  curl -i {base}/v1/whoami",
        "  # 401 invalid_api_key",
        f'  curl -i -H "Authorization: Bearer sk_test_not_a_real_key" {base}/v1/whoami',
        "  # 401 key_revoked (a key revoked at start-up)",
        f'  curl -i -H "Authorization: Bearer {keys.revoked_key}" {base}/v1/whoami',
        "  # 403 insufficient_scope (the demo key has charges:read only)",
        f"  curl -i -X POST {bearer} {base}/v1/charges",
        "",
    ]
    return "\n".join(lines)


def run(host: str = "127.0.0.1", port: int = 8000, store_url: str = DEMO_STORE_URL) -> None:
    """Prepare the keys, print the banner and serve the demo until Ctrl-C."""
    import uvicorn  # the demo extra; imported only to serve

    keys = prepare_keys(store_url)
    print(banner(keys, host=host, port=port, store_url=store_url), flush=True)
    uvicorn.run(build_app(store_url), host=host, port=port)
