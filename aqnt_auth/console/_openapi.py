"""The OpenAPI 3.1 document of the console's JSON API (``GET /api/openapi.json``).

Written by hand, beside the views it describes; the tests check it against
the OpenAPI schema, check that it names every route the router serves and
nothing else, and validate the API's real answers against it.
"""

from __future__ import annotations

import copy
from typing import Any, Final

from .. import __version__
from .._audit import AUDIT_EVENTS as _AUDIT_EVENTS
from .._format import MODES
from .._outcomes import FAILURE_OUTCOMES, KEY_OUTCOMES, KEYLESS_OUTCOMES, OUTCOMES

__all__ = ["document"]

_NULLABLE_TIME: Final = {"type": ["string", "null"], "format": "date-time"}
_STRINGS: Final = {"type": "array", "items": {"type": "string"}}
_DURATION: Final = {
    "description": "Seconds, or a number and a unit: 90d, 24h, 30m, 45s, 2w.",
    "oneOf": [
        {"type": "integer", "minimum": 0},
        {"type": "string", "pattern": "^(0|[0-9]{1,9}[smhdwSMHDW])$"},
    ],
}
_STATUSES: Final = ["active", "expiring", "expired", "revoked", "disabled"]

#: Error codes per status, as the API answers them.
_ERRORS: Final[dict[str, tuple[str, str, list[str]]]] = {
    "BadRequest": ("400", "The body or a parameter is invalid; the message says which.",
                   ["invalid_request"]),
    "Unauthorized": ("401", "No admin credential, or one that is not a valid key.",
                     ["missing_api_key", "invalid_api_key", "key_revoked", "key_disabled"]),
    "Forbidden": ("403", "The key has neither console scope, the admin is read-only, or the "
                  "key's own restrictions refuse the request.",
                  ["insufficient_scope", "ip_not_allowed"]),
    "NotFound": ("404", "No key with this id.", ["key_not_found", "not_a_key_id"]),
    "Conflict": ("409", "The key's state does not allow the change (a revoked key cannot "
                 "change; an expiry only moves earlier; a rotated key needs force).",
                 ["invalid_key_state"]),
    "UnsupportedMediaType": ("415", "A body that is not JSON; or a change made with a "
                             "browser's sign-in without Content-Type: application/json.",
                             ["unsupported_media_type"]),
    "RateLimited": ("429", "Too many failed attempts from this client or on this key id; "
                    "or the admin key's own rate limit or quota is used up (Retry-After "
                    "says when to try again).",
                    ["rate_limited", "rate_limit_exceeded", "quota_exceeded"]),
    "Unavailable": ("503", "The key store did not answer (Retry-After).",
                    ["auth_unavailable"]),
}


def _error(codes: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["error"],
        "additionalProperties": False,
        "properties": {"error": {
            "type": "object",
            "required": ["type", "message", "code"],
            "additionalProperties": False,
            "properties": {
                "type": {"type": "string"},
                "message": {"type": "string"},
                "code": {"type": "string", "enum": codes},
            },
        }},
    }


def _counts(outcomes: tuple[str, ...]) -> dict[str, Any]:
    return {"type": "object", "required": list(outcomes), "additionalProperties": False,
            "properties": {o: {"type": "integer", "minimum": 0} for o in outcomes}}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _responses(ok: str, schema: str, description: str, *errors: str) -> dict[str, Any]:
    out: dict[str, Any] = {ok: _json(_ref(schema), description)}
    for name in ("Unauthorized", "Forbidden", "RateLimited", "Unavailable", *errors):
        out[_ERRORS[name][0]] = {"$ref": f"#/components/responses/{name}"}
    return out


_KEY_ID: Final = {"name": "id", "in": "path", "required": True,
                  "description": "The key's id (never the key itself).",
                  "schema": {"type": "string"}}


