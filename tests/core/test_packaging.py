"""Packaging: the wheel's contents, and what an install makes importable."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out),
         str(ROOT)],
        check=True, capture_output=True,
    )
    (found,) = out.glob("aqnt_auth-*.whl")
    return found


def test_wheel_file_list(wheel: Path) -> None:
    """Adapters ship as aqnt_auth/adapters; no top-level adapters package."""
    names = zipfile.ZipFile(wheel).namelist()
    assert "aqnt_auth/__init__.py" in names
    assert "aqnt_auth/py.typed" in names
    assert "aqnt_auth/adapters/__init__.py" in names
    assert "aqnt_auth/_stores/_sqlite.py" in names
    assert not any(n.startswith("adapters/") for n in names)
    tops = {n.split("/")[0] for n in names}
    assert tops == {"aqnt_auth", next(t for t in tops if t.endswith(".dist-info"))}
    # Every adapter module in the source tree made it into the wheel.
    for source in (ROOT / "adapters").rglob("*.py"):
        rel = source.relative_to(ROOT / "adapters").as_posix()
        assert f"aqnt_auth/adapters/{rel}" in names, rel
    # The Django admin's templates are package data.
    for template in (ROOT / "adapters" / "django" / "templates").rglob("*.html"):
        rel = template.relative_to(ROOT / "adapters").as_posix()
        assert f"aqnt_auth/adapters/{rel}" in names, rel
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "aqnt-auth = aqnt_auth._cli:main" in zipfile.ZipFile(wheel).read(
        entry_points).decode()


def test_installed_wheel_imports(wheel: Path, tmp_path: Path) -> None:
    """`pip install .` gives aqnt_auth.adapters and no importable `adapters`."""
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         "--target", str(target), str(wheel)],
        check=True, capture_output=True,
    )
    code = (
        "import importlib.util, aqnt_auth.adapters, aqnt_auth;"
        f"assert aqnt_auth.__file__.startswith({str(target)!r}), aqnt_auth.__file__;"
        "assert importlib.util.find_spec('adapters') is None"
    )
    subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, "
                    f"{str(target)!r}); {code}"], check=True, cwd=tmp_path)


def test_editable_install_imports(tmp_path: Path) -> None:
    """The development install (pip install -e .) behaves the same, outside the tree."""
    code = (
        "import importlib.util, aqnt_auth.adapters;"
        "assert importlib.util.find_spec('adapters') is None"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)
