"""The console's HTML pages: sign-in, the key list, creation, detail,
actions and the overview.

The pages register on the :class:`~aqnt_auth.console.Console`'s router like
the JSON API, so the console checks who is asking and what they may do
before a page runs (signed out: a redirect to the sign-in form; read-only:
403 on every change).  The pages add what only browsers need:

* the sign-in form and its session cookie (:mod:`._session`), as one of
  the console's ways to recognise an admin;
* a CSRF token in every form, checked on every POST before anything else;
* the security headers (:mod:`._security`) on every answer of the console.

Every page works without JavaScript (the one script only adds a copy
button), and every change goes through :class:`~aqnt_auth.KeyManager` with
the signed-in actor.

A new key is shown once, in the response to the POST that made it (creation
or rotation): never in a cookie, a session, a redirect or a table.  The form
carries a one-time nonce that the session remembers, so a reload, which
repeats the POST, is recognised and makes no second key.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib.resources
import re
import secrets
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final

import jinja2
from markupsafe import Markup

from .._durations import parse_duration
from .._errors import (
    AQNTError,
    AuthError,
    ConfigurationError,
    KeyNotFound,
    KeyStateError,
    MethodNotAllowed,
    PermissionDenied,
    RateLimited,
    RouteNotFound,
    StoreUnavailable,
)
from .._manager import IssuedKey
from .._quota import is_moved, next_refill
from .._records import KeyRecord
from .._usage_history import Bucket, UsageBucket
from ._chart import bar_chart, outcomes_of
from ._http import Request, Response
from ._security import add_security_headers
from ._session import Session, Sessions

if TYPE_CHECKING:
    from ._app import Admin, Call, Console

__all__ = ["STATUSES", "Pages", "register"]

_HTML: Final = "text/html; charset=utf-8"
_STATIC_TYPES: Final = {".css": "text/css; charset=utf-8",
                        ".js": "text/javascript; charset=utf-8"}
#: The list's status filter: a record's status, or due for rotation.
STATUSES: Final = ("active", "expiring", "expired", "revoked", "disabled", "due")
_SPLIT: Final = re.compile(r"[\s,]+")

#: The hygiene findings (KeyManager.hygiene), as the overview's cards name them.
HYGIENE: Final = {
    "never_expire": "never expire",
    "idle": "idle 90 days or more",
    "live_without_allowlist": "live keys without an IP allowlist",
    "due_for_rotation": "due for rotation",
}
#: Audit entries per page.
AUDIT_PAGE: Final = 100
#: The usage ranges a page offers: its length and its buckets.
RANGES: Final[dict[str, tuple[dt.timedelta, Bucket]]] = {
    "24h": (dt.timedelta(hours=24), "hour"),
    "7d": (dt.timedelta(days=7), "hour"),
    "30d": (dt.timedelta(days=30), "day"),
}
_RANGE_NAMES: Final = {"24h": "24 hours", "7d": "7 days", "30d": "30 days"}

_DONE: Final = {
    "revoked": "The key was revoked. Requests with it now get key_revoked.",
    "disabled": "The key was disabled. Requests with it get key_disabled until you enable it.",
    "enabled": "The key was enabled.",
    "updated": "The key was updated.",
}


@dataclasses.dataclass
class _Page:
    """One page request: the call, its session, and whether the session
    must be (re)sent (a new anonymous one, or one the page changed)."""

    call: Call
    session: Session
    changed: bool

    @property
    def request(self) -> Request:
        return self.call.request

    @property
    def admin(self) -> Admin | None:
        return self.call.admin

    @property
    def can_write(self) -> bool:
        return self.call.admin is not None and self.call.admin.can_write

    def form(self) -> dict[str, str]:
        return {name: values[-1] for name, values in self.request.form.items()}


PageView = Callable[[_Page], Response]


def register(console: Console, sessions: Sessions, *,
             clock: Callable[[], dt.datetime] | None = None) -> Pages:
    """Add the pages to *console*: their routes, the session sign-in, the
    error pages and the security headers on every answer."""
    return Pages(console, sessions, clock=clock)


class Pages:
    """The HTML side of a :class:`~aqnt_auth.console.Console` (see :func:`register`)."""

    def __init__(self, console: Console, sessions: Sessions, *,
                 clock: Callable[[], dt.datetime] | None = None) -> None:
        self.console = console
        self.sessions = sessions
        self._clock = clock or (lambda: dt.datetime.now(dt.timezone.utc))
        self._env = jinja2.Environment(
            loader=jinja2.PackageLoader("aqnt_auth.console", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self._env.filters["when"] = _when
        self._env.filters["audit_value"] = _audit_value
        self._static = _load_static()
        add = console.router.add
        add("GET", "/static/{name}", self._serve_static, access="public")
        add("GET", "/sign-in", self._page(self._sign_in_form), access="public")
        add("POST", "/sign-in", self._page(self._sign_in), access="public")
        add("POST", "/sign-out", self._page(self._sign_out), access="read")
        add("GET", "/", self._page(self._overview))
        add("GET", "/keys", self._page(self._keys))
        add("POST", "/keys", self._page(self._create))
        add("GET", "/keys/new", self._page(self._new_form, writes=True))
        add("GET", "/keys/{id}", self._page(self._detail))
        add("GET", "/audit", self._page(self._audit))
        add("GET", "/keys/{id}/edit", self._page(self._edit_form, writes=True))
        add("POST", "/keys/{id}/edit", self._page(self._edit))
        add("GET", "/keys/{id}/revoke", self._page(self._revoke_confirm, writes=True))
        add("POST", "/keys/{id}/revoke", self._page(self._revoke))
        add("POST", "/keys/{id}/rotate", self._page(self._rotate))
        add("POST", "/keys/{id}/disable", self._page(self._disable))
        add("POST", "/keys/{id}/enable", self._page(self._enable))
        console.add_authentication(self.session_admin)
        console.unauthenticated = self._to_sign_in
        console.html_error = self._html_error
        console.response_hooks.append(self._finish)

    # -- the session ----------------------------------------------------------

    def session_admin(self, request: Request) -> Admin | None:
        """The admin a live, signed-in session cookie names (the console asks
        this after a Bearer key and its ``authorize`` hook)."""
        from ._app import Admin

        session = self.sessions.load(request)
        if session is None or session.actor is None:
            return None
        return Admin(session.actor, session.can_write, "session")

    def _finish(self, request: Request, response: Response) -> None:
        """Every answer: the security headers; and a live session, seen now
        (its idle timeout starts again), unless the page set the cookie.  An
        anonymous session is kept alive too: it holds the CSRF secret of an
        admin the host app's ``authorize`` hook recognises."""
        add_security_headers(response)
        prefix = self.sessions.cookie_name + "="
        if any(k.lower() == "set-cookie" and v.startswith(prefix) for k, v in response.headers):
            return
        session = self.sessions.load(request)
        if session is not None:
            response.headers.append(
                ("Set-Cookie", self.sessions.set_cookie(request, self.sessions.touch(session))))

    def _page(self, view: PageView, *, writes: bool = False) -> Callable[[Call], Response]:
        """*view* as a route's view: its session, the CSRF check on a POST,
        and the session cookie on the way out.  *writes*: a GET that only
        shows a form for a change, refused to read-only admins as the change
        itself is."""

        def route_view(call: Call) -> Response:
            loaded = self.sessions.load(call.request)
            page = _Page(call, loaded if loaded is not None else self.sessions.anonymous(),
                         changed=loaded is None)
            if writes and not page.can_write:
                raise PermissionDenied("read-only admin")
            token = call.request.form.get("csrf_token", [""])[-1]
            if call.request.method == "POST" and not self.sessions.csrf_valid(
                    loaded, call.request.path, token):
                response = self._csrf_failed(page)
            else:
                response = view(page)
            prefix = self.sessions.cookie_name + "="
            if page.changed and not any(k.lower() == "set-cookie" and v.startswith(prefix)
                                        for k, v in response.headers):
                response.headers.append(
                    ("Set-Cookie", self.sessions.set_cookie(call.request, page.session)))
            return response

        return route_view

    def _csrf_failed(self, page: _Page) -> Response:
        if page.request.path == "/sign-in":
            # An expired sign-in form: a fresh one (the new cookie comes with it).
            page.changed = True
            return self._sign_in_page(page, 403, error="The sign-in form expired. "
                                      "Paste the key again.")
        return self._error(page, 403, "Form expired or forged",
                           "This form's security token is missing or wrong (the page may be "
                           "older than your session). Go back, reload the page, and try again.")

    # -- rendering ------------------------------------------------------------

    def _render(self, request: Request, admin: Admin | None, session: Session | None,
                template: str, http_status: int = 200, **values: Any) -> Response:
        root = request.root_path.rstrip("/")

        def url(path: str, **query: str) -> str:
            suffix = "?" + urllib.parse.urlencode(query) if query else ""
            return root + path + suffix

        def csrf(action: str) -> Markup:
            token = self.sessions.csrf_token(session, action) if session is not None else ""
            return Markup('<input type="hidden" name="csrf_token" value="{}">').format(token)

        body = self._env.get_template(template).render(
            title="API keys", viewer=admin, url=url, csrf=csrf, path=request.path,
            admin_scope=self.console.admin_scope, read_scope=self.console.read_scope,
            now=self._clock(), **values)
        return Response(http_status, [("Content-Type", _HTML)], body.encode("utf-8"))

    def _show(self, page: _Page, template: str, http_status: int = 200,
              **values: Any) -> Response:
        return self._render(page.request, page.admin, page.session, template, http_status,
                            **values)

    def _error(self, page: _Page, status: int, heading: str, message: str) -> Response:
        return self._show(page, "error.html", status, heading=heading, message=message)

    def _html_error(self, request: Request, error: AQNTError) -> Response:
        """The console's error page for an HTML route (404, 405, 403 read-only...)."""
        admin = self.session_admin(request)
        session = self.sessions.load(request)
        heading, message = _explain(error, self.console.admin_scope)
        response = self._render(request, admin, session, "error.html", error.status_code,
                                heading=heading, message=message)
        if isinstance(error, MethodNotAllowed):
            response.headers.append(("Allow", ", ".join(error.allowed)))
        return response

    def _redirect(self, request: Request, target: str) -> Response:
        location = request.root_path.rstrip("/") + target
        return Response(303, [("Location", location), ("Content-Type", _HTML)], b"")

    def _to_sign_in(self, request: Request) -> Response:
        target = request.path + (f"?{request.query_string}" if request.query_string else "")
        query: dict[str, str] = {"next": target}
        if self.sessions.cookie_name in request.cookies:
            query["ended"] = "1"
        return self._redirect(request, "/sign-in?" + urllib.parse.urlencode(query))

    def _serve_static(self, call: Call) -> Response:
        found = self._static.get(call.params["name"])
        if found is None:
            raise RouteNotFound()
        ctype, data = found
        return Response(200, [("Content-Type", ctype)], data)

    # -- sign-in ----------------------------------------------------------------

    def _sign_in_form(self, page: _Page) -> Response:
        request = page.request
        if self.console.authenticate(request, api=False) is not None:
            return self._redirect(request, _safe_next(request.query_value("next", "/")))
        notice = "Your session ended. Sign in again." if request.query_value("ended") else ""
        return self._sign_in_page(page, 200, notice=notice)

    def _sign_in_page(self, page: _Page, status: int, *, error: str = "",
                      notice: str = "") -> Response:
        request = page.request
        next_path = _safe_next(page.form().get("next", "") or request.query_value("next", "/"))
        return self._show(page, "sign_in.html", status, error=error, notice=notice,
                          next_path=next_path)

    def _sign_in(self, page: _Page) -> Response:
        request = page.request
        pasted = page.form().get("api_key", "").strip()
        if pasted[:7].lower() == "bearer ":
            pasted = pasted[7:].strip()
        if not pasted:
            return self._sign_in_page(page, 400, error="Paste an API key to sign in.")
        try:
            # Checked as a GET of the sign-in page: signing in reads nothing and
            # changes nothing, so a read-only key may sign in (read-only).
            admin = self.console.key_admin(dataclasses.replace(request, method="GET"),
                                           f"Bearer {pasted}")
        except RateLimited as exc:
            response = self._sign_in_page(
                page, 429, error=f"Too many failed sign-ins from here. Wait "
                f"{exc.retry_after} seconds and try again.")
            response.headers.append(("Retry-After", str(exc.retry_after)))
            return response
        except PermissionDenied as exc:
            if exc.code != "insufficient_scope":
                return self._sign_in_page(page, 403, error=f"That key cannot sign in here: "
                                          f"{exc.message}.")
            return self._sign_in_page(
                page, 403, error=f"That key is valid but has neither the scope "
                f"{self.console.admin_scope} (to manage keys) nor {self.console.read_scope} "
                "(to view them).")
        except StoreUnavailable:
            return self._sign_in_page(page, 503, error="The key store did not answer. "
                                      "Try again shortly.")
        except AuthError as exc:
            if exc.code in ("invalid_api_key", "missing_api_key"):
                error = ("That key was not accepted: it is not a valid key of this key store. "
                         "Check that you pasted all of it.")
            else:  # revoked, disabled, expired: the key was right, its state is not
                error = f"That key cannot sign in: {exc.message}."
            return self._sign_in_page(page, 401, error=error)
        # A new session, with a new CSRF secret: a cookie planted before
        # signing in (session fixation) is worth nothing afterwards.
        page.session = self.sessions.sign_in(admin.actor, can_write=admin.can_write)
        page.changed = True
        return self._redirect(request, _safe_next(page.form().get("next", "/")))

    def _sign_out(self, page: _Page) -> Response:
        request = page.request
        page.changed = False
        response = self._redirect(request, "/sign-in")
        response.headers.append(("Set-Cookie", self.sessions.clear_cookie(request)))
        return response

    # -- the key list -------------------------------------------------------------

    def _status(self, record: KeyRecord, now: dt.datetime) -> str:
        status = record.status(now)
        if status in ("active", "expiring") and record.due_for_rotation(now):
            return "due"
        return status

    def _keys(self, page: _Page) -> Response:
        request = page.request
        now = self._clock()
        records = self.console.manager.list()
        owners = sorted({r.owner for r in records if r.owner})
        summary = self.console.manager.usage_summary(since=now - dt.timedelta(hours=24),
                                                     top=max(len(records), 1))
        requests = {k.key_id: k.requests for k in summary.top_keys}
        query = request.query_value("q").strip()
        status = request.query_value("status")
        mode = request.query_value("mode")
        owner = request.query_value("owner")
        finding = request.query_value("hygiene")
        findings = self.console.manager.hygiene(now=now).findings()
        flagged = ({r.id for r in findings[finding]} if finding in findings else None)
        rows = []
        for record in reversed(records):  # newest first
            shown = self._status(record, now)
            if status == "":
                if shown == "revoked":
                    continue
            elif status != "all" and shown != status:
                continue
            if mode and record.mode != mode:
                continue
            if owner and record.owner != owner:
                continue
            if query and not _matches(record, query):
                continue
            if flagged is not None and record.id not in flagged:
                continue
            rows.append({"record": record, "status": shown,
                         "requests": requests.get(record.id, 0)})
        hidden = sum(1 for r in records if r.revoked_at is not None) if status == "" else 0
        return self._show(page, "keys.html", rows=rows, owners=owners, query=query,
                          status=status, mode=mode, owner=owner, statuses=STATUSES,
                          hygiene=finding if flagged is not None else "",
                          hygiene_label=HYGIENE.get(finding, ""),
                          hidden_revoked=hidden, requests_label="Requests (24 h)")

    # -- creation -------------------------------------------------------------------

    def _new_form(self, page: _Page) -> Response:
        return self._form_page(page, {}, "", 200)

    def _form_page(self, page: _Page, values: Mapping[str, str], error: str,
                   status: int) -> Response:
        return self._show(page, "key_new.html", status, values=values, error=error,
                          record=None, nonce=secrets.token_urlsafe(16))

    def _create(self, page: _Page) -> Response:
        form = page.form()
        nonce = form.get("nonce", "")
        if not nonce or nonce in page.session.used_nonces:
            return self._show(page, "resubmitted.html", 409)
        try:
            issued = self.console.manager.create(form.get("name", ""), **_create_kwargs(form),
                                                 **self.console.actor(page.admin))
        except (ConfigurationError, _FormError) as exc:
            return self._form_page(page, form, str(exc), 400)
        self._used(page, nonce)
        return self._shown_once(page, issued, rotated_from=None)

    def _used(self, page: _Page, nonce: str) -> None:
        page.session = page.session.with_nonce(nonce)
        page.changed = True

    def _shown_once(self, page: _Page, issued: IssuedKey,
                    rotated_from: KeyRecord | None) -> Response:
        return self._show(page, "key_created.html", 201 if rotated_from is None else 200,
                          key=issued.key, record=issued.record, rotated_from=rotated_from)

    # -- one key ----------------------------------------------------------------------

    def _detail(self, page: _Page) -> Response:
        manager = self.console.manager
        record = manager.get(page.call.params["id"])
        now = self._clock()
        span, bucket = self._range(page.request)
        usage = manager.usage(record.id, since=now - span, until=now, bucket=bucket)
        return self._show(page, "key_detail.html", record=record, quota=_quota_text(record),
                          key_status=self._status(record, now),
                          chain=rotation_chain(record, manager.list()),
                          done=_DONE.get(page.request.query_value("done"), ""),
                          nonce=secrets.token_urlsafe(16),
                          audit=manager.audit(key_id=record.id, limit=AUDIT_PAGE),
                          names={r.id: (r.name, r.hint) for r in manager.list()}, usage=usage,
                          chart=self._chart(usage.buckets, bucket, "key-usage",
                                            f"Requests of {record.name} by outcome"),
                          **self._range_values(page.request))

    def _range(self, request: Request) -> tuple[dt.timedelta, Bucket]:
        return RANGES.get(request.query_value("range"), RANGES["24h"])

    def _range_values(self, request: Request) -> dict[str, Any]:
        chosen = request.query_value("range")
        chosen = chosen if chosen in RANGES else "24h"
        return {"range": chosen, "ranges": _RANGE_NAMES}

    def _chart(self, buckets: tuple[UsageBucket, ...], bucket: Bucket, chart_id: str,
               title: str) -> dict[str, Any]:
        """The chart of *buckets*: its SVG and the outcomes in its legend."""
        return {"svg": Markup(bar_chart(buckets, title=title, chart_id=chart_id,  # noqa: S704
                                        hourly=bucket == "hour")),
                "outcomes": outcomes_of(buckets), "id": chart_id}

    def _edit_form(self, page: _Page) -> Response:
        record = self.console.manager.get(page.call.params["id"])
        values = {"name": record.name, "scopes": " ".join(record.scopes),
                  "allowed_ips": "\n".join(record.allowed_ips),
                  "rate_limits": "\n".join(record.rate_limits),
                  "shared_limit": "on" if record.rate_limit_shared else ""}
        return self._edit_page(page, record, values, "", 200)

    def _edit_page(self, page: _Page, record: KeyRecord, values: Mapping[str, str],
                   error: str, status: int) -> Response:
        return self._show(page, "key_edit.html", status, record=record, values=values,
                          error=error, quota_now=_quota_text(record))

    def _edit(self, page: _Page) -> Response:
        manager = self.console.manager
        record = manager.get(page.call.params["id"])
        form = page.form()
        actor = self.console.actor(page.admin)
        try:
            expires = form.get("expires_in", "").strip()
            expiry = self._clock() + _duration("Expire in", expires) if expires else None
            if expiry is not None and not record.allows_expiry(expiry):
                raise KeyStateError(record.expiry_refusal(expiry))  # before any change
            quota = _quota_kwargs(form, editing=True)
            manager.update(record.id, name=form.get("name", ""),
                           scopes=_lines(form.get("scopes", "")),
                           allowed_ips=_lines(form.get("allowed_ips", "")),
                           rate_limits=_limits(form.get("rate_limits", "")),
                           shared_limit=form.get("shared_limit") == "on", **quota, **actor)
            if expiry is not None:
                manager.expire(record.id, expiry, **actor)
        except (ConfigurationError, KeyStateError, _FormError) as exc:
            return self._edit_page(page, manager.get(record.id), form, str(exc), 400)
        return self._redirect(page.request, f"/keys/{record.id}?done=updated")

    def _revoke_confirm(self, page: _Page) -> Response:
        record = self.console.manager.get(page.call.params["id"])
        return self._show(page, "revoke_confirm.html", record=record)

    def _revoke(self, page: _Page) -> Response:
        manager = self.console.manager
        record = manager.revoke(manager.get(page.call.params["id"]).id,
                                **self.console.actor(page.admin))
        return self._redirect(page.request, f"/keys/{record.id}?done=revoked")

    def _disable(self, page: _Page) -> Response:
        record = self.console.manager.disable(page.call.params["id"],
                                              **self.console.actor(page.admin))
        return self._redirect(page.request, f"/keys/{record.id}?done=disabled")

    def _enable(self, page: _Page) -> Response:
        record = self.console.manager.enable(page.call.params["id"],
                                             **self.console.actor(page.admin))
        return self._redirect(page.request, f"/keys/{record.id}?done=enabled")

    def _rotate(self, page: _Page) -> Response:
        manager = self.console.manager
        old = manager.get(page.call.params["id"])
        form = page.form()
        nonce = form.get("nonce", "")
        if not nonce or nonce in page.session.used_nonces:
            return self._show(page, "resubmitted.html", 409)
        try:
            grace = parse_duration(form.get("grace", "") or "0")
        except ConfigurationError as exc:
            return self._error(page, 400, "Cannot rotate", str(exc))
        issued = manager.rotate(old.id, grace=grace, **self.console.actor(page.admin))
        self._used(page, nonce)
        return self._shown_once(page, issued, rotated_from=manager.get(old.id))

    # -- overview -----------------------------------------------------------------------

    def _overview(self, page: _Page) -> Response:
        now = self._clock()
        manager = self.console.manager
        records = manager.list()
        counts = dict.fromkeys(STATUSES, 0)
        for record in records:
            counts[self._status(record, now)] += 1
        hygiene = manager.hygiene(now=now).findings()
        span, bucket = self._range(page.request)
        summary = manager.usage_summary(since=now - span, until=now, bucket=bucket, top=10)
        return self._show(page, "overview.html", counts=counts, total=len(records),
                          hints={r.id: r.hint for r in records},
                          hygiene=[(name, HYGIENE[name], len(found))
                                   for name, found in hygiene.items()],
                          summary=summary,
                          failed=sum(summary.failures.values()),
                          chart=self._chart(summary.buckets, bucket, "all-usage",
                                            "Requests of every key by outcome"),
                          **self._range_values(page.request))

    def _audit(self, page: _Page) -> Response:
        manager = self.console.manager
        request = page.request
        key_filter = request.query_value("key").strip()
        until = _parse_time(request.query_value("until"))
        try:
            entries = manager.audit(key_id=key_filter or None, until=until,
                                    limit=AUDIT_PAGE + 1)
        except KeyNotFound:  # a whole key pasted as the id: never echoed
            entries, key_filter = [], ""
        older = None
        if len(entries) > AUDIT_PAGE:
            entries = entries[:AUDIT_PAGE]
            older = {"until": entries[-1].at.isoformat(),
                     **({"key": key_filter} if key_filter else {})}
        return self._show(page, "audit.html", entries=entries, key_filter=key_filter,
                          older=older, names={r.id: (r.name, r.hint) for r in manager.list()})


