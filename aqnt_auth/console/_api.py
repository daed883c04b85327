"""The console's JSON API, under ``/api/``: the key manager over HTTP.

Every change goes through :class:`~aqnt_auth.KeyManager` with the admin as
the actor, so the CLI, the Django admin and the console change keys the same
way.  A new key appears in one response only: the one that issued it
(``POST /api/keys`` and ``POST /api/keys/{id}/rotate``).  Errors are the
core's JSON bodies; :mod:`._openapi` describes every route.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

from .._durations import parse_duration
from .._errors import ConfigurationError, InvalidRequest, UnsupportedMediaType
from .._format import MODES
from .._manager import IssuedKey
from .._records import KeyRecord, utcnow
from .._scan import find_keys
from ._http import Response

if TYPE_CHECKING:
    from ._app import Call, Console

__all__ = ["STATUSES", "key_json", "register"]

#: The ``status`` filter's values: a record's status, or due for rotation.
STATUSES: Final = ("active", "expiring", "expired", "revoked", "disabled", "due_for_rotation")
MAX_BODY: Final = 64 * 1024

_CREATE_FIELDS: Final = frozenset({
    "name", "mode", "scopes", "read_only", "allowed_paths", "expires_at", "expires_in",
    "owner", "metadata", "allowed_ips", "quota", "quota_refill", "rate_limits",
    "shared_limit",
})
_UPDATE_FIELDS: Final = frozenset({"name", "scopes", "allowed_ips", "expires_at", "quota",
                                   "quota_refill", "rate_limits", "shared_limit"})
_ROTATE_FIELDS: Final = frozenset({"grace", "expires_at", "expires_in", "force"})


def register(console: Console) -> None:
    add = console.router.add
    add("GET", "/api/openapi.json", _openapi, access="public")
    add("GET", "/api/keys", _list)
    add("POST", "/api/keys", _create)
    add("GET", "/api/keys/{id}", _detail)
    add("PATCH", "/api/keys/{id}", _update)
    add("POST", "/api/keys/{id}/rotate", _rotate)
    add("POST", "/api/keys/{id}/revoke", _action("revoke"))
    add("POST", "/api/keys/{id}/disable", _action("disable"))
    add("POST", "/api/keys/{id}/enable", _action("enable"))
    add("GET", "/api/keys/{id}/audit", _key_audit)
    add("GET", "/api/audit", _audit)
    add("GET", "/api/hygiene", _hygiene)
    add("GET", "/api/keys/{id}/usage", _key_usage)
    add("GET", "/api/usage", _usage)


def _json(data: Any, status: int = 200) -> Response:
    from ._app import json_response

    return json_response(data, status)


def key_json(record: KeyRecord, now: dt.datetime | None = None) -> dict[str, Any]:
    """A record as the API shows it: every field but the hash, its status and
    whether it is due for rotation."""
    out = record.public_dict()
    out["status"] = record.status(now)
    out["due_for_rotation"] = record.due_for_rotation(now)
    return out


def _issued(issued: IssuedKey) -> dict[str, Any]:
    return {"key": issued.key, "api_key": key_json(issued.record)}


# -- reading bodies and fields -------------------------------------------------


def _body(call: Call, fields: frozenset[str]) -> dict[str, Any]:
    request = call.request
    if not request.body:
        return {}
    ctype = (request.header("content-type") or "").split(";", 1)[0].strip().lower()
    if ctype != "application/json":
        raise UnsupportedMediaType()
    if len(request.body) > MAX_BODY:
        raise InvalidRequest(f"The body must be at most {MAX_BODY} bytes")
    try:
        data = json.loads(request.body)
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequest("The body is not valid JSON") from None
    if not isinstance(data, dict):
        raise InvalidRequest("The body must be a JSON object")
    unknown = sorted(set(data) - fields)
    if unknown:
        # Field names are echoed only when they are plain identifiers.
        named = [n for n in unknown if n.isidentifier() and len(n) <= 40]
        listed = ", ".join(repr(n) for n in named) if len(named) == len(unknown) else None
        raise InvalidRequest(f"Unknown field {listed}" if listed and len(named) == 1
                             else f"Unknown fields {listed}" if listed
                             else "The body has unknown fields")
    return data


def _string(data: Mapping[str, Any], name: str, *, nullable: bool = False) -> str | None:
    value = data.get(name)
    if value is None and nullable:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest(f"Field '{name}' must be a non-empty string"
                             + (" or null" if nullable else ""))
    return value


def _strings(data: Mapping[str, Any], name: str) -> list[str]:
    value = data.get(name)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidRequest(f"Field '{name}' must be a list of strings")
    return value


def _bool(data: Mapping[str, Any], name: str) -> bool:
    value = data.get(name)
    if not isinstance(value, bool):
        raise InvalidRequest(f"Field '{name}' must be true or false")
    return value


def _count(data: Mapping[str, Any], name: str) -> int:
    value = data.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidRequest(f"Field '{name}' must be a whole number, 0 or more")
    return value


def _datetime(data: Mapping[str, Any], name: str, what: str = "Field") -> dt.datetime:
    value = data.get(name)
    if isinstance(value, str):
        text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
        try:
            parsed = dt.datetime.fromisoformat(text)
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            return parsed
    raise InvalidRequest(f"{what} '{name}' must be an ISO 8601 time with a UTC offset "
                         "(2030-01-31T12:00:00Z)")


def _duration(data: Mapping[str, Any], name: str) -> dt.timedelta:
    value = data.get(name)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 3_153_600_000:
        return dt.timedelta(seconds=value)
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except ConfigurationError:
            pass
    raise InvalidRequest(f"Field '{name}' must be a duration: seconds, or a number and a "
                         "unit (90d, 24h, 30m, 45s, 2w)")


def _refused(exc: ConfigurationError) -> InvalidRequest:
    """The key manager's refusal as a 400; its sentence, unless it quotes a key."""
    text = str(exc)
    if any(True for _ in find_keys(text)):
        text = "A value is invalid"
    return InvalidRequest(text[:1].upper() + text[1:])


