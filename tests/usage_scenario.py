"""One run of real requests of every outcome, for the usage-history tests of
each adapter (#14): the requests, what each must answer, and the exact
counts the usage history must hold after a flush."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from aqnt_auth import Argon2Hasher, KeyManager, KeyStore, UsageRow
from aqnt_auth._outcomes import NO_KEY
from tests.forged import unknown_id, wrong_secret

#: The user agent every request of the run sends.
AGENT = "usage-run/1.0"


@dataclasses.dataclass(frozen=True)
class Request:
    """One request: its Authorization value (``None``: no header), path,
    the status it must get and the outcome it must be counted as."""

    authorization: str | None
    path: str
    status: int
    outcome: str
    key_id: str


@dataclasses.dataclass(frozen=True)
class Run:
    requests: tuple[Request, ...]
    secrets: tuple[str, ...]  # keys, secrets and hashes that no usage row may hold
    good_id: str

    def expected(self) -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = {}
        for r in self.requests:
            slot = counts.setdefault(r.key_id, {})
            slot[r.outcome] = slot.get(r.outcome, 0) + 1
        return counts


def make_run(store: KeyStore, allowed: str, other: str, scoped: str | None = None) -> Run:
    """Keys in *store* and the requests of the run: *allowed* is a path the
    good key may use (it is limited to it), *other* one it may not; *scoped*,
    a route that requires the scope ``charges:write``, which the good key
    lacks (a route-level refusal after the key authenticated)."""
    keys = KeyManager(store, hasher=Argon2Hasher("cheapest"))
    good = keys.create("good", allowed_paths=[allowed] + ([scoped] if scoped else []))
    revoked = keys.create("revoked")
    keys.revoke(revoked.record.id)
    disabled = keys.create("disabled")
    keys.disable(disabled.record.id)
    gid = good.record.id
    requests = (
        *(Request(f"Bearer {good.key}", allowed, 200, "valid", gid) for _ in range(3)),
        Request(f"Bearer {good.key}", other, 403, "forbidden", gid),
        Request(f"Bearer {wrong_secret(good.key)}", allowed, 401, "invalid_secret", gid),
        Request(f"Bearer {revoked.key}", allowed, 401, "revoked", revoked.record.id),
        Request(f"Bearer {disabled.key}", allowed, 401, "disabled", disabled.record.id),
        Request(f"Bearer {unknown_id(good.key)}", allowed, 401, "unknown_key", NO_KEY),
        Request("Bearer sk_live_not-a-key", allowed, 401, "malformed", NO_KEY),
        Request(None, allowed, 401, "missing", NO_KEY),
        *((Request(f"Bearer {good.key}", scoped, 403, "forbidden", gid),) if scoped else ()),
    )
    stored = [keys.get(i).hash for i in (gid, revoked.record.id, disabled.record.id)]
    secrets = (good.key, revoked.key, disabled.key, good.key[20:52], wrong_secret(good.key),
               *stored)
    return Run(requests, secrets, gid)


def headers(request: Request) -> dict[str, str]:
    sent = {"User-Agent": AGENT}
    if request.authorization is not None:
        sent["Authorization"] = request.authorization
    return sent


def check(run: Run, rows: list[UsageRow], allowed: str) -> None:
    """The rows hold exactly the run's counts, the facts of its valid
    requests, and none of its secrets."""
    now = dt.datetime.now(dt.timezone.utc).timestamp()
    assert {r.hour for r in rows} <= {int(now // 3600 * 3600), int(now // 3600 * 3600) - 3600}
    got: dict[str, dict[str, int]] = {}
    for row in rows:
        slot = got.setdefault(row.key_id, {})
        for outcome, n in row.counts.items():
            slot[outcome] = slot.get(outcome, 0) + n
    assert got == run.expected()
    good = [r for r in rows if r.key_id == run.good_id]
    assert sum(r.paths.get(allowed, 0) for r in good) == 3
    last = max(good, key=lambda r: r.last_at or 0)
    assert last.last_user_agent == AGENT
    assert last.last_client
    assert max(r.clients for r in good) == 1
    text = repr(rows)
    for secret in run.secrets:
        assert secret not in text
    assert "Bearer" not in text


def responses_match(run: Run, statuses: list[Any]) -> None:
    assert [int(s) for s in statuses] == [r.status for r in run.requests]