class _FormError(Exception):
    """A form field the user can fix: shown above the form (never a key)."""


def rotation_chain(record: KeyRecord, records: Iterable[KeyRecord]) -> list[KeyRecord]:
    """The rotation chain through *record*, oldest first: its predecessors
    (``rotated_from``) and its successors (the newest rotation of each)."""
    by_id = {r.id: r for r in records}
    successors: dict[str, KeyRecord] = {}
    for r in by_id.values():
        if r.rotated_from is not None:
            current = successors.get(r.rotated_from)
            if current is None or r.created_at >= current.created_at:
                successors[r.rotated_from] = r
    chain = [record]
    seen = {record.id}
    while True:
        before = chain[0].rotated_from
        if before is None or before not in by_id or before in seen:
            break
        chain.insert(0, by_id[before])
        seen.add(before)
    while True:
        after = successors.get(chain[-1].id)
        if after is None or after.id in seen:
            break
        chain.append(after)
        seen.add(after.id)
    return chain


def _explain(error: AQNTError, admin_scope: str) -> tuple[str, str]:
    """A heading and a sentence for the error page (fixed text: never
    anything from the request)."""
    if isinstance(error, KeyNotFound):
        return "No such key", "There is no key with that id."
    if isinstance(error, RouteNotFound):
        return error.message, "The console has no page at this address."
    if isinstance(error, MethodNotAllowed):
        return error.message, "This page does not take that method."
    if isinstance(error, PermissionDenied):
        return ("Read-only access", "You signed in read-only: looking is allowed, changes "
                f"need a key with the scope {admin_scope}.")
    if isinstance(error, KeyStateError):
        return "Not possible now", str(error)
    if isinstance(error, StoreUnavailable):
        return "Key store unavailable", "The key store did not answer. Try again shortly."
    return "Something went wrong", error.message


