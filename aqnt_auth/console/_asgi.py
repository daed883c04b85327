"""The console as an ASGI app: ``app.mount("/keys-admin", asgi_app(store=...))``.

Only a translator: the scope and body become a :class:`Request`, the
:class:`Response` goes back as two messages.  The console's work (store
reads, argon2 for an admin key) blocks, so it runs in a worker thread and
the event loop keeps serving the app's other requests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any, Final

from .._errors import InvalidRequest
from ._app import Console
from ._http import Request, Response

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ._app import ConsoleOptions

__all__ = ["ConsoleASGI", "asgi_app"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: The largest request body the console reads (its forms and JSON are small).
MAX_BODY: Final = 1024 * 1024


class ConsoleASGI:
    """An ASGI app serving a :class:`Console` (any ASGI server or framework).

    Mounted under a prefix, the prefix comes from the scope's ``root_path``
    (Starlette's and FastAPI's ``mount`` set it, as does uvicorn's
    ``--root-path``); links and cookies use it.
    """

    def __init__(self, console: Console) -> None:
        self.console = console

    def __repr__(self) -> str:
        return f"ConsoleASGI({self.console!r})"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        if kind != "http":
            if kind == "websocket":
                await send({"type": "websocket.close", "code": 1000})
            return
        request = await self._request(scope, receive)
        if isinstance(request, Response):
            response = request
        else:
            loop = asyncio.get_running_loop()
            response = await loop.run_in_executor(None, self.console.handle, request)
        await send({
            "type": "http.response.start",
            "status": response.status,
            "headers": [(k.lower().encode("latin-1"), v.encode("latin-1"))
                        for k, v in response.headers]
                       + [(b"content-length", str(len(response.body)).encode())],
        })
        await send({"type": "http.response.body", "body": response.body})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await asyncio.get_running_loop().run_in_executor(None, self.console.close)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _request(self, scope: Scope, receive: Receive) -> Request | Response:
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope.get("headers", ()):
            headers[raw_name.decode("latin-1").lower()] = raw_value.decode("latin-1")
        root_path: str = scope.get("root_path", "")
        path: str = scope["path"]
        # Starlette's rule (get_route_path): the path includes the root path
        # under a mount and uvicorn's --root-path; older servers strip it.
        if root_path and path.startswith(root_path) and (
            len(path) == len(root_path) or path[len(root_path)] == "/"
        ):
            path = path[len(root_path):]
        client = scope.get("client")
        request = Request(
            method=scope.get("method", "GET").upper(),
            path=path,
            query_string=scope.get("query_string", b"").decode("latin-1"),
            headers=headers,
            client=client[0] if client else None,
            scheme=scope.get("scheme", "http"),
            root_path=root_path,
            native=scope,
        )
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY:
                error = InvalidRequest(f"The request body must be at most {MAX_BODY} bytes")
                return self.console.finish(request, self.console.error_response(request, error))
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return Request(request.method, request.path, request.query_string, headers,
                       b"".join(chunks), request.client, request.scheme, root_path, scope)


def asgi_app(store: Any = None, *, console: Console | None = None,
             **options: Unpack[ConsoleOptions]) -> ConsoleASGI:
    """The key console as an ASGI app, for ``app.mount("/keys-admin", ...)``.

    Takes what :class:`Console` takes: a store (URL or object) or an
    ``authenticator=``, ``secret_key=``, ``admin_scope=``, ``read_scope=``,
    ``authorize=`` and the Authenticator options; or a ready *console*.
    """
    if console is None:
        console = Console(store, **options)
    elif store is not None or options:
        from .._errors import ConfigurationError

        raise ConfigurationError("pass either console= or the console's options, not both")
    return ConsoleASGI(console)