def _managed(func: Callable[[], Any]) -> Any:
    try:
        return func()
    except ConfigurationError as exc:
        raise _refused(exc) from None


# -- views -----------------------------------------------------------------------


def _openapi(call: Call) -> Response:
    from ._openapi import document

    return _json(document(call.request.root_path))


def _list(call: Call) -> Response:
    query = call.request.query
    for name in query:
        if name not in ("status", "mode", "owner", "q"):
            raise InvalidRequest("Unknown query parameter: use status, mode, owner or q"
                                 if not name.isidentifier() or len(name) > 40
                                 else f"Unknown query parameter '{name}'")
    statuses = {s.strip() for v in query.get("status", ()) for s in v.split(",") if s.strip()}
    if not statuses <= set(STATUSES):
        raise InvalidRequest("Query parameter 'status' must be one or more of "
                             + ", ".join(STATUSES))
    modes = {m.strip() for v in query.get("mode", ()) for m in v.split(",") if m.strip()}
    if not modes <= set(MODES):
        raise InvalidRequest("Query parameter 'mode' must be live or test")
    owner = call.request.query_value("owner") or None
    needle = call.request.query_value("q").strip().casefold()
    now = utcnow()
    out = []
    for record in call.console.manager.list(owner=owner):
        if modes and record.mode not in modes:
            continue
        if statuses and record.status(now) not in statuses and not (
            "due_for_rotation" in statuses and record.due_for_rotation(now)
        ):
            continue
        if needle and not any(needle in (field or "").casefold() for field in
                              (record.id, record.name, record.owner, record.hint)):
            continue
        out.append(key_json(record, now))
    return _json({"data": out, "count": len(out)})


def _create(call: Call) -> Response:
    data = _body(call, _CREATE_FIELDS)
    options: dict[str, Any] = {"name": _string(data, "name")}
    if "mode" in data:
        if data["mode"] not in MODES:
            raise InvalidRequest("Field 'mode' must be 'live' or 'test'")
        options["mode"] = data["mode"]
    for name in ("scopes", "allowed_paths", "allowed_ips", "rate_limits"):
        if name in data:
            options[name] = _strings(data, name)
    if "shared_limit" in data:
        options["shared_limit"] = _bool(data, "shared_limit")
    if "read_only" in data:
        options["read_only"] = _bool(data, "read_only")
    if "owner" in data:
        options["owner"] = _string(data, "owner", nullable=True)
    if "metadata" in data:
        if not isinstance(data["metadata"], dict):
            raise InvalidRequest("Field 'metadata' must be a JSON object")
        options["metadata"] = data["metadata"]
    if data.get("expires_at") is not None:
        options["expires_at"] = _datetime(data, "expires_at")
    if data.get("expires_in") is not None:
        options["expires_in"] = _duration(data, "expires_in")
    if data.get("quota") is not None:
        options["quota"] = _count(data, "quota")
    if data.get("quota_refill") is not None:
        options["quota_refill"] = _string(data, "quota_refill")
    manager, actor = call.console.manager, call.console.actor(call.admin)
    issued: IssuedKey = _managed(lambda: manager.create(**options, **actor))
    return _json(_issued(issued), 201)


