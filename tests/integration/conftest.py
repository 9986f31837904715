"""Fixtures that start real daemon processes; every test here is marked `integration`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from harness import CONTACTS, READ, WRITE, Daemon, contacts_manifest

HERE = Path(__file__).parent


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Marks every test under tests/integration `integration`, so a new file cannot miss the mark.

    (A `pytestmark` in a conftest marks nothing; this hook sees the whole session's items.)"""
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    """A fresh daemon on SQLite in a temporary data directory."""
    d = Daemon(tmp_path / "data").start()
    yield d
    d.stop()


@dataclass
class Contacts:
    """A daemon with the contacts provider registered and a permitted consumer (dialer) and an outsider."""

    daemon: Daemon
    provider: str
    dialer: str
    outsider: str


@pytest.fixture
def contacts(daemon: Daemon) -> Contacts:
    provider = daemon.add_app(CONTACTS)
    dialer = daemon.add_app("com.example.dialer", READ, WRITE)
    outsider = daemon.add_app("com.example.game")
    with daemon.helper(provider) as h:
        h.register_provider(contacts_manifest())
    return Contacts(daemon, provider, dialer, outsider)
