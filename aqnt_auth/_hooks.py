"""Event hooks: callables told about each audit entry once its change has committed.

A hook runs on one background thread per :class:`KeyManager`, never in the
caller's: a slow webhook delays no request and no command, and a hook that
raises is logged (``aqnt_auth.hooks``) and forgotten.  Entries reach the
hooks in the order their changes were made.  :meth:`HookRunner.close` (and
:meth:`KeyManager.close`) waits a bounded time for the hooks still queued.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable
from typing import Final

from ._audit import AUDIT_EVENTS, AuditEntry
from ._errors import ConfigurationError

__all__ = ["ALL_EVENTS", "Hook", "HookRunner"]

log = logging.getLogger("aqnt_auth.hooks")

#: Registers a hook for every event.
ALL_EVENTS: Final = "*"

Hook = Callable[[AuditEntry], object]


class HookRunner:
    """Hooks by event, and the thread that calls them."""

    def __init__(self, drain_timeout: float = 5.0) -> None:
        self._hooks: dict[str, list[Hook]] = {}
        # (hook, entry) to call; None: stop.
        self._queue: queue.SimpleQueue[tuple[Hook, AuditEntry] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._drain_timeout = drain_timeout

    def __bool__(self) -> bool:
        return bool(self._hooks)

    def add(self, event: str, hook: Hook) -> None:
        """Call *hook* with every entry of *event* (``"*"``: of every event)."""
        if event != ALL_EVENTS and event not in AUDIT_EVENTS:
            raise ConfigurationError(
                f"unknown event {event!r}: one of {', '.join(AUDIT_EVENTS)} or '*'")
        if not callable(hook):
            raise ConfigurationError("a hook must be callable")
        self._hooks.setdefault(event, []).append(hook)

    def dispatch(self, entries: Iterable[AuditEntry]) -> None:
        """Queue *entries* for their hooks; returns at once."""
        if not self._hooks:
            return
        for entry in entries:
            hooks = [*self._hooks.get(entry.event, ()), *self._hooks.get(ALL_EVENTS, ())]
            for hook in hooks:
                self._queue.put((hook, entry))
        self._start()

    def _start(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name="aqnt-auth-hooks",
                                                daemon=True)
                self._thread.start()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            hook, entry = item
            try:
                hook(entry)
            except Exception:
                log.exception("event hook %r failed on %s of key %s", hook, entry.event,
                              entry.key_id)

    def close(self) -> None:
        """Let the queued hooks run (for at most the drain timeout), then stop."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is None:
            return
        self._queue.put(None)
        thread.join(self._drain_timeout)
        if thread.is_alive():
            log.warning("event hooks still running after %g s; not waiting for them",
                        self._drain_timeout)
