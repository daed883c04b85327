"""A tiny browser for the pages' tests: it keeps the console's cookie as a
browser would (Path, expiry by Max-Age=0), reads forms' CSRF tokens and
nonces from the pages, and follows nothing on its own."""

from __future__ import annotations

import html
import re
import urllib.parse
from collections.abc import Mapping

from aqnt_auth.console import Console, Request, Response

KEY = re.compile(r"sk_(?:live|test)_[0-9A-Za-z]{50}")
_FORM = re.compile(r'<form method="post" action="([^"]*)"[^>]*>(.*?)</form>', re.S)
_HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)"')


class Client:
    """Requests to one console, with its cookie jar (one cookie matters)."""

    def __init__(self, console: Console, *, root_path: str = "",
                 host: str = "127.0.0.1:8000", client: str = "127.0.0.1",
                 scheme: str = "http") -> None:
        self.console = console
        self.root_path = root_path
        self.host = host
        self.client = client
        self.scheme = scheme
        self.cookies: dict[str, str] = {}
        self.last: Response | None = None

    def request(self, method: str, path: str, *, query: str = "",
                form: Mapping[str, str] | None = None,
                headers: Mapping[str, str] | None = None) -> Response:
        sent = {"host": self.host, **(headers or {})}
        if self.cookies:
            sent["cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = b""
        if form is not None:
            sent["content-type"] = "application/x-www-form-urlencoded"
            body = urllib.parse.urlencode(form).encode()
        response = self.console.handle(Request(method, path, query, sent, body,
                                               client=self.client, scheme=self.scheme,
                                               root_path=self.root_path))
        for name, value in response.headers:
            if name.lower() == "set-cookie":
                cookie, _, attributes = value.partition(";")
                cname, _, cvalue = cookie.partition("=")
                if "max-age=0" in attributes.lower().replace(" ", ""):
                    self.cookies.pop(cname, None)
                else:
                    self.cookies[cname] = cvalue
        self.last = response
        return response

    def get(self, path: str, query: str = "") -> Response:
        return self.request("GET", path, query=query)

    def post(self, path: str, form: Mapping[str, str] | None = None) -> Response:
        return self.request("POST", path, form=form or {})

    def submit(self, page_path: str, action: str, fields: Mapping[str, str] | None = None,
               *, query: str = "") -> Response:
        """GET *page_path*, then post its form to *action* with the form's
        hidden fields (CSRF token, nonce) and *fields*."""
        page = self.get(page_path, query)
        assert page.status == 200, (page.status, page_path)
        hidden = form_fields(page, self.root_path + action)
        return self.post(action, {**hidden, **(fields or {})})

    def sign_in(self, key: str) -> Response:
        response = self.submit("/sign-in", "/sign-in", {"api_key": key})
        assert response.status == 303, text(response)
        return response


def text(response: Response) -> str:
    return response.body.decode("utf-8")


def form_fields(response: Response, action: str) -> dict[str, str]:
    """The hidden fields of the page's form posting to *action*."""
    for found_action, inner in _FORM.findall(text(response)):
        if html.unescape(found_action) == action:
            return {name: html.unescape(value) for name, value in _HIDDEN.findall(inner)}
    raise AssertionError(f"no form posting to {action} on the page")


def cookie_attributes(response: Response, name: str = "aqnt_console") -> dict[str, str]:
    """The attributes of the Set-Cookie for *name* (lower-case names)."""
    for header, value in response.headers:
        if header.lower() == "set-cookie" and value.startswith(name + "="):
            out: dict[str, str] = {}
            for part in value.split(";")[1:]:
                key, _, val = part.strip().partition("=")
                out[key.lower()] = val
            return out
    raise AssertionError(f"no Set-Cookie for {name}")
