"""`datamgr serve` starts probing mDNS before it imports what it serves with (datamgr.launch)."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("grpc", "sqlalchemy", "datamgr.daemon", "rich", "udmf", "aicap", "llama_cpp", "datamgr.cli.share")


def test_the_cli_and_launch_import_none_of_the_heavy_modules() -> None:
    code = f"import sys, datamgr.cli, datamgr.launch; print([m for m in {HEAVY!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_subcommands_still_load_when_named() -> None:
    from click.testing import CliRunner

    from datamgr.cli import main

    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0, result.output
    for name in ("ai", "apps", "devices", "health", "kv", "serve", "share", "udmf"):
        assert f"  {name} " in result.output
    result = CliRunner().invoke(main, ["devices", "--help"])
    assert result.exit_code == 0 and "list" in result.output, result.output
