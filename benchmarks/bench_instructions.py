"""Instructions per warm request through Starlette (#12): ours against the
hand-written ``AuthenticationMiddleware``, counted by callgrind.

Run: ``python benchmarks/bench_instructions.py [--seeds N] [--requests N]
[--before TREE] [--jobs N]``.  Needs ``valgrind``.

Each variant of ``bench_asgi.py``'s Starlette app (bare, the hand-written
middleware, ours on the memory store, ours on the SQLite store) serves a warm
key in a child process under ``valgrind --tool=callgrind``, once for N and
once for 2N requests: the difference, divided by N, is one request's
instructions, with start-up and first calls cancelled out.  Instruction
counts do not depend on what else the machine runs, so this is the steady
figure behind ``bench_asgi.py``'s wall-clock one.

They do depend on ``PYTHONHASHSEED``: CPython 3.11's method cache is a
4,096-entry table indexed by the type's version and the attribute name's
hash, so which lookups of the framework and of the middleware evict each
other changes from one process to the next (by about a thousand instructions
per request, seen here).  So every variant is counted under the same several
seeds, and the table gives each seed's ratio of what ours adds to what the
hand-written middleware adds, and their median.  Target: at most 1.0x.

With ``--before TREE`` (a checkout with the same benchmark API, for instance
``git worktree add /tmp/before <commit>``), ours on the memory store is also
counted with TREE's ``aqnt_auth``, under the same seeds.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import statistics
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_HERE)
VARIANTS = {
    "bare": "starlette: bare",
    "hand-written": "starlette: AuthenticationMiddleware, hand-written",
    "ours, memory store": "starlette: ours, memory store",
    "ours, SQLite store": "starlette: ours, SQLite store",
}
TARGET = 1.0


def child(root: str, variant: str, n: int) -> None:
    """Serve one warm request (argon2 and first calls), then *n* more."""
    sys.path.insert(0, _HERE)
    from bench_usage import _import_tree

    _import_tree(root)
    from _util import asgi_batch
    from bench_asgi import _scope, starlette_apps

    from aqnt_auth import KeyManager, MemoryKeyStore, SQLiteKeyStore

    with tempfile.TemporaryDirectory() as tmp:
        db = os.path.join(tmp, "keys.db")
        issued = KeyManager(SQLiteKeyStore(db)).create("bench", scopes=["charges:read"])
        memory = MemoryKeyStore([issued.record])
        app = starlette_apps(issued.key, memory, db, memory)[VARIANTS[variant]]
        loop = asyncio.new_event_loop()
        make_scope = functools.partial(_scope, issued.key)
        asgi_batch(loop, app, make_scope, 1)()
        asgi_batch(loop, app, make_scope, n)()
    # No shutdown: the usage flush at exit would count as requests' work.
    os._exit(0)


def _total(root: str, variant: str, n: int, seed: int) -> int:
    from _util import callgrind_instructions

    return callgrind_instructions(
        [sys.executable, os.path.abspath(__file__), "--child", root, variant, str(n)], seed)


def per_request(root: str, variant: str, n: int, seed: int) -> float:
    """Instructions of one warm request: (2n requests - n requests) / n."""
    return (_total(root, variant, 2 * n, seed) - _total(root, variant, n, seed)) / n


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="PYTHONHASHSEED 1..N")
    parser.add_argument("--requests", type=int, default=3000, help="N (and 2N) requests")
    parser.add_argument("--before", help="a checkout to count ours (memory store) on too")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    sys.path.insert(0, _HERE)
    from _util import print_table

    runs = [(_ROOT, variant) for variant in VARIANTS]
    if args.before:
        runs.append((os.path.abspath(args.before), "ours, memory store"))
    seeds = range(1, args.seeds + 1)
    jobs = [(root, variant, seed) for root, variant in runs for seed in seeds]
    with ThreadPoolExecutor(args.jobs) as pool:
        counts = dict(zip(jobs, pool.map(
            lambda job: per_request(job[0], job[1], args.requests, job[2]), jobs), strict=True))

    def label(root: str, variant: str) -> str:
        return f"{variant} (before)" if root != _ROOT else variant

    rows = [("variant", *(f"seed {s}" for s in seeds), "median added",
             "median added / hand-written added")]
    for root, variant in runs:
        added = [counts[(root, variant, s)] - counts[(_ROOT, "bare", s)] for s in seeds]
        hand = [counts[(_ROOT, "hand-written", s)] - counts[(_ROOT, "bare", s)] for s in seeds]
        ratio = ("-" if variant == "bare" else
                 f"{statistics.median(a / h for a, h in zip(added, hand, strict=True)):.3f}x")
        rows.append((label(root, variant), *(f"{counts[(root, variant, s)]:.0f}" for s in seeds),
                     "-" if variant == "bare" else f"{statistics.median(added):+.0f}", ratio))
    print_table(f"callgrind instructions per warm request ({2 * args.requests} - "
                f"{args.requests} requests), by PYTHONHASHSEED", rows)
    hand = [counts[(_ROOT, "hand-written", s)] - counts[(_ROOT, "bare", s)] for s in seeds]
    ours = [counts[(_ROOT, "ours, memory store", s)] - counts[(_ROOT, "bare", s)] for s in seeds]
    median = statistics.median(o / h for o, h in zip(ours, hand, strict=True))
    verdict = "MET" if median <= TARGET else "MISSED"
    print(f"\n  target: ours (memory store) adds <= {TARGET}x what the hand-written middleware "
          f"adds: {median:.3f}x {verdict}")


if __name__ == "__main__":
    main()
