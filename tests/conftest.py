"""Shared fixtures. `postgres_url` starts a real, throwaway PostgreSQL server for the session.

Also the `model` marker's guard: a test that loads a GGUF model without the marker fails, so
`-m "not model"` cannot silently keep one."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

MODEL_LOADS = pytest.StashKey[list[bytes]]()  # the model files llama.cpp loaded during a test
PG_DATABASE = "datamgr_test"
PG_START_TIMEOUT_S = 30.0


def _pg_bin_dir() -> Path | None:
    """The newest PostgreSQL server bin dir (Debian layout: /usr/lib/postgresql/<major>/bin)."""
    found = [Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")]
    found = [d for d in found if (d / "pg_ctl").is_file()]
    if not found:
        return None
    return max(found, key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else -1)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A SQLAlchemy URL of an empty database on a PostgreSQL server started for this test session."""
    bindir = _pg_bin_dir()
    if bindir is None:
        pytest.fail(
            "PostgreSQL server binaries (initdb, pg_ctl under /usr/lib/postgresql/*/bin) are missing; "
            "run scripts/test.sh, which installs them",
            pytrace=False,
        )
    # initdb refuses to run as root: the server binaries then run as the postgres user.
    as_user: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            pytest.fail("running as root but runuser is missing; cannot start PostgreSQL as postgres")
        as_user = ["runuser", "-u", "postgres", "--"]

    tmp = Path(tempfile.mkdtemp(prefix="datamgr-pg-"))
    data, log = tmp / "data", tmp / "server.log"
    port = _free_port()
    client = ["-h", "127.0.0.1", "-p", str(port), "-U", "postgres"]

    def pg(tool: str, *args: str, server: bool = False) -> subprocess.CompletedProcess[str]:
        cmd = [*(as_user if server else []), str(bindir / tool), *args]
        return subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=120, check=False)

    def check(what: str, proc: subprocess.CompletedProcess[str]) -> None:
        if proc.returncode != 0:
            details = proc.stdout + proc.stderr
            if log.exists():
                details += "\n--- server log ---\n" + log.read_text(errors="replace")
            pytest.fail(f"{what} failed\n{details}", pytrace=False)

    started = False
    try:
        if as_user:
            shutil.chown(tmp, user="postgres", group="postgres")
        initdb_args = ["-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync"]
        check("initdb", pg("initdb", "-D", str(data), *initdb_args, server=True))
        # -F: no fsync; a throwaway server need not survive power loss.
        options = f"-k {tmp} -h 127.0.0.1 -p {port} -F"
        started = True  # even a failed start may leave a postmaster behind: always try to stop it
        check(
            "pg_ctl start", pg("pg_ctl", "-D", str(data), "-l", str(log), "-o", options, "start", server=True)
        )
        deadline = time.monotonic() + PG_START_TIMEOUT_S
        while (ready := pg("pg_isready", *client)).returncode != 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        check(f"waiting {PG_START_TIMEOUT_S:.0f} s for PostgreSQL on port {port}", ready)
        check("createdb", pg("createdb", *client, PG_DATABASE))
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/{PG_DATABASE}"
    finally:
        if started:
            pg("pg_ctl", "-D", str(data), "-m", "fast", "stop", server=True)
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    """Notes every model file llama.cpp loads while the test (with its fixtures) runs, on any thread.

    `llama_model_load_from_file` is where every GGUF load ends (the runner's and the tokenizer's).
    A test whose modules have not imported llama.cpp cannot load a model through it."""
    llama = sys.modules.get("llama_cpp")
    if llama is None:
        return (yield)
    loads = item.stash.setdefault(MODEL_LOADS, [])
    load = llama.llama_model_load_from_file

    def noting(path: bytes, params: object) -> object:
        loads.append(path)
        return load(path, params)

    llama.llama_model_load_from_file = noting
    try:
        return (yield)
    finally:
        llama.llama_model_load_from_file = load


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, object, object]:
    """Fails the teardown of a test that loaded a model but is not marked `model`."""
    report = yield
    assert isinstance(report, pytest.TestReport)
    loads = item.stash.get(MODEL_LOADS, [])
    if call.when == "teardown" and loads and item.get_closest_marker("model") is None and report.passed:
        report.outcome = "failed"
        report.longrepr = (
            f"{item.nodeid} loaded {b', '.join(loads).decode(errors='replace')} but is not marked `model`: "
            'add @pytest.mark.model (or the module\'s pytestmark), so that -m "not model" leaves it out'
        )
    return report


@pytest.fixture
def model_loads(request: pytest.FixtureRequest) -> list[bytes]:
    """The model files llama.cpp loaded during this test so far (what the `model` guard sees)."""
    return request.node.stash.setdefault(MODEL_LOADS, [])