def _audit_value(value: object) -> str:
    """A field's value in an audit entry, in words."""
    if value is None:
        return "none"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str) and len(value) >= 19 and value[4] == "-" and value[10] == "T":
        when = _parse_time(value)
        if when is not None:
            return _when(when)
    return str(value)


def _parse_time(text: str) -> dt.datetime | None:
    """An ISO 8601 time from a query (the audit page's "older" link), or ``None``."""
    if not text:
        return None
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _limits(value: str) -> list[str]:
    """Rate limits, one a line (a period may hold a space: ``10/2 seconds``)."""
    return [line.strip() for line in value.splitlines() if line.strip()]


def _lines(value: str) -> list[str]:
    return [part for part in _SPLIT.split(value.strip()) if part]


def _when(value: dt.datetime | None) -> str:
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC") if value else ""


def _safe_next(value: str) -> str:
    """*value* if it is a path inside the console, else ``/`` (no open redirect)."""
    if (not value.startswith("/") or value.startswith("//") or "\\" in value
            or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value)):
        return "/"
    return value


def _matches(record: KeyRecord, query: str) -> bool:
    needle = query.lower()
    return any(needle in (field or "").lower()
               for field in (record.name, record.id, record.hint, record.owner))


def _create_kwargs(form: Mapping[str, str]) -> dict[str, Any]:
    """KeyManager.create's keyword arguments from the creation form."""
    mode = form.get("mode", "live")
    if mode not in ("live", "test"):
        raise _FormError("Mode must be live or test.")
    kwargs: dict[str, Any] = {
        "mode": mode,
        "scopes": _lines(form.get("scopes", "")),
        "read_only": form.get("read_only") == "on",
        "allowed_paths": _lines(form.get("allowed_paths", "")),
        "owner": form.get("owner", "").strip() or None,
        "allowed_ips": _lines(form.get("allowed_ips", "")),
        "rate_limits": _limits(form.get("rate_limits", "")),
        "shared_limit": form.get("shared_limit") == "on",
    }
    expires = form.get("expires_in", "").strip()
    if expires:
        kwargs["expires_in"] = _duration("Expires in", expires)
    kwargs.update(_quota_kwargs(form, editing=False))
    return kwargs


