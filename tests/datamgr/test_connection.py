"""The SDK base (`datamgr.connection`) without a daemon: no SDK loads SQLAlchemy or server code, the
error rule of `datamgr.errors` holds for every status in all three SDKs, and the CLI prints any SDK's
error one way."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
from click.testing import CliRunner

import aicap.client
import aicap.errors
import udmf._rpc
import udmf.errors
from datamgr import connection, errors
from datamgr.cli import main

# Loaded by a client means the SDK pulled in the ORM, the daemon or the engine.
SERVER_SIDE = (
    "sqlalchemy",
    "datamgr.storage",
    "datamgr.daemon",
    "udmf.store",
    "udmf.service",
    "aicap.engine",
)
MAKE_A_CLIENT = {
    "datamgr": "from datamgr.client import DataShareHelper, KvStoreClient; "
    "DataShareHelper.connect(); KvStoreClient.connect()",
    "udmf": "from udmf import UdmfClient; UdmfClient.connect()",
    "aicap": "from aicap import AiClient; AiClient.connect()",
}
SDKS = [
    pytest.param(connection.DATAMGR, errors, id="datamgr"),
    pytest.param(udmf._rpc.ERRORS, udmf.errors, id="udmf"),
    pytest.param(aicap.client.ERRORS, aicap.errors, id="aicap"),
]


@pytest.mark.parametrize("sdk", sorted(MAKE_A_CLIENT))
def test_importing_an_sdk_and_making_a_client_loads_no_orm(sdk: str, tmp_path: Path) -> None:
    """In a fresh interpreter, with the socket found through the settings (no DATAMGR_ADDRESS)."""
    code = (
        f"import sys; {MAKE_A_CLIENT[sdk]}; print([m for m in sys.modules if m.startswith({SERVER_SIDE!r})])"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATAMGR_")}
    env |= {"DATAMGR_DATA_DIR": str(tmp_path), "DATAMGR_TOKEN": "dmapp_x"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60, env=env
    )
    assert out.stdout.strip() == "[]"


class _Failed(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return f"it failed with {self._code.name}"


@pytest.mark.parametrize(("sdk", "package"), SDKS)
def test_every_status_raises_the_packages_class_which_is_also_the_shared_one(
    sdk: connection.ErrorClasses[errors.DatamgrError], package: Any
) -> None:
    root = sdk.root
    assert issubclass(root, errors.DatamgrError) and root.__module__ == package.__name__
    for code, shared in errors.BY_CODE.items():
        error = sdk.from_rpc(_Failed(grpc.StatusCode[code]))
        assert isinstance(error, shared) and isinstance(error, root)
        assert type(error).__module__ == package.__name__
        assert (error.code, error.message) == (code, f"it failed with {code}")
    for code in ("UNKNOWN", "INTERNAL", "DATA_LOSS"):  # no class: the package's root with the code
        error = sdk.from_rpc(_Failed(grpc.StatusCode[code]))
        assert type(error) is root and error.code == code


@pytest.mark.parametrize(("sdk", "package"), SDKS)
def test_the_connections_own_errors_are_the_sdks_classes(
    sdk: connection.ErrorClasses[errors.DatamgrError], package: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATAMGR_TOKEN", raising=False)
    monkeypatch.delenv("DATAMGR_TLS_FINGERPRINT", raising=False)
    with pytest.raises(package.Unauthenticated, match="DATAMGR_TOKEN"):
        connection.resolve_token(None, sdk)
    with pytest.raises(package.InvalidArgument, match="tls_fingerprint"):
        connection.open_channel("192.0.2.1:5000", None, sdk)
    with pytest.raises(package.InvalidArgument, match="not a certificate fingerprint"):
        connection.open_channel("192.0.2.1:5000", "sha256:12", sdk)


@pytest.mark.parametrize(
    "command",
    [
        ["share", "insert", "datashare:///com.example.a/main/t", '{"x": 1}'],
        ["kv", "stores"],
        ["udmf", "list"],
        ["ai", "models"],
    ],
    ids=lambda c: c[0],
)
def test_the_cli_prints_any_sdks_error_one_way(command: list[str], tmp_path: Path) -> None:
    address = f"unix:{tmp_path / 'nobody.sock'}"
    result = CliRunner().invoke(main, [*command, "--address", address, "--token", "dmapp_x"])
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("error: UNAVAILABLE: "), result.stderr
    assert "Traceback" not in result.stderr
