"""The key console: pages and a JSON API to manage keys, in any app.

Mount it where the app's users are (it signs its admins in itself, so
exempt its prefix from the API-key middleware)::

    app.mount("/keys-admin", aqnt_auth.console.asgi_app(store="sqlite:///keys.db"))
    DispatcherMiddleware(app, {"/keys-admin": aqnt_auth.console.wsgi_app(store=...)})
    aqnt_auth.console.init_app(flask_app, url_prefix="/keys-admin")
    path("keys-admin/", include("aqnt_auth.adapters.django.console"))

or run it alone: ``aqnt-auth console --store sqlite:///keys.db``.  The
console is one framework-neutral :class:`Console` answering
:class:`Request` with :class:`Response`; the mounts only translate.
"""

from __future__ import annotations

from ._app import Access, Admin, Authorize, Call, Console, ConsoleOptions, Router, json_response
from ._asgi import ConsoleASGI, asgi_app
from ._http import Request, Response
from ._wsgi import ConsoleWSGI, init_app, wsgi_app

__all__ = [
    "Access",
    "Admin",
    "Authorize",
    "Call",
    "Console",
    "ConsoleASGI",
    "ConsoleOptions",
    "ConsoleWSGI",
    "Request",
    "Response",
    "Router",
    "asgi_app",
    "init_app",
    "json_response",
    "wsgi_app",
]