def _record(call: Call) -> KeyRecord:
    return call.console.manager.get(call.params["id"])


def _detail(call: Call) -> Response:
    record = _record(call)
    out = key_json(record)
    out["rotated_to"] = [r.id for r in call.console.manager.list(owner=record.owner)
                         if r.rotated_from == record.id]
    return _json(out)


def _update(call: Call) -> Response:
    data = _body(call, _UPDATE_FIELDS)
    if not data:
        raise InvalidRequest("Give at least one of: " + ", ".join(sorted(_UPDATE_FIELDS)))
    manager, actor = call.console.manager, call.console.actor(call.admin)
    key_id = _record(call).id
    changes: dict[str, Any] = {}
    if "name" in data:
        changes["name"] = _string(data, "name")
    for name in ("scopes", "allowed_ips"):
        if name in data:
            changes[name] = _strings(data, name)
    # "rate_limits": [] or null removes them.
    if "rate_limits" in data:
        if data["rate_limits"] is None or data["rate_limits"] == []:
            changes["clear_rate_limits"] = True
        else:
            changes["rate_limits"] = _strings(data, "rate_limits")
    if "shared_limit" in data:
        changes["shared_limit"] = _bool(data, "shared_limit")
    # "quota": null removes the quota and its refill (JSON merge-patch style).
    if "quota" in data and data["quota"] is None:
        if data.get("quota_refill") is not None:
            raise InvalidRequest("Give a quota or remove it (\"quota\": null), not both")
        changes["clear_quota"] = True
    elif "quota" in data:
        changes["quota"] = _count(data, "quota")
    if data.get("quota_refill") is not None:
        changes["quota_refill"] = _string(data, "quota_refill")
    elif "quota_refill" in data and "clear_quota" not in changes:
        raise InvalidRequest("Field 'quota_refill' must be a non-empty string: remove the "
                             "quota with \"quota\": null")
    expires_at = _datetime(data, "expires_at") if "expires_at" in data else None
    record: KeyRecord | None = None
    if changes:
        record = _managed(lambda: manager.update(key_id, **changes, **actor))
    if expires_at is not None:
        record = _managed(lambda: manager.expire(key_id, expires_at, **actor))
    assert record is not None
    return _json(key_json(record))


def _rotate(call: Call) -> Response:
    data = _body(call, _ROTATE_FIELDS)
    options: dict[str, Any] = {}
    if "grace" in data:
        options["grace"] = _duration(data, "grace")
    if data.get("expires_at") is not None:
        options["expires_at"] = _datetime(data, "expires_at")
    if data.get("expires_in") is not None:
        options["expires_in"] = _duration(data, "expires_in")
    if "force" in data:
        options["force"] = _bool(data, "force")
    manager, actor = call.console.manager, call.console.actor(call.admin)
    key_id = _record(call).id
    issued: IssuedKey = _managed(lambda: manager.rotate(key_id, **options, **actor))
    out = _issued(issued)
    out["rotated_from"] = key_json(manager.get(key_id))
    return _json(out, 201)


def _action(name: str) -> Callable[[Call], Response]:
    def view(call: Call) -> Response:
        _body(call, frozenset())
        manager, actor = call.console.manager, call.console.actor(call.admin)
        key_id = _record(call).id
        change: Callable[..., KeyRecord] = getattr(manager, name)
        return _json(key_json(change(key_id, **actor)))

    view.__name__ = f"_{name}"
    return view


# -- the audit log and hygiene -----------------------------------------------------

#: Entries an audit answer holds unless ``limit`` asks for fewer or more.
AUDIT_LIMIT: Final = 100
MAX_AUDIT_LIMIT: Final = 1000


