"""Core benchmark: ``Authenticator.authenticate`` per call, against a baseline.

Run: ``python benchmarks/bench_core.py [--repeats N]``.

The baseline is what any verifier must do at the least: split the header,
look the key up in a dict, compare SHA-256 digests with ``compare_digest``.
Every figure is the median of interleaved repetitions in this one run.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import os
import statistics
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable

from aqnt_auth import (
    AQNTError,
    Argon2Hasher,
    Authenticator,
    InvalidAPIKey,
    KeyManager,
    MemoryKeyStore,
    SQLiteKeyStore,
)
from aqnt_auth._format import CHECKSUM_LENGTH
from aqnt_auth._usage import UsageBuffer

sys.path.insert(0, os.path.dirname(__file__))
from _util import (
    CountingHasher,
    interleaved_medians,
    paired_samples,
    per_call_us,
    print_table,
)


def _failing(auth: Authenticator, header: str) -> Callable[[], object]:
    def call() -> object:
        try:
            auth.authenticate(header)
        except AQNTError as exc:
            return exc
        raise AssertionError("expected a failure")

    return call


def _ratio_rows(first: str, medians: dict[str, float]) -> list[tuple[str, str, str]]:
    """Table rows: each median (µs) beside its ratio to ``medians["baseline"]``."""
    base = medians["baseline"]
    return [(first, "median µs", "ratio to baseline"),
            *((name, f"{value:.2f}", f"{value / base:.2f}x") for name, value in medians.items())]


def _parts(auth: Authenticator, baseline: Callable[[], object], key: str, bad: str,
           repeats: int) -> None:
    """Where a warm request and a refusal spend their time: the pieces that
    the baseline (a plaintext dict and SHA-256) does not do, each called
    alone, interleaved with the baseline in this run."""
    # A buffer of its own, writing nowhere: the authenticator's counts stay its own.
    usage = UsageBuffer(lambda deltas: None, interval=3600)
    digest, checksum_ok = auth.cache.digest, auth.format.checksum_ok
    covered = bad.encode()[:-CHECKSUM_LENGTH]

    def refusal() -> object:
        try:
            raise InvalidAPIKey("malformed")
        except AQNTError as exc:
            return exc

    medians = interleaved_medians(
        [
            ("baseline", baseline, 20000),
            ("keyed BLAKE2s digest of the key (verification cache)", lambda: digest(key), 20000),
            ("checksum filter, bad checksum", lambda: checksum_ok(bad), 20000),
            (f"  of which zlib.crc32 of the {len(covered)} covered bytes",
             lambda: zlib.crc32(covered), 20000),
            ("usage: count a valid request with its facts",
             lambda: usage.hit("bench", 1e9, "/v1/charges", "192.0.2.7", None, None,
                               b"bench/1.0"), 20000),
            ("usage: count a key-less refusal", lambda: usage.fail("malformed", "", 1e9), 20000),
            ("raise and catch InvalidAPIKey", refusal, 20000),
        ],
        repeats,
    )
    print_table("Where the time goes: parts the baseline does not do",
                _ratio_rows("part (called alone)", medians))
    usage.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()

    hasher = CountingHasher("owasp")
    memory = MemoryKeyStore()
    tmp = tempfile.mkdtemp()
    sqlite = SQLiteKeyStore(os.path.join(tmp, "bench.db"))
    issued_mem = KeyManager(memory, hasher=hasher).create("bench")
    issued_sql = KeyManager(sqlite, hasher=hasher).create("bench")
    mem_auth = Authenticator(memory, hashers=[hasher], usage_flush_interval=3600)
    sql_auth = Authenticator(sqlite, hashers=[hasher], usage_flush_interval=3600)
    good_mem = f"Bearer {issued_mem.key}"
    good_sql = f"Bearer {issued_sql.key}"
    mem_auth.authenticate(good_mem)
    sql_auth.authenticate(good_sql)
    # A key with a quota (#13): one atomic store write per request, by design.
    metered_mem = "Bearer " + KeyManager(memory, hasher=hasher).create(
        "bench quota", quota=10**12).key
    metered_sql = "Bearer " + KeyManager(sqlite, hasher=hasher).create(
        "bench quota", quota=10**12).key
    mem_auth.authenticate(metered_mem)
    sql_auth.authenticate(metered_sql)
    # A key with one rate limit (#13), counted in memory (the default
    # storage); the limit is never reached.  Its cost is the difference to
    # "warm, memory store" (the same key without policies) in this run.
    limited_mem = "Bearer " + KeyManager(memory, hasher=hasher).create(
        "bench rate limit", rate_limits=[f"{10**9}/hour"]).key
    mem_auth.authenticate(limited_mem)

    counter_auth = Authenticator(memory, hashers=[hasher], usage_flush_interval=3600,
                                 usage_history=False)
    counter_auth.authenticate(good_mem)

    # Baseline: the least any verifier does.
    table = {issued_mem.key: hashlib.sha256(issued_mem.key.encode()).digest()}

    def baseline() -> bool:
        _scheme, _, token = good_mem.partition(" ")
        expected = table.get(token)
        return expected is not None and hmac.compare_digest(
            hashlib.sha256(token.encode()).digest(), expected
        )

    k = issued_mem.key
    malformed = "Bearer sk_live_not-a-key!"
    bad_checksum = f"Bearer {k[:-1]}{'A' if k[-1] != 'A' else 'B'}"
    other = KeyManager(MemoryKeyStore(), hasher=hasher).create("elsewhere")
    unknown = f"Bearer {other.key}"
    wrong_secret_key = mem_auth.format.generate("live")
    head = f"sk_live_{issued_mem.record.id}{wrong_secret_key.secret}"
    from aqnt_auth import checksum

    wrong_secret = f"Bearer {head}{checksum(head)}"

    calls_before = hasher.calls
    medians = interleaved_medians(
        [
            ("baseline", baseline, 20000),
            ("warm, memory store", lambda: mem_auth.authenticate(good_mem), 20000),
            # Usage history (#14): the same request with the facts adapters pass,
            # and with the per-key counter alone (usage_history=False).
            ("warm, memory store, client and user agent",
             lambda: mem_auth.authenticate(good_mem, method="GET", path="/v1/charges",
                                           client="192.0.2.7", user_agent="bench/1.0"), 20000),
            ("warm, memory store, same, usage_history=False",
             lambda: counter_auth.authenticate(good_mem, method="GET", path="/v1/charges",
                                               client="192.0.2.7", user_agent="bench/1.0"),
             20000),
            ("warm, SQLite store", lambda: sql_auth.authenticate(good_sql), 5000),
            ("warm, memory store, key with one rate limit",
             lambda: mem_auth.authenticate(limited_mem), 20000),
            ("warm, memory store, key with a quota",
             lambda: mem_auth.authenticate(metered_mem), 20000),
            ("warm, SQLite store, key with a quota",
             lambda: sql_auth.authenticate(metered_sql), 2000),
            ("malformed key", _failing(mem_auth, malformed), 20000),
            ("bad checksum", _failing(mem_auth, bad_checksum), 20000),
            ("unknown id", _failing(mem_auth, unknown), 20000),
        ],
        args.repeats,
    )
    argon_during_fast = hasher.calls - calls_before

    def cold() -> None:
        mem_auth.cache.clear()
        mem_auth.authenticate(good_mem)

    slow = {
        "cold valid key (argon2id, OWASP)": per_call_us(cold, 20),
        "wrong secret (argon2id, OWASP)": per_call_us(_failing(mem_auth, wrong_secret), 20),
    }
    rfc = Argon2Hasher("rfc9106-low-memory")
    rfc_hash = rfc.hash("x" * 32)
    slow["cold verify, RFC 9106 low-memory profile"] = per_call_us(
        lambda: rfc.verify(rfc_hash, "x" * 32), 5
    )

    base = medians["baseline"]
    rows = _ratio_rows("case", medians)
    for name, value in slow.items():
        rows.append((name, f"{value:.0f}", f"{value / base:.0f}x"))
    print_table(f"authenticate() per call ({args.repeats} interleaved repeats)", rows)
    print(f"\n  argon2 verifications during malformed / bad checksum / unknown id runs: "
          f"{argon_during_fast}")
    warm = medians["warm, memory store"] / base
    fast_fail = max(medians["malformed key"], medians["bad checksum"]) / base
    print(f"  target warm memory <= 5x baseline: {warm:.2f}x "
          f"{'MET' if warm <= 5 else 'MISSED'}")
    print(f"  target malformed/bad checksum <= 2x baseline: {fast_fail:.2f}x "
          f"{'MET' if fast_fail <= 2 else 'MISSED'}")
    # The rate limit's cost, as paired samples: each round times both keys
    # back to back (fastest of three passes, order rotated), so load from
    # elsewhere, which only adds time, disturbs the difference least.
    pairs = paired_samples({"none": lambda: mem_auth.authenticate(good_mem),
                            "limit": lambda: mem_auth.authenticate(limited_mem)},
                           rounds=args.repeats, number=5000)
    limit_cost = statistics.median(a - b for a, b in zip(pairs["limit"], pairs["none"],
                                                          strict=True))
    print(f"  target one rate limit (memory) <= +2 µs over no policies: {limit_cost:+.2f} µs "
          f"(median of {args.repeats} paired rounds; "
          f"{statistics.median(pairs['none']):.2f} -> {statistics.median(pairs['limit']):.2f} µs) "
          f"{'MET' if limit_cost <= 2 else 'MISSED'}")

    _parts(mem_auth, baseline, issued_mem.key, bad_checksum[7:], args.repeats)

    # 200 concurrent wrong-secret attempts against one known id.
    bound = 2
    flood_auth = Authenticator(memory, hashers=[hasher], max_concurrent_hashes=bound,
                               track_usage=False)
    hasher.peak = 0

    async def flood() -> int:
        async def attempt(i: int) -> bool:
            g = flood_auth.format.generate("live")
            head = f"sk_live_{issued_mem.record.id}{g.secret}"
            try:
                await flood_auth.authenticate_async(f"Bearer {head}{checksum(head)}")
            except AQNTError:
                return False
            return True

        results = await asyncio.gather(*(attempt(i) for i in range(200)))
        return sum(results)

    start = time.perf_counter()
    accepted = asyncio.run(flood())
    elapsed = time.perf_counter() - start
    print(f"\n  200 concurrent wrong-secret attempts (async): peak argon2 at once = "
          f"{hasher.peak} (bound {bound}), accepted = {accepted}, {elapsed:.2f} s")
    hasher.peak = 0
    threads = [threading.Thread(target=_failing(flood_auth, wrong_secret)) for _ in range(200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"  200 concurrent wrong-secret attempts (threads): peak argon2 at once = "
          f"{hasher.peak} (bound {bound})")
    for auth in (mem_auth, sql_auth, flood_auth, counter_auth):
        auth.close()


if __name__ == "__main__":
    main()
