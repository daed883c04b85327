"""Fuzz the header parser, the key parser and the path matcher.

Run: ``python fuzz/fuzz_parsers.py [--examples N]`` (hypothesis, the default: 100 000
examples per target), or, with atheris installed, ``python fuzz/fuzz_parsers.py
--atheris -atheris_runs=1000000`` for coverage-guided fuzzing.  The test suite runs
a short hypothesis pass of the same targets (tests/core/test_fuzz.py).

Properties:

* ``authenticate()`` on arbitrary header bytes raises nothing but an
  :class:`AuthError` and never returns a principal unless the bytes carry the
  one issued key;
* ``PathRules.is_exempt`` is true only for the configured exact paths or for
  paths under a configured prefix on a segment boundary with no empty or dot
  segment, and ``relative_path`` never turns a path outside a mount into an
  exempt one.
"""

from __future__ import annotations

import argparse
import sys

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aqnt_auth import (
    Argon2Hasher,
    Authenticator,
    AuthError,
    KeyManager,
    MemoryKeyStore,
    PathRules,
    relative_path,
)

_store = MemoryKeyStore()
_ISSUED = KeyManager(_store, hasher=Argon2Hasher("cheapest")).create("fuzz")
_AUTH = Authenticator(_store, hashers=[Argon2Hasher("cheapest")], track_usage=False)
_RULES = PathRules(["/health", "/docs/*"])


def check_header(data: bytes) -> None:
    """One header value through the whole authenticator."""
    try:
        principal = _AUTH.authenticate(data)
    except AuthError:
        return
    text = data.decode("ascii").strip(" \t")
    scheme, _, token = text.partition(" ")
    assert scheme.lower() == "bearer", data
    assert token.lstrip(" ") == _ISSUED.key, data
    assert principal.id == _ISSUED.record.id


def _inside(path: str, prefix: str) -> bool:
    if path == prefix:
        return True
    rest = path[len(prefix):] if path.startswith(prefix + "/") else None
    return rest is not None and all(s not in ("", ".", "..") for s in rest.split("/")[1:-1]) \
        and "//" not in path and "\\" not in path and not path.endswith(("/.", "/.."))


def check_path(path: str, root: str) -> None:
    """One path (and mount point) through the exemption rules."""
    if _RULES.is_exempt(path):
        assert path == "/health" or _inside(path, "/docs"), path
    routed = relative_path(path, root)
    if routed != path and _RULES.is_exempt(routed):
        # Only a path really inside the mount may borrow its exemptions.
        base = root.rstrip("/")
        assert path.startswith(base + "/") or path == base, (path, root)


_headers = st.one_of(
    st.binary(max_size=200),
    st.builds(lambda pre, mid, post: pre + mid + post,
              st.sampled_from([b"Bearer ", b"bearer ", b"BEARER  ", b"Basic ", b"", b" "]),
              st.sampled_from([_ISSUED.key.encode(), _ISSUED.key[:-1].encode(), b""]),
              st.binary(max_size=8)),
)
_paths = st.one_of(
    st.text(alphabet="/.-_ahelthdocsHx;%\\\x00", max_size=40),
    st.builds(lambda a, b: a + b, st.sampled_from(["/health", "/docs", "/api/health", "//"]),
              st.text(alphabet="/.-x", max_size=8)),
)


def run_hypothesis(examples: int) -> None:
    config = settings(max_examples=examples, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
    config(given(_headers)(check_header))()
    config(given(_paths, st.sampled_from(["", "/api", "/api/", "/"]))(check_path))()


def run_atheris(argv: list[str]) -> None:
    import atheris  # type: ignore[import-untyped,unused-ignore]  # optional extra

    def one(data: bytes) -> None:
        fdp = atheris.FuzzedDataProvider(data)
        check_header(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 200)))
        check_path(fdp.ConsumeUnicodeNoSurrogates(60), fdp.PickValueInList(["", "/api"]))

    atheris.Setup(argv, one)
    atheris.Fuzz()


def main(argv: list[str] | None = None) -> None:
    args = argv if argv is not None else sys.argv[1:]
    if args and args[0] == "--atheris":
        run_atheris([sys.argv[0], *args[1:]])
        return
    parser = argparse.ArgumentParser(description="Fuzz aqnt-auth's parsers.")
    parser.add_argument("--examples", type=int, default=100_000)
    run_hypothesis(parser.parse_args(args).examples)
    print("no property violated")


if __name__ == "__main__":
    main()
