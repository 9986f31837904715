"""Runs the real daemon as a separate process for integration tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from datamgr.client import AdminClient, AsyncDataShareHelper, DataShareHelper

CONTACTS = "com.example.contacts"
PEOPLE_URI = f"datashare:///{CONTACTS}/main/people"
READ = "com.example.permission.READ_CONTACTS"
WRITE = "com.example.permission.WRITE_CONTACTS"


# Seven people covering every column type, NULLs, case and LIKE wildcards in the data.
PEOPLE: list[dict[str, Any]] = [
    {"id": 1, "name": "Ada", "phone": "555-0101", "age": 36, "score": 9.5, "starred": True, "photo": b"\x00"},
    {"id": 2, "name": "Alan", "phone": None, "age": 41, "score": 7.0, "starred": False, "photo": None},
    {"id": 3, "name": "Grace", "phone": "555-0103", "age": 85, "score": 8.25, "starred": True, "photo": None},
    {
        "id": 4,
        "name": "Linus",
        "phone": "555-0104",
        "age": None,
        "score": None,
        "starred": False,
        "photo": None,
    },
    {
        "id": 5,
        "name": "ada lovelace",
        "phone": "555-0105",
        "age": 36,
        "score": 6.5,
        "starred": False,
        "photo": None,
    },
    {
        "id": 6,
        "name": "Barbara",
        "phone": "555-0106",
        "age": 27,
        "score": 9.0,
        "starred": True,
        "photo": b"\xff",
    },
    {"id": 7, "name": "100%_done", "phone": "x", "age": 50, "score": 1.0, "starred": False, "photo": None},
]


def contacts_manifest(**overrides: Any) -> dict[str, Any]:
    """A provider manifest with one table `people`, as the examples use."""
    manifest: dict[str, Any] = {
        "bundle": CONTACTS,
        "read_permission": READ,
        "write_permission": WRITE,
        "stores": [
            {
                "name": "main",
                "tables": [
                    {
                        "name": "people",
                        "primary_key": "id",
                        "columns": [
                            {"name": "id", "type": "integer"},
                            {"name": "name", "type": "text", "nullable": False},
                            {"name": "phone", "type": "text"},
                            {"name": "age", "type": "integer"},
                            {"name": "score", "type": "real"},
                            {"name": "starred", "type": "boolean", "default": False},
                            {"name": "photo", "type": "blob"},
                        ],
                    }
                ],
            }
        ],
    }
    manifest.update(overrides)
    return manifest


class Daemon:
    """A `datamgr serve` process on a data directory, with helpers to reach it."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None, config: Path | None = None) -> None:
        self.data_dir = data_dir
        self.extra_env = env or {}
        self.config = config
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"{data_dir.name}.log"

    @property
    def socket(self) -> Path:
        return self.data_dir / "datamgr.sock"

    @property
    def address(self) -> str:
        return f"unix:{self.socket}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DATAMGR_")}
        env["DATAMGR_DATA_DIR"] = str(self.data_dir)
        env["DATAMGR_HTTP__LISTEN"] = "127.0.0.1:0"  # daemons side by side: daemon.json's http_port says
        env.update(self.extra_env)
        return env

    def start(self, wait: bool = True, service: str = "") -> Daemon:
        """Starts the daemon; with `wait`, returns once it (or the named service) is SERVING."""
        cmd = [sys.executable, "-m", "datamgr", "serve"]
        if self.config is not None:
            cmd += ["--config", str(self.config)]
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(cmd, env=self.env(), stdout=log, stderr=subprocess.STDOUT)
        log.close()
        if wait:
            self.wait_healthy(service=service)
        return self

    def wait_healthy(self, timeout: float = 30.0, service: str = "") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.proc.returncode}:\n{self.log()}")
            if self.socket.exists():
                try:
                    with grpc.insecure_channel(self.address) as ch:
                        resp = health_pb2_grpc.HealthStub(ch).Check(
                            health_pb2.HealthCheckRequest(service=service), timeout=1
                        )
                    if resp.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
            time.sleep(0.05)
        raise TimeoutError(f"daemon not healthy after {timeout}s:\n{self.log()}")

    def endpoint(self) -> dict[str, Any]:
        return json.loads((self.data_dir / "daemon.json").read_text())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self.proc = None
        return code

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)
        self.proc = None

    def admin(self) -> AdminClient:
        return AdminClient(self.address, token_path=self.data_dir / "admin.token")

    def add_app(self, bundle: str, *permissions: str) -> str:
        """Registers an app (with permissions) and returns its token."""
        with self.admin() as admin:
            _, token = admin.add_app(bundle)
            if permissions:
                admin.grant(bundle, list(permissions))
        return token

    def helper(self, token: str) -> DataShareHelper:
        return DataShareHelper.connect(self.address, token)

    def async_helper(self, token: str) -> AsyncDataShareHelper:
        return AsyncDataShareHelper.connect(self.address, token)
