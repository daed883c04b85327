"""Usage history (#14): what it adds to a warm request.

Run: ``python benchmarks/bench_usage.py [--rounds N] [--before TREE]``.

1. In this process, interleaved (the fastest of 3 adjacent passes per round,
   the median over rounds; see ``_util.paired_samples``): a warm
   ``Authenticator.authenticate`` on the memory store, and a warm request
   through the pure ASGI middleware, each with usage off, with the per-key
   counter only (``usage_history=False``, what 0.1.0 counted), and with
   usage history on (the default), the request's client address, path and
   user agent passed as every adapter passes them.
2. With ``--before TREE`` (a checkout of the code before #14, for instance
   ``git worktree add /tmp/before <commit>``): instructions per warm request,
   counted by ``valgrind --tool=callgrind`` in a child process for this
   checkout and for TREE, as the difference between a run of 2,000 and a run
   of 12,000 requests (start-up cancels out).  Instruction counts do not
   depend on what else the machine runs.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib.util
import os
import statistics
import sys
from collections.abc import Callable
from typing import Any

_HERE = os.path.dirname(os.path.abspath(__file__))
_LOW, _HIGH = 2_000, 12_000
_FACTS = {"client": "192.0.2.7", "user_agent": "bench/1.0"}


def _scope(key: str) -> dict[str, Any]:
    return {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1", "method": "GET", "scheme": "http", "path": "/v1/charges",
        "raw_path": b"/v1/charges", "root_path": "", "query_string": b"",
        "server": ("127.0.0.1", 8000), "client": ("192.0.2.7", 50000),
        "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"bench/1.0"),
                    (b"accept", b"*/*"), (b"authorization", f"Bearer {key}".encode())],
    }


async def _ok(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def _workloads(options: dict[str, Any]) -> tuple[Callable[[int], None], Callable[[int], None],
                                                 Callable[[], None]]:
    """(core requests, ASGI requests, close) for one Authenticator setting,
    on whatever ``aqnt_auth`` is importable."""
    from aqnt_auth import Argon2Hasher, Authenticator, KeyManager, MemoryKeyStore
    from aqnt_auth.adapters.asgi import APIKeyMiddleware

    hasher = Argon2Hasher("cheapest")
    store = MemoryKeyStore()
    key = KeyManager(store, hasher=hasher).create("bench").key
    header = f"Bearer {key}"
    auth = Authenticator(store, hashers=[hasher], usage_flush_interval=3600, **options)
    # What 0.1.0's authenticate() takes; the user agent is new in #14.
    facts = dict(_FACTS) if _accepts_user_agent(auth) else {"client": _FACTS["client"]}
    authenticate = auth.authenticate
    authenticate(header, method="GET", path="/v1/charges", **facts)

    def core(n: int) -> None:
        for _ in range(n):
            authenticate(header, method="GET", path="/v1/charges", **facts)

    app = APIKeyMiddleware(_ok, authenticator=auth)
    loop = asyncio.new_event_loop()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        if message["type"] == "http.response.start" and message["status"] != 200:
            raise RuntimeError(f"status {message['status']}")

    async def requests(n: int) -> None:
        for _ in range(n):
            await app(_scope(key), receive, send)

    def asgi(n: int) -> None:
        loop.run_until_complete(requests(n))

    asgi(10)

    def close() -> None:
        loop.close()
        auth.close()

    return core, asgi, close


def _accepts_user_agent(auth: Any) -> bool:
    import inspect

    return "user_agent" in inspect.signature(auth.authenticate).parameters


# -- 1. interleaved, in this process ------------------------------------------------


def in_process(rounds: int) -> None:
    sys.path.insert(0, _HERE)
    from _util import paired_samples, print_table

    variants = {
        "usage off (track_usage=False)": {"track_usage": False},
        "per-key counter only (usage_history=False)": {"usage_history": False},
        "counter + usage history (default)": {},
    }
    built = {name: _workloads(options) for name, options in variants.items()}
    batch = 2000
    calls: dict[str, Callable[[], object]] = {}
    for name, (core, asgi, _close) in built.items():
        calls[f"core: {name}"] = functools.partial(core, batch)
        calls[f"asgi: {name}"] = functools.partial(asgi, batch)
    samples = paired_samples(calls, rounds, 1)
    medians = {name: statistics.median(v) / batch for name, v in samples.items()}
    rows = [("variant", "µs/request", "vs counter only")]
    for kind in ("core", "asgi"):
        base = medians[f"{kind}: per-key counter only (usage_history=False)"]
        for name in variants:
            value = medians[f"{kind}: {name}"]
            rows.append((f"{kind}: {name}", f"{value:.3f}", f"{value - base:+.3f} µs"))
    print_table(f"warm request, memory store ({rounds} rounds, fastest of 3 interleaved "
                "passes, median)", rows)
    for _core, _asgi, close in built.values():
        close()


# -- 2. instruction counts, this checkout against another --------------------------


def _import_tree(root: str) -> None:
    """Make ``aqnt_auth`` and ``aqnt_auth.adapters`` come from checkout *root*."""
    sys.path.insert(0, root)
    import aqnt_auth

    if not os.path.dirname(os.path.abspath(aqnt_auth.__file__)).startswith(
            os.path.abspath(root)):
        raise SystemExit(f"aqnt_auth was not imported from {root}")
    spec = importlib.util.spec_from_file_location(
        "aqnt_auth.adapters", os.path.join(root, "adapters", "__init__.py"),
        submodule_search_locations=[os.path.join(root, "adapters")])
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["aqnt_auth.adapters"] = module
    spec.loader.exec_module(module)


def child(root: str, kind: str, n: int, flush: bool) -> None:
    _import_tree(root)
    core, asgi, close = _workloads({})
    (core if kind == "core" else asgi)(n)
    if flush:
        close()  # the usage buffer's flush at close: its cost per request
    else:
        os._exit(0)  # no flush: the request path alone


def _instructions(root: str, kind: str, n: int, flush: bool) -> int:
    sys.path.insert(0, _HERE)
    from _util import callgrind_instructions

    return callgrind_instructions(
        [sys.executable, os.path.abspath(__file__), "--child", root, kind, str(n),
         "flush" if flush else "no-flush"], seed=0)


def instructions(before: str) -> None:
    sys.path.insert(0, _HERE)
    from _util import print_table

    here = os.path.dirname(_HERE)
    rows = [("instructions per warm request", "before #14", "with #14", "added")]
    for kind in ("core", "asgi"):
        for flush in (False, True):
            per = {}
            for label, root in (("before", before), ("now", here)):
                low = _instructions(root, kind, _LOW, flush)
                high = _instructions(root, kind, _HIGH, flush)
                per[label] = (high - low) / (_HIGH - _LOW)
            what = "request + its share of the flush" if flush else "request path"
            rows.append((f"{kind}: {what}", f"{per['before']:.0f}", f"{per['now']:.0f}",
                         f"{per['now'] - per['before']:+.0f} "
                         f"({per['now'] / per['before'] - 1:+.1%})"))
    print_table(f"callgrind instruction counts ({_HIGH} - {_LOW} requests)", rows)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5] == "flush")
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--before", help="a checkout from before #14: count instructions")
    args = parser.parse_args()
    in_process(args.rounds)
    if args.before:
        instructions(args.before)


if __name__ == "__main__":
    main()