def _query(call: Call, allowed: tuple[str, ...]) -> None:
    for name in call.request.query:
        if name not in allowed:
            if not allowed:
                raise InvalidRequest("This route takes no query parameters")
            raise InvalidRequest("Unknown query parameter: use " + ", ".join(allowed)
                                 if not name.isidentifier() or len(name) > 40
                                 else f"Unknown query parameter '{name}'")


def _query_time(call: Call, name: str) -> dt.datetime | None:
    # A "+" in a query string arrives as a space: "...T12:00:00+02:00" unencoded.
    text = re.sub(r" (\d\d:?\d\d)$", r"+\1", call.request.query_value(name))
    return _datetime({name: text}, name, "Query parameter") if text else None


def _audit_answer(call: Call, key_id: str | None) -> Response:
    _query(call, ("since", "until", "limit"))
    since, until = _query_time(call, "since"), _query_time(call, "until")
    raw = call.request.query_value("limit")
    limit = AUDIT_LIMIT
    if raw:
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_AUDIT_LIMIT:
            raise InvalidRequest(f"Query parameter 'limit' must be 1 to {MAX_AUDIT_LIMIT}")
        limit = int(raw)
    manager = call.console.manager
    entries = manager.audit(key_id=key_id, since=since, until=until, limit=limit)
    if key_id is not None and not entries:
        manager.get(key_id)  # 404 for an id with neither a key nor entries
    return _json({"data": [entry.to_dict() for entry in entries], "count": len(entries)})


def _key_audit(call: Call) -> Response:
    return _audit_answer(call, call.params["id"])


def _audit(call: Call) -> Response:
    return _audit_answer(call, None)


def _hygiene(call: Call) -> Response:
    _query(call, ())
    now = utcnow()
    found = call.console.manager.hygiene(now=now)
    return _json({"checked_at": found.checked_at.isoformat(),
                  **{name: [key_json(r, now) for r in records]
                     for name, records in found.findings().items()}})


# -- usage history ---------------------------------------------------------------

#: The most buckets one usage answer holds (31 days of hours, 3 years of days fit).
MAX_BUCKETS: Final = 1200
MAX_TOP: Final = 100


def _since(call: Call, now: dt.datetime) -> dt.datetime | None:
    """``since``: a time, or a duration back from now (``7d``)."""
    text = call.request.query_value("since")
    if text and text[:1].isdigit() and text[-1:].lower() in "smhdw" and "-" not in text:
        try:
            return now - parse_duration(text)
        except ConfigurationError:
            pass
    return _query_time(call, "since")


def _usage_range(call: Call, allowed: tuple[str, ...]
                 ) -> tuple[dt.datetime | None, dt.datetime | None, Any]:
    _query(call, allowed)
    bucket = call.request.query_value("bucket", "hour")
    if bucket not in ("hour", "day"):
        raise InvalidRequest("Query parameter 'bucket' must be hour or day")
    now = utcnow()
    since, until = _since(call, now), _query_time(call, "until")
    end = until or now
    begin = since or end - (dt.timedelta(hours=24) if bucket == "hour" else
                            dt.timedelta(days=30))
    if begin > end:
        raise InvalidRequest("Query parameter 'since' must not be after 'until'")
    step = dt.timedelta(hours=1) if bucket == "hour" else dt.timedelta(days=1)
    if (end - begin) / step > MAX_BUCKETS - 1:
        raise InvalidRequest(f"The range holds more than {MAX_BUCKETS} {bucket} buckets: "
                             "use a shorter range" + (" or bucket=day" if bucket == "hour"
                                                      else ""))
    return since, until, bucket


def _key_usage(call: Call) -> Response:
    since, until, bucket = _usage_range(call, ("since", "until", "bucket"))
    series = call.console.manager.usage(call.params["id"], since=since, until=until,
                                        bucket=bucket)
    return _json(series.to_dict())


def _usage(call: Call) -> Response:
    since, until, bucket = _usage_range(call, ("since", "until", "bucket", "top"))
    raw = call.request.query_value("top")
    top = 10
    if raw:
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_TOP:
            raise InvalidRequest(f"Query parameter 'top' must be 1 to {MAX_TOP}")
        top = int(raw)
    summary = call.console.manager.usage_summary(since=since, until=until, bucket=bucket,
                                                 top=top)
    return _json(summary.to_dict())
