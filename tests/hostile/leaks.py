"""Checking that no key leaks: logs, bodies, headers, reprs and exceptions.

:class:`ExceptionTrap` records every exception raised in Python code while
it is active (in this thread, and in threads started meanwhile, such as the
argon2 workers), whether or not something caught it; :func:`assert_no_leak`
then searches each one's message, repr and chain, together with the log and
the response, for every key and secret of the test and every stored hash.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from collections.abc import Iterable, Iterator
from types import FrameType, TracebackType
from typing import Any

import pytest

from .driver import Outcome
from .keys import KeySet, secret_parts


class ExceptionTrap:
    """Every exception that left the frame it was raised in, while active.

    An exception raised and handled within one function (``bytes.decode``
    failing inside the header parser) is never seen by anything else; one
    that reaches a caller can end up anywhere (a framework's handler, an
    error tracker), so it and its chain must hold no key.
    """

    def __init__(self) -> None:
        self._frames: dict[int, tuple[BaseException, set[int]]] = {}
        self._previous: Any = None

    @property
    def escaped(self) -> list[BaseException]:
        return [exc for exc, frames in self._frames.values() if len(frames) > 1]

    def __enter__(self) -> ExceptionTrap:
        self._previous = sys.gettrace()
        threading.settrace(self._call)
        sys.settrace(self._call)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        sys.settrace(self._previous)
        threading.settrace(self._previous)

    def _call(self, frame: FrameType, event: str, arg: Any) -> Any:
        # Calls, returns and exceptions only: no per-line events.
        frame.f_trace_lines = False
        return self._local

    def _local(self, frame: FrameType, event: str, arg: Any) -> Any:
        if event == "exception":
            exc = arg[1]
            self._frames.setdefault(id(exc), (exc, set()))[1].add(id(frame))
        return self._local


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        # The suppressed context too: it is still reachable from the error.
        pending += [current.__cause__, current.__context__]


def exception_texts(exceptions: Iterable[BaseException]) -> Iterator[tuple[str, str]]:
    for raised in exceptions:
        for exc in _chain(raised):
            label = f"exception {type(exc).__name__}"
            yield label, str(exc)
            yield label, repr(exc)
            yield label, repr(vars(exc)) if hasattr(exc, "__dict__") else ""


def outcome_texts(outcome: Outcome) -> Iterator[tuple[str, str]]:
    yield "response body", outcome.body.decode("latin-1")
    for name, value in outcome.headers:
        yield f"response header {name}", f"{name}: {value}"
    yield "principal repr", repr(outcome.principal)
    yield "principal str", str(outcome.principal)
    yield "error stream", outcome.errors


def secrets_of(keys: KeySet) -> set[str]:
    """Every key and secret presented or stored in the test, and each stored hash."""
    found = {part for key in (*keys.stored, *keys.presented) for part in secret_parts(key)}
    return found | set(keys.hashes)


def authorization_values(headers: Iterable[tuple[bytes, bytes]]) -> set[str]:
    """The Authorization values of a request that are long enough to search
    for (whatever they hold: Basic credentials are secrets too)."""
    return {value.decode("latin-1").strip(" \t") for name, value in headers
            if name.lower() == b"authorization" and len(value.strip(b" \t")) >= 12}


def assert_no_leak(keys: KeySet, texts: Iterable[tuple[str, str]],
                   also: Iterable[str] = ()) -> None:
    """Fail, without printing it, if any secret of *keys*, or any string of
    *also*, is in any text."""
    secrets = secrets_of(keys) | set(also)
    for label, text in texts:
        for secret in secrets:
            if secret in text:
                pytest.fail(f"a key, secret or stored hash leaked into the {label}",
                            pytrace=False)


@contextlib.contextmanager
def debug_everywhere(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Log at DEBUG on the root logger and on every logger that sets a level
    of its own (Django's sets INFO), all captured by *caplog*, including
    loggers that do not propagate to the root."""
    caplog.set_level(logging.DEBUG)
    detached: list[logging.Logger] = []
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if not isinstance(logger, logging.Logger):
            continue
        if logger.level > logging.DEBUG:
            caplog.set_level(logging.DEBUG, logger=name)
        if not logger.propagate:
            logger.addHandler(caplog.handler)
            detached.append(logger)
    try:
        yield
    finally:
        for logger in detached:
            logger.removeHandler(caplog.handler)
