"""Fixtures of the sync tests: a simulated network in a temporary directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from simnet import SimNet


@pytest.fixture
def net(tmp_path: Path) -> Iterator[SimNet]:
    """A fault-free network (set `net.faults` to add some), closed after the test."""
    n = SimNet(tmp_path, seed=7)
    yield n
    n.close()
