"""AuthenticatorOptions stays in step with Authenticator's signature."""

from __future__ import annotations

import inspect

from aqnt_auth import Authenticator, AuthenticatorOptions


def test_options_match_the_signature() -> None:
    """Every keyword-only option of Authenticator is in the TypedDict, and no other."""
    parameters = inspect.signature(Authenticator.__init__).parameters
    keyword_only = {n for n, p in parameters.items() if p.kind is p.KEYWORD_ONLY}
    assert keyword_only == set(AuthenticatorOptions.__annotations__)
