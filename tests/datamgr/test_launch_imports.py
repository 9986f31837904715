"""`datamgr serve` starts probing mDNS before it imports what it serves with (datamgr.launch)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HEAVY = ("grpc", "sqlalchemy", "datamgr.daemon", "rich", "udmf", "aicap", "llama_cpp", "datamgr.cli.share")


def test_the_cli_and_launch_import_none_of_the_heavy_modules() -> None:
    code = f"import sys, datamgr.cli, datamgr.launch; print([m for m in {HEAVY!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_loading_the_settings_imports_none_of_the_heavy_modules(tmp_path: Path) -> None:
    """`serve` loads the settings before it probes: their checks (the TCP listener's) stay light too (the
    client SDK's TLS module, imported for one of them, delayed every daemon's probe by about 0.3 s)."""
    code = (
        "import sys; from datamgr.config import load_settings; s = load_settings(); "
        f"print(s.tcp_plaintext, [m for m in {(*HEAVY, 'datamgr.client')!r} if m in sys.modules])"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATAMGR_")}
    env |= {"DATAMGR_DATA_DIR": str(tmp_path), "DATAMGR_TCP": "127.0.0.1:0", "DATAMGR_TCP_PLAINTEXT": "true"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60, env=env
    )
    assert out.stdout.strip() == "True []"


def test_subcommands_still_load_when_named() -> None:
    from click.testing import CliRunner

    from datamgr.cli import main

    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0, result.output
    for name in ("ai", "apps", "devices", "health", "kv", "serve", "share", "udmf"):
        assert f"  {name} " in result.output
    result = CliRunner().invoke(main, ["devices", "--help"])
    assert result.exit_code == 0 and "list" in result.output, result.output
