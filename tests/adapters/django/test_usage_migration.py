"""Migration 0008 (usage history, #14) upgrades a database at 0007 in place."""

from __future__ import annotations

import pytest
from django.db import connections
from django.db.migrations.executor import MigrationExecutor

from aqnt_auth import UsageRow
from aqnt_auth.adapters.django.models import APIKeyUsage
from aqnt_auth.adapters.django.store import DjangoKeyStore

from ._support import STORE_ONLY, issue, on_databases

_APP = "aqnt_auth"


def _migrate(alias: str, name: str) -> None:
    executor = MigrationExecutor(connections[alias])
    executor.loader.build_graph()
    executor.migrate([(_APP, name)])


@pytest.mark.parametrize("alias", on_databases(transaction=True, available_apps=STORE_ONLY))
def test_upgrade_from_0007(alias: str) -> None:
    """A database at 0007 (keys in it) gains the usage table; keys are kept,
    history adds up, and unapplying drops the table again."""
    _migrate(alias, "0007_quota_counter")
    table = APIKeyUsage._meta.db_table
    try:
        with connections[alias].cursor() as cursor:
            assert table not in connections[alias].introspection.table_names(cursor)
        issued = issue(alias)
        _migrate(alias, "0008_usage")
        with connections[alias].cursor() as cursor:
            assert table in connections[alias].introspection.table_names(cursor)
        store = DjangoKeyStore(using=alias)
        assert store.get(issued.record.id) == issued.record
        for _ in range(2):
            store.record_usage_history([UsageRow(issued.record.id, 3600, {"valid": 1},
                                                 1, 5, "192.0.2.1", "ua", {"/a": 1})])
        assert store.usage_rows(since=0, until=7200) == [
            UsageRow(issued.record.id, 3600, {"valid": 2}, 1, 5, "192.0.2.1", "ua", {"/a": 2})]
    finally:
        _migrate(alias, "0008_usage")
