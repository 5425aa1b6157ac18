"""The Envoy supervisor with stand-in programs: exit codes, and an Envoy that ignores SIGTERM."""
from __future__ import annotations

import os
import signal
import stat
import threading
import time
from pathlib import Path

import pytest

from appliance.dp import supervisor
from appliance.dp.cli import _token
from appliance.dp.config import DpConfig, DpError
from appliance.dp.resource import Identity
from appliance.dp.supervisor import Supervisor, exit_code

TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJOYW1lIjoid2ViLTEifQ.c2ln"


def _script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "fake-envoy"
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_exit_code_is_envoys(tmp_path: Path) -> None:
    assert Supervisor([_script(tmp_path, "exit 3")], None, drain_time=1).run() == 3
    assert (exit_code(0), exit_code(1), exit_code(-signal.SIGKILL)) == (0, 1, 137)


def test_an_envoy_that_ignores_sigterm_is_killed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervisor, "KILL_DELAY", 0.2)
    envoy = _script(tmp_path, 'trap "" TERM; exec sleep 30')
    # No admin API to fail health checks on: nothing to drain, so SIGTERM goes to Envoy at once.
    threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM)).start()
    start = time.monotonic()
    assert Supervisor([envoy], None, drain_time=30).run() == 128 + signal.SIGKILL
    assert time.monotonic() - start < 3


def test_a_program_that_cannot_start_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DpError, match="could not start Envoy .*nothing"):
        Supervisor([str(tmp_path / "nothing")], None, drain_time=1).run()


def test_inline_token_is_written_to_the_work_dir(tmp_path: Path) -> None:
    token, path = _token(DpConfig(token=f" {TOKEN}\n"), Identity("web-1", "default", None), tmp_path)
    assert (token, path) == (TOKEN, str(tmp_path / "web-1"))
    assert Path(path).read_text() == TOKEN and stat.S_IMODE(Path(path).stat().st_mode) == 0o600
    (tmp_path / "t").write_text(TOKEN)
    assert _token(DpConfig(token_file=str(tmp_path / "t")), Identity("web-1", "default", None), tmp_path) == (
        TOKEN, str(tmp_path / "t"))
    with pytest.raises(DpError, match="cannot read --dataplane-token-file /nonexistent"):
        _token(DpConfig(token_file="/nonexistent"), Identity("web-1", "default", None), tmp_path)