def _body(schema: str, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": _ref(schema)}}}


def _action(verb: str, summary: str, description: str) -> dict[str, Any]:
    return {"post": {
        "operationId": f"{verb}Key",
        "summary": summary,
        "description": description + " Takes no body (or an empty JSON object).",
        "parameters": [_KEY_ID],
        "responses": _responses("200", "ApiKey", "The key, changed.", "NotFound", "Conflict",
                                "BadRequest", "UnsupportedMediaType"),
    }}


def _build() -> dict[str, Any]:
    api_key = {
        "type": "object",
        "description": "A key's record: every field but its hash. Never holds the key.",
        "required": ["id", "name", "mode", "hint", "prefix", "created_at", "expires_at",
                     "revoked_at", "disabled_at", "last_used_at", "usage_count", "scopes",
                     "read_only", "allowed_paths", "allowed_ips", "owner", "metadata",
                     "rotated_from", "status", "livemode", "due_for_rotation"],
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "mode": {"type": "string", "enum": list(MODES)},
            "hint": {"type": "string", "description": "sk_live_... and the last four "
                     "characters: safe to show."},
            "prefix": {"type": "string"},
            "created_at": {"type": "string", "format": "date-time"},
            "expires_at": _NULLABLE_TIME,
            "revoked_at": _NULLABLE_TIME,
            "disabled_at": _NULLABLE_TIME,
            "last_used_at": _NULLABLE_TIME,
            "usage_count": {"type": "integer", "minimum": 0},
            "scopes": _STRINGS,
            "read_only": {"type": "boolean"},
            "allowed_paths": _STRINGS,
            "allowed_ips": _STRINGS,
            "owner": {"type": ["string", "null"]},
            "metadata": {"type": "object"},
            "rotated_from": {"type": ["string", "null"]},
            "rate_limits": _STRINGS,
            "rate_limit_shared": {"type": "boolean"},
            "quota_remaining": {"type": ["integer", "null"]},
            "quota_refill": {"type": ["string", "null"]},
            "quota_refilled_at": _NULLABLE_TIME,
            "status": {"type": "string", "enum": _STATUSES},
            "livemode": {"type": "boolean"},
            "due_for_rotation": {"type": "boolean", "description": "Older than 90 days "
                                 "and still usable."},
        },
    }
    schemas: dict[str, Any] = {
        "ApiKey": api_key,
        "ApiKeyDetail": {"allOf": [_ref("ApiKey"), {
            "type": "object", "required": ["rotated_to"],
            "properties": {"rotated_to": {**_STRINGS, "description": "Ids of the keys that "
                                          "replaced this one by rotation."}},
        }]},
        "ApiKeyList": {
            "type": "object", "required": ["data", "count"], "additionalProperties": False,
            "properties": {"data": {"type": "array", "items": _ref("ApiKey")},
                           "count": {"type": "integer", "minimum": 0}},
        },
        "IssuedKey": {
            "type": "object", "required": ["key", "api_key"], "additionalProperties": False,
            "description": "The only answer that holds the key: store it now, it is never "
                           "shown again.",
            "properties": {"key": {"type": "string"}, "api_key": _ref("ApiKey")},
        },
        "RotatedKey": {
            "type": "object", "required": ["key", "api_key", "rotated_from"],
            "additionalProperties": False,
            "description": "The new key (shown this once), and the old one with its "
                           "remaining grace as its expiry.",
            "properties": {"key": {"type": "string"}, "api_key": _ref("ApiKey"),
                           "rotated_from": _ref("ApiKey")},
        },
        "AuditEntry": {
            "type": "object",
            "required": ["id", "at", "key_id", "event", "actor", "old", "new",
                         "related_key_id"],
            "description": "One change to one key. old and new hold the changed fields "
                           "before and after (never a secret or a hash).",
            "properties": {
                "id": {"type": ["integer", "null"]},
                "at": {"type": "string", "format": "date-time"},
                "key_id": {"type": "string"},
                "event": {"type": "string", "enum": list(_AUDIT_EVENTS)},
                "actor": {"type": ["string", "null"], "description": "Who made the change: "
                          "key:<id> for an admin key, the host app's user, user@host for "
                          "the command line."},
                "old": {"type": "object"},
                "new": {"type": "object"},
                "related_key_id": {"type": ["string", "null"], "description": "The other "
                                   "key of a rotation."},
            },
        },
        "AuditList": {
            "type": "object", "required": ["data", "count"], "additionalProperties": False,
            "properties": {"data": {"type": "array", "items": _ref("AuditEntry")},
                           "count": {"type": "integer", "minimum": 0}},
        },
        "Hygiene": {
            "type": "object",
            "required": ["checked_at", "never_expire", "idle", "live_without_allowlist",
                         "due_for_rotation"],
            "additionalProperties": False,
            "description": "Findings over the keys neither revoked nor expired; a key may "
                           "be in several lists.",
            "properties": {
                "checked_at": {"type": "string", "format": "date-time"},
                "never_expire": {"type": "array", "items": _ref("ApiKey")},
                "idle": {"type": "array", "items": _ref("ApiKey"),
                         "description": "Unused for 90 days or more."},
                "live_without_allowlist": {"type": "array", "items": _ref("ApiKey")},
                "due_for_rotation": {"type": "array", "items": _ref("ApiKey")},
            },
        },
        "UsageBucket": {
            "type": "object", "required": ["start"],
            "description": "One hour or day (UTC) from start: a count per outcome.",
            "properties": {"start": {"type": "string", "format": "date-time"}},
            "additionalProperties": {"type": "integer", "minimum": 0},
        },
        "UsageSeries": {
            "type": "object", "additionalProperties": False,
            "required": ["key_id", "bucket", "since", "until", "totals", "distinct_clients",
                         "last_client", "last_user_agent", "last_used_at", "top_paths",
                         "buckets"],
            "description": "One key's requests by outcome, as flushed by the servers.",
            "properties": {
                "key_id": {"type": "string"},
                "bucket": {"type": "string", "enum": ["hour", "day"]},
                "since": {"type": "string", "format": "date-time"},
                "until": {"type": "string", "format": "date-time"},
                "totals": _counts(KEY_OUTCOMES),
                "distinct_clients": {"type": "integer", "minimum": 0},
                "last_client": {"type": ["string", "null"]},
                "last_user_agent": {"type": ["string", "null"]},
                "last_used_at": _NULLABLE_TIME,
                "top_paths": {"type": "array", "items": {
                    "type": "object", "required": ["path", "count"],
                    "additionalProperties": False,
                    "properties": {"path": {"type": "string"},
                                   "count": {"type": "integer", "minimum": 0}}}},
                "buckets": {"type": "array", "items": _ref("UsageBucket")},
            },
        },
        "UsageSummary": {
            "type": "object", "additionalProperties": False,
            "required": ["bucket", "since", "until", "totals", "failures", "keyless",
                         "top_keys", "buckets"],
            "description": "Every key's requests by outcome, the requests that named no "
                           "existing key (keyless: where an attack shows), and the top keys.",
            "properties": {
                "bucket": {"type": "string", "enum": ["hour", "day"]},
                "since": {"type": "string", "format": "date-time"},
                "until": {"type": "string", "format": "date-time"},
                "totals": _counts(OUTCOMES),
                "failures": _counts(FAILURE_OUTCOMES),
                "keyless": _counts(KEYLESS_OUTCOMES),
                "top_keys": {"type": "array", "items": {
                    "type": "object", "additionalProperties": False,
                    "required": ["key_id", "name", "requests", "valid", "failures"],
                    "properties": {
                        "key_id": {"type": "string"},
                        "name": {"type": ["string", "null"]},
                        "requests": {"type": "integer", "minimum": 0},
                        "valid": {"type": "integer", "minimum": 0},
                        "failures": {"type": "integer", "minimum": 0}}}},
                "buckets": {"type": "array", "items": _ref("UsageBucket")},
            },
        },
        "CreateKey": {
            "type": "object", "required": ["name"], "additionalProperties": False,
            "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": 200},
                "mode": {"type": "string", "enum": list(MODES), "default": "live"},
                "scopes": _STRINGS,
                "read_only": {"type": "boolean", "default": False},
                "allowed_paths": _STRINGS,
                "allowed_ips": {**_STRINGS, "description": "IPv4/IPv6 addresses and CIDR "
                                "networks (at most 100)."},
                "expires_at": _NULLABLE_TIME,
                "expires_in": _DURATION,
                "owner": {"type": ["string", "null"]},
                "metadata": {"type": "object"},
                "rate_limits": {**_STRINGS, "description": "LIMIT/PERIOD strings "
                                "(100/minute; at most 10); past one the key gets "
                                "rate_limit_exceeded."},
                "shared_limit": {"type": "boolean", "description": "Count the rate limits "
                                 "per owner (every key of the owner shares them)."},
                "quota": {"type": ["integer", "null"], "minimum": 0, "description":
                          "Requests the key may make; past them it gets quota_exceeded."},
                "quota_refill": {"type": ["string", "null"], "description": "COUNT/PERIOD "
                                 "(1000/day; minute, hour, day, week, month): the quota is "
                                 "set back to COUNT every PERIOD. Alone, it also sets the "
                                 "quota to COUNT."},
            },
        },
        "UpdateKey": {
            "type": "object", "additionalProperties": False, "minProperties": 1,
            "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": 200},
                "scopes": _STRINGS,
                "allowed_ips": {**_STRINGS, "description": "An empty list removes the "
                                "allowlist."},
                "expires_at": {"type": "string", "format": "date-time",
                               "description": "Only earlier than a set expiry (409 "
                                              "otherwise)."},
                "rate_limits": {"type": ["array", "null"], "items": {"type": "string"},
                                "description": "Replaces the rate limits; [] or null removes "
                                               "them."},
                "shared_limit": {"type": "boolean"},
                "quota": {"type": ["integer", "null"], "minimum": 0, "description":
                          "Sets the requests left and starts the refill period now; null "
                          "removes the quota and its refill."},
                "quota_refill": {"type": "string", "description": "COUNT/PERIOD: changes "
                                 "the refill (a key without a quota gets COUNT)."},
            },
        },
        "RotateKey": {
            "type": "object", "additionalProperties": False,
            "properties": {
                "grace": {**_DURATION, "description": "How long the old key keeps working "
                          "(default 0: it ends now)."},
                "expires_at": _NULLABLE_TIME,
                "expires_in": _DURATION,
                "force": {"type": "boolean", "description": "Rotate a key whose successor "
                          "is still usable, cutting its grace short."},
            },
        },
    }
    responses = {
        name: _json(_error(codes), description)
        for name, (_, description, codes) in _ERRORS.items()
    }
    key_path = "/api/keys/{id}"
    usage_query = [
        {"name": "since", "in": "query", "description": "From this time (ISO 8601 with an "
         "offset), or this long ago (7d, 24h); default 24 hours (hour buckets) or 30 days "
         "(day buckets) before until.", "schema": {"type": "string"}},
        {"name": "until", "in": "query", "description": "Up to this time (default now).",
         "schema": {"type": "string", "format": "date-time"}},
        {"name": "bucket", "in": "query", "description": "At most 1200 buckets a range.",
         "schema": {"type": "string", "enum": ["hour", "day"], "default": "hour"}},
    ]
    audit_query = [
        {"name": "since", "in": "query", "description": "Entries at or after this time "
         "(ISO 8601 with an offset; encode + as %2B).",
         "schema": {"type": "string", "format": "date-time"}},
        {"name": "until", "in": "query", "description": "Entries before this time.",
         "schema": {"type": "string", "format": "date-time"}},
        {"name": "limit", "in": "query", "description": "At most this many (default 100).",
         "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}},
    ]
    paths: dict[str, Any] = {
        "/api/openapi.json": {"get": {
            "operationId": "getOpenAPI", "summary": "This document", "security": [],
            "responses": {"200": {"description": "The OpenAPI document.",
                                  "content": {"application/json": {"schema":
                                                                   {"type": "object"}}}}},
        }},
        "/api/keys": {
            "get": {
                "operationId": "listKeys",
                "summary": "List keys",
                "description": "Every key, oldest first, filtered. Revoked keys are listed "
                               "unless a status filter leaves them out.",
                "parameters": [
                    {"name": "status", "in": "query", "description": "Comma-separated: "
                     "active, expiring, expired, revoked, disabled, due_for_rotation.",
                     "schema": {"type": "string"}},
                    {"name": "mode", "in": "query", "schema": {"type": "string",
                                                               "enum": list(MODES)}},
                    {"name": "owner", "in": "query", "schema": {"type": "string"}},
                    {"name": "q", "in": "query", "description": "Text in the id, name, "
                     "owner or hint (case-insensitive).", "schema": {"type": "string"}},
                ],
                "responses": _responses("200", "ApiKeyList", "The keys.", "BadRequest"),
            },
            "post": {
                "operationId": "createKey",
                "summary": "Create a key",
                "description": "The answer is the only place the new key ever appears.",
                "requestBody": _body("CreateKey"),
                "responses": _responses("201", "IssuedKey", "The new key, shown once.",
                                        "BadRequest", "UnsupportedMediaType"),
            },
        },
        key_path: {
            "get": {
                "operationId": "getKey", "summary": "One key", "parameters": [_KEY_ID],
                "responses": _responses("200", "ApiKeyDetail", "The key.", "NotFound"),
            },
            "patch": {
                "operationId": "updateKey",
                "summary": "Change a key's name, scopes, IP allowlist, rate limits, quota "
                           "or expiry",
                "parameters": [_KEY_ID],
                "requestBody": _body("UpdateKey"),
                "responses": _responses("200", "ApiKey", "The key, changed.", "BadRequest",
                                        "NotFound", "Conflict", "UnsupportedMediaType"),
            },
        },
        key_path + "/rotate": {"post": {
            "operationId": "rotateKey",
            "summary": "Replace a key, with a grace period for the old one",
            "parameters": [_KEY_ID],
            "requestBody": _body("RotateKey", required=False),
            "responses": _responses("201", "RotatedKey", "The new key, shown once.",
                                    "BadRequest", "NotFound", "Conflict",
                                    "UnsupportedMediaType"),
        }},
        key_path + "/revoke": _action("revoke", "Revoke a key, at once and for good",
                                      "Revoking twice keeps the first time."),
        key_path + "/disable": _action("disable", "Disable a key (reversible)",
                                       "Requests with it get key_disabled until it is "
                                       "enabled."),
        key_path + "/enable": _action("enable", "Enable a disabled key",
                                      "A revoked key cannot be enabled (409)."),
        key_path + "/audit": {"get": {
            "operationId": "getKeyAudit",
            "summary": "One key's audit log, newest first",
            "description": "A deleted key's entries are kept.",
            "parameters": [_KEY_ID, *audit_query],
            "responses": _responses("200", "AuditList", "The entries.", "BadRequest",
                                    "NotFound"),
        }},
        "/api/audit": {"get": {
            "operationId": "getAudit",
            "summary": "Every key's audit log, newest first",
            "parameters": audit_query,
            "responses": _responses("200", "AuditList", "The entries.", "BadRequest"),
        }},
        key_path + "/usage": {"get": {
            "operationId": "getKeyUsage",
            "summary": "One key's requests by outcome over time",
            "description": "Zero-filled per hour or day (UTC); the last client address and "
                           "user agent; the top paths. Counts are as the servers last "
                           "flushed them.",
            "parameters": [_KEY_ID, *usage_query],
            "responses": _responses("200", "UsageSeries", "The series.", "BadRequest",
                                    "NotFound"),
        }},
        "/api/usage": {"get": {
            "operationId": "getUsage",
            "summary": "Every key's requests by outcome over time, and the top keys",
            "parameters": [*usage_query,
                           {"name": "top", "in": "query", "description": "How many top "
                            "keys (default 10).",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 100,
                                       "default": 10}}],
            "responses": _responses("200", "UsageSummary", "The summary.", "BadRequest"),
        }},
        "/api/hygiene": {"get": {
            "operationId": "getHygiene",
            "summary": "Keys that never expire, idle keys, live keys without an IP "
                       "allowlist, keys due for rotation",
            "responses": _responses("200", "Hygiene", "The findings.", "BadRequest"),
        }},
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "aqnt-auth key console API",
            "version": __version__,
            "description": (
                "Manage API keys. Authenticate with an admin key, `Authorization: Bearer "
                "<key>`: a key with the console's admin scope (aqnt:admin by default) may "
                "change keys, one with its read scope (aqnt:read) may only read. A browser "
                "signed in to the console (or to the host app, through its authorize hook) "
                "may call it too; its changes must be sent as JSON. Paths are relative to "
                "where the console is mounted. Every answer has Cache-Control: no-store."
            ),
        },
        "security": [{"adminKey": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"adminKey": {
                "type": "http", "scheme": "bearer",
                "description": "An API key with the aqnt:admin or aqnt:read scope."}},
            "schemas": schemas,
            "responses": responses,
        },
    }


_DOCUMENT: Final = _build()


def document(root_path: str = "") -> dict[str, Any]:
    """The OpenAPI document, its server the console's mount point *root_path*
    (a copy: callers may change it)."""
    out = copy.deepcopy(_DOCUMENT)
    out["servers"] = [{"url": root_path or "/", "description": "The console's mount point."}]
    return out
