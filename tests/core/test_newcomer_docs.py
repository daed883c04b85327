"""What a newcomer copies from the README works, and names one store."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

import pytest

from aqnt_auth import DEFAULT_STORE_URL

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.DOTALL)


def test_readme_names_one_sqlite_store() -> None:
    """Every SQLite URL in the README is the default file (or a path to it)."""
    urls = re.findall(r"sqlite(?:\+\w+)?:///[^\s`\"')]+", README)
    assert urls
    default_file = DEFAULT_STORE_URL.rsplit("/", 1)[1]
    for url in urls:
        assert url.rstrip(".,:").endswith(default_file), url
    assert f"default `{DEFAULT_STORE_URL}`" in README


def test_gitignore_lists_the_default_and_demo_databases() -> None:
    """The default store, which the demo uses, and its WAL files are never committed."""
    from aqnt_auth.adapters._demo import DEMO_STORE_URL

    patterns = [line.strip() for line in (ROOT / ".gitignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for url in (DEFAULT_STORE_URL, DEMO_STORE_URL):
        name = url.rsplit("/", 1)[1]
        for file in (name, f"{name}-wal", f"{name}-shm"):
            assert any(fnmatch.fnmatch(file, p) for p in patterns), file


def test_flask_snippet_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Flask quick start defines what it uses (its blueprint) and protects its routes."""
    pytest.importorskip("flask")
    (snippet,) = [block for block in code_blocks("python") if "AQNTAuth()" in block]
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "readme_app"}
    exec(compile(snippet, "README.md", "exec"), namespace)  # noqa: S102 - our own README
    create_app = namespace["create_app"]
    assert callable(create_app)
    app = create_app()
    rules = {rule.rule for rule in app.url_map.iter_rules()}
    assert {"/v1/refunds", "/status"} <= rules
    client = app.test_client()
    assert client.post("/v1/refunds").status_code == 401
    assert client.get("/status").status_code == 200
    assert (tmp_path / "aqnt_keys.db").is_file()


def test_fastapi_extra_and_its_server() -> None:
    """[fastapi] brings no server: the README says so and names one to install."""
    tomllib = pytest.importorskip("tomllib")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    servers = ("uvicorn", "hypercorn", "daphne", "granian")
    assert not any(dep.startswith(servers) for dep in extras["fastapi"])
    assert any(dep.startswith("uvicorn") for dep in extras["demo"])
    assert "`[fastapi]` brings no server: `pip install uvicorn`" in README


def test_readme_documents_the_scanner_collision() -> None:
    for needle in ("--export-rules gitleaks", "--export-rules trufflehog",
                   "--export-rules github", "stripe-access-token", "[[rules.allowlists]]",
                   "--exclude-detectors=stripe", "api.stripe.com"):
        assert needle in README, needle
