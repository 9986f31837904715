"""The README's main command, `scripts/run.sh --once`, runs its whole demo against a real daemon."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.model]


def test_run_script_demo_succeeds(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATAMGR_")}
    env["DATAMGR_DATA_DIR"] = str(tmp_path / "data")
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "run.sh"), "--once"],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "hosting datashare:///com.example.contacts/main/people" in out
    assert '"type": "UPDATE"' in out  # the subscriber saw the committed update
    assert "PERMISSION_DENIED" in out  # the app without the permission was refused
    assert "published datashareproxy://com.example.contacts/weather" in out  # with the provider's token
    assert "aicap.v1.AiService: SERVING" in out  # health --service ai waited for the model
    assert "SmolLM2-135M-Instruct.Q4_1.gguf" in out  # the bundled model is in place
    assert "general.jpeg" in out and "Meet Ada at 10:00" in out  # UDMF: a type look-up, a DATA_HUB read
    assert "a second read is refused: NOT_FOUND" in out  # the drag data was read once
    assert "hosting datashare:///com.example.notes/main/notes" in out  # an indexed table
    assert "384 dims" in out  # datamgr ai embed, with the built-in embedding model
    assert "[1] datashare:///com.example.notes/main/notes row 1" in out  # the grounded answer's citation
    assert "lacks permission com.example.permission.READ_NOTES" in out  # no grounding in unreadable rows
    assert "the daemon stopped cleanly" in out
