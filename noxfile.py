"""Each adapter against the oldest and the newest release of its framework.

``.venv/bin/nox`` runs every session (CI does, after the main suite);
``nox -s "django(4.2)"`` one of them, ``nox -l`` lists them.  A session installs
this checkout (editable, no build) with its framework pinned and the test
dependencies (the ``test`` extra) in one pip run, then runs only that
adapter's test directory.  Virtualenvs under ``.nox/`` are reused and pip's
cache keeps the wheels, so a repeated run downloads nothing.

The pins are the lower bounds ``pyproject.toml`` declares and the newest
releases: when a lower bound fails here, raise it there.
"""

from __future__ import annotations

import glob
import re

import nox

nox.options.reuse_venv = "yes"
nox.options.error_on_missing_interpreters = True

# Per session, per version: the pins.  A bare name is the newest release.
DJANGO = {
    # Django 4.2 LTS with the oldest DRF pyproject.toml allows.
    "4.2": ("django==4.2.*", "djangorestframework==3.14.0"),
    "5.2": ("django==5.2.*", "djangorestframework"),
}
FLASK = {
    "3.0": ("flask==3.0.0", "werkzeug==3.0.0"),
    "latest": ("flask", "werkzeug"),
}
# The lowest sessions take an anyio of their time: Starlette's TestClient
# before 1.8 names anyio.abc.BlockingPortal at import, an alias anyio 4.15
# deprecates, and anyio 4.13 to 4.15's pytest plugin imports a name pytest 9
# deprecates (warnings, so errors here).
OLD_ANYIO = "anyio<4.13"
# Starlette 0.37 leaves anyio memory streams unclosed (BaseHTTPMiddleware, the
# TestClient): a ResourceWarning when the garbage collector finds them, in
# whichever test runs then.  Theirs, not the adapter's: ignored there only.
OLD_STARLETTE_WARNINGS = ("-W", "ignore:Unclosed <MemoryObject:ResourceWarning")
STARLETTE = {
    # 0.37.0's TestClient passes httpx an argument httpx 0.28 removed: 0.37.2.
    "lowest": ("starlette==0.37.2", OLD_ANYIO),
    "latest": ("starlette", "anyio"),
}
FASTAPI = {
    # 0.110.0 pins Starlette below 0.37, whose TestClient lacks the WebSocket
    # denial responses the adapter answers with: pyproject.toml asks 0.110.1.
    "lowest": ("fastapi==0.110.1", OLD_ANYIO),
    "latest": ("fastapi", "starlette", "anyio"),
}


def _run(session: nox.Session, extras: str, pins: tuple[str, ...], *args: str) -> None:
    # One resolution with the pins, so pip reports a conflict instead of
    # silently moving a pinned framework for another dependency.
    # A bare name means its newest release: upgrade it in a reused virtualenv.
    upgrade = ["--upgrade"] if any(not re.search(r"[=<>~]", pin) for pin in pins) else []
    session.install(*upgrade, "-e", f".[test,{extras}]", *pins)
    session.run("python", "-m", "pip", "check")
    session.run("python", "-m", "pytest", "-q", "-p", "no:cacheprovider", *args,
                *session.posargs)


@nox.session
@nox.parametrize("version", list(DJANGO))
def django(session: nox.Session, version: str) -> None:
    """The Django adapter and DRF (the end-to-end test serves with uvicorn: demo)."""
    _run(session, "django,sql,limits,redis,demo,console", DJANGO[version],
         "tests/adapters/django")


@nox.session
@nox.parametrize("version", list(FLASK))
def flask(session: nox.Session, version: str) -> None:
    """The Flask extension and the WSGI middleware it builds on."""
    _run(session, "flask,sql,limits,redis,console", FLASK[version], "tests/adapters/flask",
         "tests/adapters/wsgi", "tests/console/test_mount_wsgi.py")


# The ASGI directory's FastAPI modules run in the FastAPI sessions only.
FASTAPI_TESTS = sorted(glob.glob("tests/adapters/asgi/test_fastapi*.py"))


@nox.session
@nox.parametrize("version", list(STARLETTE))
def starlette(session: nox.Session, version: str) -> None:
    """The ASGI middleware on Starlette (under uvicorn too), without FastAPI."""
    _run(session, "starlette,sql,limits,redis,demo,console", STARLETTE[version],
         "tests/adapters/asgi", "tests/console/test_mount_asgi.py",
         *(f"--ignore={path}" for path in FASTAPI_TESTS),
         *(OLD_STARLETTE_WARNINGS if version == "lowest" else ()))


@nox.session
@nox.parametrize("version", list(FASTAPI))
def fastapi(session: nox.Session, version: str) -> None:
    """The FastAPI dependency, error handlers and OpenAPI, on the Starlette FastAPI brings."""
    _run(session, "fastapi,limits,console", FASTAPI[version], *FASTAPI_TESTS,
         "tests/console/test_mount_fastapi.py",
         *(OLD_STARLETTE_WARNINGS if version == "lowest" else ()))
