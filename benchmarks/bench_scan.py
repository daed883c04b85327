"""Scanner benchmark: ``find_keys`` throughput, against baselines in the same run.

Run: ``python benchmarks/bench_scan.py [--repeats N] [--look-alikes N]``.

Inputs (all in memory, so disk speed does not enter): Python source (the
standard library, a few MB, with 20 planted keys), random bytes (binary
files), and a worst case made only of near-misses (``sk_live_`` and 50
base62 characters whose checksum fails), where every candidate costs a
CRC32.  Baselines: ``bytes.count(b"\\n")`` (one pass in C, the floor) and a
regex that starts with a look-behind and a character class, the shape a
scanner would naturally write, without any checksum.  Every figure is the
median of interleaved repetitions.

Then ``revoke_leaked`` (``scan --revoke``) over a planted file: look-alikes
forged for a stored key's id and hint (CRC32 is linear), then the key
itself, with the default argon2 profile; as bounded now (at most 3
verifications per id) against unbounded (every candidate verified, as
before), interleaved.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import sysconfig
from pathlib import Path

from aqnt_auth import Argon2Hasher, KeyFormat, KeyManager, MemoryKeyStore
from aqnt_auth._format import ALPHABET
from aqnt_auth._scan import DEFAULT_REVOKE_TIME, MAX_CANDIDATES_PER_ID, find_keys, revoke_leaked

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _util import interleaved_medians, print_table

from tests.scan._support import forge  # the tests' forger: one copy of that code

SIZE = 4 << 20
NAIVE = re.compile(rb"(?<![A-Za-z0-9_])([a-z][a-z0-9]{0,7})_(live|test)_([0-9A-Za-z]{50})"
                   rb"(?![0-9A-Za-z])")


def python_source() -> bytes:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    parts: list[bytes] = []
    total = 0
    for path in sorted(stdlib.glob("*.py")):
        data = path.read_bytes()
        parts.append(data)
        total += len(data)
        if total >= SIZE:
            break
    text = b"".join(parts)[:SIZE]
    fmt = KeyFormat()
    step = len(text) // 20
    # Plant 20 keys at line starts, so the expected count is exact.
    out = bytearray()
    for i in range(20):
        chunk = text[i * step:(i + 1) * step]
        out += chunk + b"\n" + fmt.generate("live").raw.encode() + b"\n"
    return bytes(out)


def near_misses() -> bytes:
    rows = []
    for i in range(SIZE // 60):
        body = "".join(ALPHABET[(i * 7 + j * 13) % 62] for j in range(50))
        rows.append(f"sk_live_{body}\n".encode())
    return b"".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--look-alikes", type=int, default=100,
                        help="forged keys in the revocation benchmark")
    args = parser.parse_args()
    inputs = {
        "python source": python_source(),
        "random bytes": os.urandom(SIZE),
        "near-misses only": near_misses(),
    }
    assert len(list(find_keys(inputs["python source"]))) == 20
    assert list(find_keys(inputs["near-misses only"])) == []

    rows = [("input", "variant", "median ms", "MB/s", "x newline count", "x naive regex")]
    for name, data in inputs.items():
        def count(data: bytes = data) -> object:
            return data.count(b"\n")

        def naive(data: bytes = data) -> object:
            return sum(1 for _ in NAIVE.finditer(data))

        def scan(data: bytes = data) -> object:
            return sum(1 for _ in find_keys(data))

        def chunked(data: bytes = data) -> object:
            pieces = [data[i:i + (1 << 20)] for i in range(0, len(data), 1 << 20)]
            return sum(1 for _ in find_keys(pieces))

        medians = interleaved_medians(
            [("newline count", count, 3), ("naive regex", naive, 1),
             ("find_keys", scan, 1), ("find_keys 1 MiB chunks", chunked, 1)],
            args.repeats,
        )
        base, slow = medians["newline count"], medians["naive regex"]
        for variant, us in medians.items():
            rows.append((name, variant, f"{us / 1000:.2f}", f"{len(data) / us:.0f}",
                         f"{us / base:.1f}", f"{us / slow:.2f}"))
    print_table(f"find_keys over {SIZE >> 20} MiB inputs (median of {args.repeats}, "
                "interleaved)", rows)
    revocation(args.look_alikes)


def revocation(look_alikes: int, repeats: int = 3) -> None:
    hasher = Argon2Hasher()
    keys = KeyManager(MemoryKeyStore(), hasher=hasher)
    key = keys.create("victim").key
    planted = "\n".join([forge(key) for _ in range(look_alikes)] + [key])
    findings = list(find_keys(planted, "planted.txt", keep_keys=True))
    records = keys.store.list()

    def run(max_per_id: int = MAX_CANDIDATES_PER_ID,
            time_limit: float = DEFAULT_REVOKE_TIME) -> object:
        # A fresh store each time: the key must be unrevoked for every run.
        return revoke_leaked(MemoryKeyStore(records), findings, hashers=[hasher],
                             max_per_id=max_per_id, time_limit=time_limit)

    medians = interleaved_medians(
        [("unbounded (before)", lambda: run(10**9, 0), 1), ("bounded (default)", run, 1)],
        repeats,
    )
    base = medians["bounded (default)"]
    rows = [("variant", "median s", "x bounded")]
    for variant, us in medians.items():
        rows.append((variant, f"{us / 1e6:.2f}", f"{us / base:.0f}"))
    print_table(f"revoke_leaked: {look_alikes} forged look-alikes of one key, then the key "
                f"(argon2 owasp; median of {repeats}, interleaved)", rows)


if __name__ == "__main__":
    main()
