"""Rules for other secret scanners (``aqnt-auth scan --export-rules``).

gitleaks and trufflehog are Go programs (RE2) and GitHub uses Hyperscan; none
is installable here, so these tests check what can be checked in Python: the
files parse as TOML and YAML with the fields each tool reads, and the
regexes (which use no syntax that RE2 and Python read differently) match
generated keys and not their look-alikes.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from typing import Any

import pytest
import yaml

from aqnt_auth import KeyFormat
from aqnt_auth._scan_rules import MIN_ENTROPY, RULE_FORMATS, export_rules

tomllib = pytest.importorskip("tomllib", reason="tomllib is in Python 3.11 and later")



def shannon(text: str) -> float:
    """Shannon entropy in bits per character, as gitleaks and trufflehog compute it."""
    counts = Counter(text)
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())


def keys(prefixes: tuple[str, ...] = ("sk",), count: int = 50) -> list[str]:
    fmt = KeyFormat(prefixes)
    return [fmt.generate(mode, prefix).raw
            for prefix in prefixes for mode in ("live", "test") for _ in range(count)]


def look_alikes(key: str) -> list[str]:
    head, body = key[:8], key[8:]
    return [
        key[:-1],                       # 49 characters
        key + "A",                      # 51: a longer token
        key + "7",
        head + body[:24],               # a classic Stripe key's length
        head + body + body[:49],        # a new Stripe key's length (99)
        key.replace("_live_", "_prod_").replace("_test_", "_prod_"),
        key.replace("_", "-"),
        "pk" + key[2:],                 # publishable, another prefix
        head + body[:20] + "-" + body[21:],
        "SK" + key[2:],
    ]


def gitleaks_config(prefixes: tuple[str, ...] = ("sk",)) -> dict[str, Any]:
    config: dict[str, Any] = tomllib.loads(export_rules("gitleaks", prefixes))
    return config


def gitleaks_find(rule: dict[str, Any], text: str) -> list[str]:
    """What gitleaks reports for *rule* in *text*: group secretGroup of each
    match whose secret reaches the entropy, if a keyword occurs."""
    if not any(k.lower() in text.lower() for k in rule["keywords"]):
        return []
    group = rule.get("secretGroup", 0)
    found = [m.group(group) for m in re.finditer(rule["regex"], text)]
    return [s for s in found if shannon(s) >= rule.get("entropy", 0)]


class TestGitleaks:
    def test_valid_toml_extending_the_defaults(self) -> None:
        config = gitleaks_config()
        assert config["extend"] == {"useDefault": True}
        ours, stripe = config["rules"]
        assert ours["id"] == "aqnt-auth-api-key"
        assert ours["secretGroup"] == 1
        assert ours["keywords"] == ["sk_live_", "sk_test_"]
        assert stripe["id"] == "stripe-access-token"
        assert "regex" not in stripe  # extends the default rule, does not replace it

    @pytest.mark.parametrize("context", ["{}", 'KEY="{}"', "Bearer {}\n", "x={};", "{}\r\n",
                                         "%20{}&", "`{}`", "\\n{}"])
    def test_finds_generated_keys(self, context: str) -> None:
        (rule, _) = gitleaks_config()["rules"]
        for key in keys():
            assert gitleaks_find(rule, context.format(key)) == [key]

    def test_ignores_look_alikes_and_placeholders(self) -> None:
        (rule, _) = gitleaks_config()["rules"]
        for key in keys(count=10):
            for other in look_alikes(key):
                assert gitleaks_find(rule, f"key = {other}\n") == [], other
        assert gitleaks_find(rule, "sk_test_" + "x" * 50) == []
        assert gitleaks_find(rule, "sk_live_" + "ab12" * 12 + "ab") == []

    def test_generated_keys_clear_the_entropy_bar(self) -> None:
        assert min(shannon(k) for k in keys(count=500)) > MIN_ENTROPY + 0.5

    def test_stripe_rule_allows_our_keys_only(self) -> None:
        """The allowlist added to stripe-access-token matches our keys and no Stripe key."""
        (_, stripe) = gitleaks_config()["rules"]
        (allowlist,) = stripe["allowlists"]
        (pattern,) = allowlist["regexes"]
        for key in keys():
            assert re.search(pattern, key)
            for other in look_alikes(key)[:5]:
                assert not re.search(pattern, other), other

    def test_other_prefixes(self) -> None:
        config = gitleaks_config(("rk", "acme"))
        ours, stripe = config["rules"]
        assert ours["keywords"] == ["rk_live_", "rk_test_", "acme_live_", "acme_test_"]
        for key in keys(("rk", "acme"), count=5):
            assert gitleaks_find(ours, f" {key} ") == [key]
        (pattern,) = stripe["allowlists"][0]["regexes"]
        assert re.search(pattern, keys(("rk",), 1)[0])
        assert not re.search(pattern, keys(("acme",), 1)[0])
        assert len(tomllib.loads(export_rules("gitleaks", ("acme",)))["rules"]) == 1


class TestTrufflehog:
    def test_valid_yaml_custom_detector(self) -> None:
        (detector,) = yaml.safe_load(export_rules("trufflehog"))["detectors"]
        assert detector["name"] == "aqnt-auth-api-key"
        assert detector["keywords"] == ["sk_live_", "sk_test_"]
        assert set(detector["regex"]) == {"key"}
        assert detector["entropy"] == MIN_ENTROPY
        assert "verify" not in detector  # nothing is sent anywhere

    def test_regex(self) -> None:
        (detector,) = yaml.safe_load(export_rules("trufflehog"))["detectors"]
        pattern = detector["regex"]["key"]
        for key in keys():
            # trufflehog reports the first capture group.
            assert [m.group(1) for m in re.finditer(pattern, f"token: {key}\n")] == [key]
            for other in look_alikes(key):
                assert not re.search(pattern, f"token: {other}\n"), other

    def test_says_how_to_keep_the_stripe_verifier_off(self) -> None:
        assert "--exclude-detectors=stripe" in export_rules("trufflehog")


class TestGitHub:
    def _fields(self) -> dict[str, str]:
        data: dict[str, str] = json.loads(export_rules("github", as_json=True))
        return data

    def test_pattern_with_github_surroundings(self) -> None:
        """The secret format, between GitHub's before/after, matches keys, not look-alikes."""
        fields = self._fields()
        # GitHub's \\A and \\z are Python's \\A and \\Z.
        before = fields["before_secret"]
        after = fields["after_secret"].replace(r"\z", r"\Z")
        whole = f"(?:{before})({fields['secret_format']})(?:{after})"
        for key in keys():
            for text in (key, f"x = '{key}'", f"{key}\n"):
                assert [m.group(1) for m in re.finditer(whole, text)] == [key]
            for other in look_alikes(key):
                assert not re.search(whole, other), other

    def test_text_lists_what_to_paste(self) -> None:
        text = export_rules("github")
        fields = self._fields()
        for label, name in (("Pattern name:", "name"), ("Secret format:", "secret_format"),
                            ("Before secret:", "before_secret"),
                            ("After secret:", "after_secret")):
            line = next(line for line in text.splitlines() if label in line)
            assert line.split(label, 1)[1].strip() == fields[name]
        assert "Custom patterns" in text
        assert "--store memory://" in text


@pytest.mark.parametrize("kind", RULE_FORMATS)
def test_cli_export(kind: str, capsys: pytest.CaptureFixture[str]) -> None:
    """aqnt-auth scan --export-rules KIND prints the rules, scans nothing, exits 0."""
    from aqnt_auth._cli import main

    assert main(["scan", "--export-rules", kind, "--prefix", "rk"]) == 0
    out = capsys.readouterr().out
    assert out == export_rules(kind, ("rk",))
    assert "rk_" in out


def test_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown rule format"):
        export_rules("semgrep")
