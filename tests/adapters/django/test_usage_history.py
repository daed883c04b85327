"""Usage history through Django's middleware and the DRF class (#14): a run
of real requests of every outcome is counted exactly once each (by the
core), with the client and user agent of the valid ones, on SQLite and
PostgreSQL."""

from __future__ import annotations

import io
import json

import pytest
from asgiref.sync import async_to_sync
from django.core.management import call_command
from django.test import AsyncClient, Client
from django.test.utils import override_settings

from aqnt_auth.adapters.django import get_authenticator
from aqnt_auth.adapters.django.store import DjangoKeyStore
from tests.usage_scenario import check, headers, make_run

from ._support import STORE_ONLY, auth_settings, on_databases

# (the path the good key may use, one it may not): through the middleware,
# and through the DRF class (/drf/* is exempt from the middleware there).
ROUTES = {"middleware": ("/v1/whoami", "/v1/charges", None),
          "drf": ("/drf/whoami", "/drf/refunds", "/drf/charges")}


@pytest.mark.parametrize("alias", on_databases(transaction=True))
@pytest.mark.parametrize("front", sorted(ROUTES))
def test_every_outcome_counted_once(alias: str, front: str) -> None:
    allowed, other, scoped = ROUTES[front]
    with override_settings(AQNT_AUTH=auth_settings(DATABASE=alias, RATE_LIMIT=None)):
        store = DjangoKeyStore(using=alias)
        run = make_run(store, allowed, other, scoped)
        client = Client(REMOTE_ADDR="203.0.113.9")
        statuses = [client.get(r.path, headers=headers(r)).status_code for r in run.requests]
        assert statuses == [r.status for r in run.requests]
        assert get_authenticator().flush_usage()
        rows = store.usage_rows(since=0, until=2**40)
    check(run, rows, allowed)
    assert {r.last_client for r in rows if r.key_id == run.good_id} == {"203.0.113.9"}


@pytest.mark.parametrize("alias", on_databases())
def test_async_requests_are_counted_too(alias: str) -> None:
    """Under ASGI the middleware's async path counts the same."""
    with override_settings(AQNT_AUTH=auth_settings(DATABASE=alias, RATE_LIMIT=None)):
        store = DjangoKeyStore(using=alias)
        run = make_run(store, "/v1/async-whoami", "/v1/charges")
        client = AsyncClient(REMOTE_ADDR="203.0.113.9")

        async def send_all() -> list[int]:
            return [(await client.get(r.path, headers=headers(r))).status_code
                    for r in run.requests]

        # async_to_sync runs Django's thread-sensitive calls on this thread,
        # which holds the test's transaction.
        statuses = async_to_sync(send_all)()
        assert statuses == [r.status for r in run.requests]
        assert get_authenticator().flush_usage()
        rows = store.usage_rows(since=0, until=2**40)
    check(run, rows, "/v1/async-whoami")


@pytest.mark.django_db(transaction=True, available_apps=STORE_ONLY)
def test_manage_py_command() -> None:
    """manage.py aqnt_keys usage [ID]: the core CLI's output, on the project's store."""
    with override_settings(AQNT_AUTH=auth_settings(RATE_LIMIT=None)):
        store = DjangoKeyStore()
        run = make_run(store, "/v1/whoami", "/v1/charges")
        client = Client(REMOTE_ADDR="203.0.113.9")
        for r in run.requests:
            client.get(r.path, headers=headers(r))
        assert get_authenticator().flush_usage()
        out = io.StringIO()
        call_command("aqnt_keys", "usage", run.good_id, "--json", stdout=out)
        data = json.loads(out.getvalue())
        assert data["store"] == "Django database 'default'"
        assert (data["totals"]["valid"], data["totals"]["forbidden"]) == (3, 1)
        assert data["last_client"] == "203.0.113.9"
        out = io.StringIO()
        call_command("aqnt_keys", "usage", "--json", stdout=out)
        summary = json.loads(out.getvalue())
    assert summary["keyless"] == {"unknown_key": 1, "malformed": 1, "missing": 1,
                                  "throttled": 0}
    assert summary["failures"]["revoked"] == 1
