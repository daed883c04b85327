"""Requests per second under uvicorn (one worker), measured with wrk.

Run: ``python benchmarks/bench_wrk.py [--rounds N] [--duration S] [--connections N]
[--before DIR] [--pin]``.  Needs ``wrk`` on the PATH.

Each variant is served by ``bench_asgi.py --serve`` in a process of its own
(one uvicorn worker, TCP_NODELAY on), all at once; wrk (one thread, 32
keep-alive connections by default) loads one at a time, in rounds whose
order rotates, and the table gives the median requests/s and the median of
the per-round ratios to the bare app.  Variants: the bare Starlette app, the
hand-written ``AuthenticationMiddleware`` of ``bench_asgi.py`` (for scale: what
the same measurement gives a dict lookup and ``compare_digest``), ours on the
memory store, ours on the SQLite store.  With ``--before DIR`` (a
checkout with its own ``.venv``) ours on SQLite is also served by that
checkout, on its own database: before and after in the same run.  With
``--pin`` (Linux, two CPUs or more) the servers run on the last CPU and wrk
on the others (``taskset``), so that the load generator never takes the
server's core.  Target: ours on SQLite serves at least 95% of the bare app's
requests/s.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _util import print_table

HERE = os.path.dirname(os.path.abspath(__file__))
KEY_ENV = "AQNT_BENCH_KEY"
TARGET = 0.95
_CREATE = ("import sys; from aqnt_auth import KeyManager, SQLiteKeyStore; "
           "print(KeyManager(SQLiteKeyStore(sys.argv[1])).create('bench').key)")


def _key(python: str, db: str) -> str:
    # Run beside the database, so that "-c" imports the interpreter's
    # aqnt_auth, not one in the current directory.
    out = subprocess.run([python, "-c", _CREATE, db], capture_output=True, text=True,
                         check=True, timeout=120, cwd=os.path.dirname(db))
    return out.stdout.strip()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process *pid* (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wrk(port: int, key: str, seconds: int, connections: int,
         prefix: list[str]) -> tuple[float, int]:
    out = subprocess.run(
        [*prefix, "wrk", "-t1", f"-c{connections}", f"-d{seconds}s",
         "-H", f"Authorization: Bearer {key}", f"http://127.0.0.1:{port}/"],
        capture_output=True, text=True, check=True, timeout=seconds + 60,
    ).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise SystemExit(f"wrk saw errors:\n{out}")
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    if found is None or total is None:
        raise SystemExit(f"no Requests/sec in wrk's output:\n{out}")
    return float(found.group(1)), int(total.group(1))


def _middle_half(values: list[float]) -> str:
    """The first to third quartile of per-round ratios: the run's own spread,
    to read a difference between two medians against."""
    if len(values) < 4:
        return "-"
    first, _, third = statistics.quantiles(values, n=4)
    return f"{first:.1%} - {third:.1%}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--duration", type=int, default=3, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--before", help="a checkout (with .venv) to serve 'before' from")
    parser.add_argument("--pin", action="store_true",
                        help="servers on the last CPU, wrk on the others (taskset)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    server_cpus: list[str] = []
    load_cpus: list[str] = []
    if args.pin:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2 or shutil.which("taskset") is None:
            raise SystemExit("--pin needs two CPUs or more and taskset (util-linux)")
        server_cpus = ["taskset", "-c", str(cpus[-1])]
        load_cpus = ["taskset", "-c", ",".join(map(str, cpus[:-1]))]

    with tempfile.TemporaryDirectory() as tmp:
        now_db = os.path.join(tmp, "now.db")
        key = _key(sys.executable, now_db)
        me = [sys.executable, os.path.join(HERE, "bench_asgi.py")]
        # name -> (command, database, key)
        variants = {
            "bare": (me, now_db, key),
            "hand-written": (me, now_db, key),
            "ours, memory store": (me, now_db, key),
            "ours, SQLite store": (me, now_db, key),
        }
        serve = {"bare": "bare", "hand-written": "hand-written",
                 "ours, memory store": "ours-memory",
                 "ours, SQLite store": "ours-sqlite", "ours, SQLite store (before)": "ours-sqlite"}
        if args.before:
            python = os.path.join(args.before, ".venv", "bin", "python")
            before_db = os.path.join(tmp, "before.db")
            variants["ours, SQLite store (before)"] = (
                [python, os.path.join(args.before, "benchmarks", "bench_asgi.py")],
                before_db, _key(python, before_db))

        procs: dict[str, subprocess.Popen[str]] = {}
        ports: dict[str, int] = {}
        try:
            for name, (command, db, variant_key) in variants.items():
                proc = subprocess.Popen([*server_cpus, *command, "--serve", serve[name],
                                         "--db", db],
                                        stdout=subprocess.PIPE, text=True,
                                        env={**os.environ, KEY_ENV: variant_key})
                procs[name] = proc
                assert proc.stdout is not None
                ports[name] = int(proc.stdout.readline())
            time.sleep(1)
            for name, (_, _, variant_key) in variants.items():  # argon2 once, caches filled
                _wrk(ports[name], variant_key, 1, args.connections, load_cpus)
            rps: dict[str, list[float]] = {name: [] for name in variants}
            cpu: dict[str, list[float]] = {name: [] for name in variants}
            names = list(variants)
            for i in range(args.rounds):
                shift = i % len(names)
                for name in names[shift:] + names[:shift]:
                    before = _cpu_seconds(procs[name].pid)
                    rate, served = _wrk(ports[name], variants[name][2], args.duration,
                                        args.connections, load_cpus)
                    rps[name].append(rate)
                    cpu[name].append((_cpu_seconds(procs[name].pid) - before) / served * 1e6)
        finally:
            for proc in procs.values():
                proc.terminate()
                proc.wait(timeout=30)

    bare = rps["bare"]
    ratios = {name: [r / b for r, b in zip(rates, bare, strict=True)]
              for name, rates in rps.items()}
    shares = {name: statistics.median(values) for name, values in ratios.items()}
    # On a busy machine requests/s follows the CPU share the scheduler gives
    # the server; its CPU time per request does not.
    bare_cpu = cpu["bare"]
    cpu_ratio = {name: statistics.median(c / b for c, b in zip(cpus, bare_cpu, strict=True))
                 for name, cpus in cpu.items()}
    rows = [("variant", "requests/s (median)", "of bare (median of per-round ratios)",
             "middle half of the ratios", "server CPU µs/request", "CPU vs bare")]
    rows += [(name, f"{statistics.median(rates):.0f}", f"{shares[name]:.1%}",
              _middle_half(ratios[name]), f"{statistics.median(cpu[name]):.0f}",
              f"{cpu_ratio[name]:.2f}x")
             for name, rates in rps.items()]
    print_table(f"uvicorn, one worker; wrk -t1 -c{args.connections} -d{args.duration}s; "
                f"{args.rounds} interleaved rounds{'; pinned' if args.pin else ''}", rows)
    share = shares["ours, SQLite store"]
    print(f"\n  target: ours on SQLite >= {TARGET:.0%} of bare: {share:.1%} "
          f"{'MET' if share >= TARGET else 'MISSED'} (by server CPU per request: "
          f"{1 / cpu_ratio['ours, SQLite store']:.1%}); the hand-written middleware in "
          f"this run: {shares['hand-written']:.1%}")


if __name__ == "__main__":
    main()
