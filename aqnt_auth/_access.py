"""Path rules and key restrictions: pure decisions on a method and a path.

Paths here are always the decoded path *as the application's router sees
it* (ASGI ``scope["path"]`` less ``root_path``, WSGI ``PATH_INFO``, Django's
``request.path_info``), never a URL rebuilt from the Host header.  A rule
matches exactly or on a segment boundary; a path with dot segments or empty
segments never matches a prefix, because some router or proxy on the way
may collapse them into a path the rule did not mean to open.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from ._errors import ConfigurationError, PermissionDenied
from ._records import Principal

__all__ = [
    "SAFE_METHODS",
    "PathRules",
    "check_access",
    "is_cors_preflight",
    "path_within",
    "relative_path",
    "require_scopes",
]

#: Methods a read-only key may use.
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})

#: The ``error_description`` of a read-only key's write.
READ_ONLY: Final = "read-only key: only GET, HEAD and OPTIONS are allowed"
#: The ``error_description`` of a key used outside its allowed paths.
OUTSIDE_PATHS: Final = "this key is limited to other paths"


def _unsafe_segments(path: str) -> bool:
    return (
        "//" in path
        or "/./" in path
        or "/../" in path
        or path.endswith(("/.", "/.."))
        or "\\" in path
    )


def _normalise_prefix(prefix: str) -> str:
    if not isinstance(prefix, str) or not prefix.startswith("/"):
        raise ConfigurationError(f"path {prefix!r} must start with '/'")
    stripped = prefix.rstrip("/") or "/"
    if stripped != "/" and _unsafe_segments(stripped + "/"):
        raise ConfigurationError(f"path {prefix!r} must not contain empty or dot segments")
    return stripped


def path_within(path: str, prefix: str) -> bool:
    """Whether *path* is *prefix* or below it, on a segment boundary.

    ``/v1/charges`` contains ``/v1/charges/ch_1`` but not ``/v1/chargesX``;
    no path with ``//``, ``.`` or ``..`` segments is inside any prefix.
    """
    if prefix == "/":
        return path.startswith("/") and not _unsafe_segments(path)
    if path == prefix:
        return True
    return path.startswith(prefix) and path[len(prefix)] == "/" and not _unsafe_segments(path)


def relative_path(path: str, root_path: str) -> str:
    """Return *path* relative to the mount point *root_path*.

    ASGI servers put the mount point in both ``path`` and ``root_path``; a
    path outside the mount (a look-alike such as ``/api-v2`` under ``/api``)
    is returned unchanged, so it cannot borrow the mount's exemptions.
    """
    if root_path and path_within(path, root_path.rstrip("/") or "/"):
        rest = path[len(root_path.rstrip("/")):]
        return rest or "/"
    return path


class PathRules:
    """Which paths skip authentication.

    Each rule is an exact path (``/health``) or, written with a trailing
    ``/*``, a prefix matched on segment boundaries (``/docs/*`` matches
    ``/docs`` and ``/docs/x``, never ``/docsx``).  Matching is case-sensitive
    and exact: ``/health`` does not exempt ``/healthz``, ``/health/``,
    ``//health``, ``/HEALTH`` or ``/health;x``.
    """

    __slots__ = ("exact", "prefixes")

    def __init__(self, rules: Iterable[str] = ()) -> None:
        if isinstance(rules, str):
            rules = (rules,)
        exact: set[str] = set()
        prefixes: list[str] = []
        for rule in rules:
            if not isinstance(rule, str) or not rule.startswith("/"):
                raise ConfigurationError(f"exempt path {rule!r} must start with '/'")
            if rule.endswith("/*"):
                prefixes.append(_normalise_prefix(rule[:-2] or "/"))
            else:
                if _unsafe_segments(rule):
                    raise ConfigurationError(
                        f"exempt path {rule!r} must not contain empty or dot segments"
                    )
                exact.add(rule)
        self.exact: frozenset[str] = frozenset(exact)
        self.prefixes: tuple[str, ...] = tuple(prefixes)

    def __repr__(self) -> str:
        rules = sorted(self.exact) + [p.rstrip("/") + "/*" for p in self.prefixes]
        return f"PathRules({rules!r})"

    def __bool__(self) -> bool:
        return bool(self.exact or self.prefixes)

    def is_exempt(self, path: str) -> bool:
        """Whether *path* (as the router sees it) skips authentication."""
        if path in self.exact:
            return True
        # A loop, not any() over a generator: asked on every request, and
        # most apps have no prefix rules at all.
        for prefix in self.prefixes:  # noqa: SIM110
            if path_within(path, prefix):
                return True
        return False


def is_cors_preflight(method: str, origin: object, request_method: object) -> bool:
    """Whether a request is a CORS preflight: ``OPTIONS`` with ``Origin`` and
    ``Access-Control-Request-Method`` present (the values as the adapter has
    them, ``None`` when absent)."""
    return method == "OPTIONS" and origin is not None and request_method is not None


def check_access(principal: Principal, method: str, path: str) -> None:
    """Raise :class:`PermissionDenied` unless the key's restrictions allow
    *method* on *path*.  Scopes are checked separately (:func:`require_scopes`)."""
    if principal.read_only and method not in SAFE_METHODS:
        raise PermissionDenied("read-only key", description=READ_ONLY)
    allowed = principal.allowed_paths
    if allowed and not any(path_within(path, p) for p in allowed):
        raise PermissionDenied("path outside the key's allowed paths", description=OUTSIDE_PATHS)


def require_scopes(principal: Principal, scopes: Iterable[str]) -> None:
    """Raise :class:`PermissionDenied` unless the key carries every scope in *scopes*.

    The request then counts as ``forbidden`` rather than ``valid`` in the
    key's usage history (once, however often this is called for it).
    """
    needed = tuple(scopes)
    if not principal.has_scopes(*needed):
        error = PermissionDenied("missing scopes", required_scopes=needed)
        error.key_id = principal.id
        usage = getattr(principal, "_usage", None)
        if usage is not None:
            principal._usage = None
            usage[0](principal.id, usage[1])
        raise error


def normalise_allowed_paths(paths: Iterable[str]) -> tuple[str, ...]:
    """Validate and normalise a key's allowed path prefixes (at creation)."""
    return tuple(_normalise_prefix(p) for p in paths)
