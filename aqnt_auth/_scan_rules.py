"""Rules that teach other secret scanners our key format.

Our keys have the ``sk_live_`` / ``sk_test_`` shape that the Stripe rules of
gitleaks and trufflehog look for, so those tools report them as Stripe keys,
and trufflehog's Stripe detector even sends what it matched to Stripe's API
to "verify" it.  :func:`export_rules` writes a gitleaks config, a trufflehog
custom detector and a GitHub secret-scanning custom pattern that name our
keys as ours (``aqnt-auth scan --export-rules FORMAT``).

The regexes are RE2 (Go, GitHub's Hyperscan), so they cannot check the CRC32
checksum: they match the shape (prefix, mode, exactly 50 base62 characters,
no letter or digit after them).  ``aqnt-auth scan`` also checks the checksum.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Final

from ._format import BODY_LENGTH, MODES, validate_prefix

__all__ = ["RULE_FORMATS", "STRIPE_PREFIXES", "export_rules", "key_pattern"]

RULE_FORMATS: Final = ("gitleaks", "trufflehog", "github")
#: The prefixes the Stripe rules of gitleaks and trufflehog match.
STRIPE_PREFIXES: Final = ("sk", "rk")
#: Shannon entropy (bits per character) a match must reach: a generated key
#: has about 5; placeholders such as ``sk_test_xxxx...`` are far below.
MIN_ENTROPY: Final = 3.5

_RULE_ID: Final = "aqnt-auth-api-key"
_ALNUM: Final = "0-9A-Za-z"
# GitHub's own defaults for a custom pattern's surroundings.
_GITHUB_BEFORE: Final = r"\A|[^0-9A-Za-z]"
_GITHUB_AFTER: Final = r"\z|[^0-9A-Za-z]"


def _alternation(prefixes: Sequence[str]) -> str:
    unique = list(dict.fromkeys(validate_prefix(p) for p in prefixes))
    return unique[0] if len(unique) == 1 else "(?:" + "|".join(unique) + ")"


def key_pattern(prefixes: Sequence[str] = ("sk",)) -> str:
    """The RE2/Python regex of a key's shape, for *prefixes* (no anchors)."""
    modes = "|".join(MODES)
    return f"{_alternation(prefixes)}_(?:{modes})_[{_ALNUM}]{{{BODY_LENGTH}}}"


def _secret_pattern(prefixes: Sequence[str]) -> str:
    # Group 1 is the key; what follows it must not be a letter or digit
    # (RE2 has no lookahead, so the character is part of the match).
    return f"({key_pattern(prefixes)})(?:[^{_ALNUM}]|$)"


def _keywords(prefixes: Sequence[str]) -> list[str]:
    return [f"{p}_{m}_" for p in dict.fromkeys(prefixes) for m in MODES]


def _gitleaks(prefixes: Sequence[str]) -> str:
    keywords = ", ".join(f'"{k}"' for k in _keywords(prefixes))
    lines = [
        "# aqnt-auth API keys for gitleaks (aqnt-auth scan --export-rules gitleaks).",
        "# Save as .gitleaks.toml at the repository root, or pass --config.",
        'title = "gitleaks with aqnt-auth keys"',
        "",
        "[extend]",
        "useDefault = true",
        "",
        "[[rules]]",
        f'id = "{_RULE_ID}"',
        'description = "aqnt-auth API key"',
        f"regex = '''{_secret_pattern(prefixes)}'''",
        "secretGroup = 1",
        f"entropy = {MIN_ENTROPY}",
        f"keywords = [{keywords}]",
    ]
    stripe = [p for p in prefixes if p in STRIPE_PREFIXES]
    if stripe:
        lines += [
            "",
            "# The default stripe-access-token rule matches the same keys: let it",
            "# report them once, as aqnt-auth keys, and keep looking for Stripe's own.",
            "[[rules]]",
            'id = "stripe-access-token"',
            "[[rules.allowlists]]",
            'description = "aqnt-auth keys: 50 base62 characters after the mode"',
            f"regexes = ['''^{key_pattern(stripe)}$''']",
        ]
    return "\n".join(lines) + "\n"


def _trufflehog(prefixes: Sequence[str]) -> str:
    lines = [
        "# aqnt-auth API keys: a trufflehog custom detector",
        "# (aqnt-auth scan --export-rules trufflehog).  Use it with the Stripe",
        "# detector off, or trufflehog sends our live keys to Stripe's API:",
        "#   trufflehog git file://. --config=trufflehog.yaml --exclude-detectors=stripe",
        "detectors:",
        f"  - name: {_RULE_ID}",
        "    keywords:",
        *(f"      - {k}" for k in _keywords(prefixes)),
        "    regex:",
        f"      key: '{_secret_pattern(prefixes)}'",
        f"    entropy: {MIN_ENTROPY}",
    ]
    return "\n".join(lines) + "\n"


def _github_fields(prefixes: Sequence[str]) -> dict[str, str]:
    return {
        "name": "aqnt-auth API key",
        "secret_format": key_pattern(prefixes),
        "before_secret": _GITHUB_BEFORE,
        "after_secret": _GITHUB_AFTER,
    }


def _github(prefixes: Sequence[str], as_json: bool) -> str:
    fields = _github_fields(prefixes)
    if as_json:
        return json.dumps(fields, indent=2) + "\n"
    return "\n".join([
        "A GitHub secret scanning custom pattern for aqnt-auth keys.",
        "In the repository's (or organization's) Settings, under Code security (Advanced",
        "Security on newer plans): Secret scanning > Custom patterns > New pattern.",
        "Paste each field (Before and After secret are under More options):",
        "",
        f"  Pattern name:   {fields['name']}",
        f"  Secret format:  {fields['secret_format']}",
        "  More options:",
        f"    Before secret:  {fields['before_secret']}",
        f"    After secret:   {fields['after_secret']}",
        "",
        "Test string: a throw-away key that no store holds, from",
        "  aqnt-auth keys create --test --name pattern-test --store memory://",
        "GitHub cannot check the key's checksum; aqnt-auth scan does.",
    ]) + "\n"


def export_rules(kind: str, prefixes: Sequence[str] = ("sk",), *, as_json: bool = False
                 ) -> str:
    """The rules of *kind* (one of :data:`RULE_FORMATS`) for keys with *prefixes*.

    ``gitleaks``: a ``.gitleaks.toml`` extending the default rules;
    ``trufflehog``: a ``--config`` file with a custom detector; ``github``:
    the fields of a custom pattern, as text or (*as_json*) JSON.
    """
    if not prefixes:
        prefixes = ("sk",)
    if kind == "gitleaks":
        return _gitleaks(prefixes)
    if kind == "trufflehog":
        return _trufflehog(prefixes)
    if kind == "github":
        return _github(prefixes, as_json)
    raise ValueError(f"unknown rule format {kind!r}; one of {', '.join(RULE_FORMATS)}")
