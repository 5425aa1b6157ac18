"""Fuzz the live API with schemathesis, driven by Kuma 2.14's OpenAPI document: never a 5xx."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import CpProcess, kuma_reference

pytestmark = pytest.mark.slow


def test_no_server_error_on_any_generated_request(tmp_path: Path) -> None:
    cli = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert cli, "schemathesis is a dev dependency (pip install -e '.[dev]')"
    cp = CpProcess(tmp_path).start()
    try:
        out = subprocess.run(
            [cli, "run", str(kuma_reference("openapi.yaml")), "--url", cp.url, "--checks", "not_a_server_error",
             "--max-examples", "3", "--phases", "examples,coverage,fuzzing", "--generation-deterministic",
             "--max-time", "90", "--warnings", "off"],
            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    finally:
        cp.stop()
    summary = out.stdout[-3000:] + out.stderr[-2000:]
    assert out.returncode == 0, summary
    assert "passed" in summary
    assert "Traceback" not in cp.read_log(), cp.read_log()[-3000:]
