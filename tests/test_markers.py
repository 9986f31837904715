"""The markers that make `pytest -m "not integration and not model"` a fast inner loop hold.

Every test under tests/integration is `integration` (its conftest marks them by path), and the guard
in tests/conftest.py sees the loads that make a test need the `model` marker.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from aicap.engine.model_runner import default_model_path
from aicap.engine.tokenizer import Tokenizer

ROOT = Path(__file__).parent.parent


@pytest.mark.slow
def test_every_test_under_tests_integration_is_marked_integration() -> None:
    """Collected in a fresh process, as a user runs it: `-m "not integration"` leaves none of them."""
    args = ["--collect-only", "-q", "-p", "no:cacheprovider", "-m", "not integration", "tests/integration"]
    out = subprocess.run(
        [sys.executable, "-m", "pytest", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 5, out.stdout + out.stderr  # 5: no test left
    assert [line for line in out.stdout.splitlines() if "::" in line] == []
    deselected = int(out.stdout.rsplit("(", 1)[1].split()[0])
    assert deselected >= len(list((ROOT / "tests" / "integration").glob("test_*.py")))


@pytest.mark.model
def test_the_model_guard_sees_a_gguf_load(model_loads: list[bytes]) -> None:
    assert model_loads == []
    Tokenizer(default_model_path()).close()
    assert model_loads == [str(default_model_path()).encode()]
