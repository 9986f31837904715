"""`datamgr health --service NAME` checks (and with --wait, waits for) one service: `--service ai` is
SERVING once the default model is loaded, so a script can wait for the AI capability (issue 10,
point 11)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from harness import Daemon

from datamgr.cli import HEALTH_SERVICES
from datamgr.daemon import AI_SERVICE, SERVICES

pytestmark = [pytest.mark.integration, pytest.mark.model]


def health(d: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "datamgr", "health", "--address", d.address, *args]
    return subprocess.run(cmd, env=d.env(), capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """Started without waiting: the first test waits for it through the CLI."""
    d = Daemon(tmp_path_factory.mktemp("health") / "data", env={"DATAMGR_AI__N_CTX": "256"})
    d.start(wait=False)
    yield d
    d.stop()


def test_health_waits_for_the_ai_service(daemon: Daemon) -> None:
    waited = health(daemon, "--service", "ai", "--wait", "240")
    assert waited.returncode == 0, waited.stdout + waited.stderr
    assert f"{AI_SERVICE}: SERVING" in waited.stdout


def test_every_short_name_is_a_service_of_the_daemon(daemon: Daemon) -> None:
    assert set(HEALTH_SERVICES.values()) == {*SERVICES, AI_SERVICE}
    for name, full in HEALTH_SERVICES.items():
        checked = health(daemon, "--service", name, "--wait", "60")
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert f"{full}: SERVING" in checked.stdout
    whole = health(daemon)
    assert whole.returncode == 0 and whole.stdout.strip().endswith(": SERVING"), whole.stdout


def test_a_service_the_daemon_does_not_serve(daemon: Daemon) -> None:
    checked = health(daemon, "--service", "nope.v1.Nothing")
    assert checked.returncode == 1
    assert "nope.v1.Nothing is not served by this daemon (NOT_FOUND)" in checked.stdout