def _duration(label: str, text: str) -> dt.timedelta:
    try:
        return parse_duration(text)
    except ConfigurationError as exc:
        raise _FormError(f"{label}: {exc}") from None


def _quota_kwargs(form: Mapping[str, str], *, editing: bool) -> dict[str, Any]:
    """The quota keywords of KeyManager.create / update from a form."""
    out: dict[str, Any] = {}
    quota = form.get("quota", "").strip()
    if quota:
        if not quota.isdigit() or not quota.isascii() or len(quota) > 18:
            raise _FormError("Quota: a whole number of requests, like 10000.")
        out["quota"] = int(quota)
    refill = form.get("quota_refill", "").strip()
    if refill:
        out["quota_refill"] = refill
    if editing and form.get("clear_quota") == "on":
        out["clear_quota"] = True
    return out


def _quota_text(record: KeyRecord) -> str:
    """The key's quota in words, for the pages."""
    if record.quota_remaining is None:
        return "no quota"
    if is_moved(record.quota_remaining, record.quota_refilled_at):
        return "moved to its successor at the rotation (both share it during the grace period)"
    text = f"{record.quota_remaining} requests left"
    if record.quota_refill:
        following = next_refill(record.quota_refill, record.quota_refilled_at)
        text += f", refilled to {record.quota_refill}"
        if following is not None:
            text += f" (next: {_when(following)})"
    return text


def _load_static() -> dict[str, tuple[str, bytes]]:
    """The console's static files (package data), read once."""
    out: dict[str, tuple[str, bytes]] = {}
    folder = importlib.resources.files("aqnt_auth.console") / "static"
    for entry in folder.iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if entry.is_file() and suffix in _STATIC_TYPES:
            out[entry.name] = (_STATIC_TYPES[suffix], entry.read_bytes())
    return out
