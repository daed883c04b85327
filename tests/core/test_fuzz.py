"""A short run of the fuzz harness (fuzz/fuzz_parsers.py) on every test run."""

from __future__ import annotations

import importlib.util
from pathlib import Path

HARNESS = Path(__file__).resolve().parents[2] / "fuzz" / "fuzz_parsers.py"


def test_short_fuzz_run() -> None:
    """Two thousand examples per target: no property violated."""
    spec = importlib.util.spec_from_file_location("fuzz_parsers", HARNESS)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.run_hypothesis(2000)
