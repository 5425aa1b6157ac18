"""The HTTPS API (apiServer.https, :5682) of a real `kuma-cp run`, with curl and kumactl."""
from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests.support import ROOT, CpProcess, cp_command
from tests.tls_certs import client_ca, client_cert

pytestmark = pytest.mark.slow


def _curl(url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", "--max-time", "10", *args, url], capture_output=True, text=True)


def _kumactl(home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(cp_command("ctl", "--config-file", str(home / "kumactl.config"), *args),
                          capture_output=True, text=True, timeout=30, cwd=ROOT,
                          env={**os.environ, "HOME": str(home), "PYTHONPATH": str(ROOT)})


def test_https_api_with_the_generated_certificate_for_curl_and_kumactl(tmp_path: Path) -> None:
    (tmp_path / "cp").mkdir()
    cp = CpProcess(tmp_path / "cp").start()
    try:
        ca = tmp_path / "cp" / "kuma-cp.crt"
        assert stat.S_IMODE((tmp_path / "cp" / "kuma-cp.key").stat().st_mode) == 0o600
        url = f"https://localhost:{cp.https_port}"
        r = _curl(url + "/", "--cacert", str(ca))
        assert r.returncode == 0 and '"product":"Kuma"' in r.stdout, r.stderr
        assert _curl(url + "/").returncode == 60   # an unknown CA is refused, as it should be
        home = tmp_path / "home"
        home.mkdir()
        add = _kumactl(home, "config", "control-planes", "add", "--name", "cp", "--address", url,
                       "--ca-cert-file", str(ca))
        assert add.returncode == 0, add.stderr
        meshes = _kumactl(home, "get", "meshes")
        assert meshes.returncode == 0 and meshes.stdout.splitlines()[1].startswith("default "), meshes.stderr
    finally:
        assert cp.stop() == 0


def test_https_api_requires_a_client_certificate_when_configured(tmp_path: Path) -> None:
    ca, ca_key = client_ca(tmp_path)
    (tmp_path / "cp").mkdir()
    cp = CpProcess(tmp_path / "cp", env={"KUMA_API_SERVER_HTTPS_REQUIRE_CLIENT_CERT": "true",
                                         "KUMA_API_SERVER_HTTPS_TLS_CA_FILE": str(ca)}).start()
    try:
        url = f"https://localhost:{cp.https_port}/"
        server_ca = str(tmp_path / "cp" / "kuma-cp.crt")
        assert _curl(url, "--cacert", server_ca).returncode != 0
        cert, key = client_cert(tmp_path, ca, ca_key)
        r = _curl(url, "--cacert", server_ca, "--cert", str(cert), "--key", str(key))
        assert r.returncode == 0 and '"product":"Kuma"' in r.stdout, r.stderr
    finally:
        assert cp.stop() == 0


def test_https_api_from_a_users_certificate_files(tmp_path: Path) -> None:
    # any PEM pair will do: a second control plane's generated certificate, given as files
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = CpProcess(tmp_path / "a").start()
    first.stop()
    cp = CpProcess(tmp_path / "b", env={"KUMA_GENERAL_TLS_CERT_FILE": str(tmp_path / "a" / "kuma-cp.crt"),
                                        "KUMA_GENERAL_TLS_KEY_FILE": str(tmp_path / "a" / "kuma-cp.key")}).start()
    try:
        r = _curl(f"https://localhost:{cp.https_port}/", "--cacert", str(tmp_path / "a" / "kuma-cp.crt"))
        assert r.returncode == 0, r.stderr
        assert not (tmp_path / "b" / "kuma-cp.crt").exists()   # general.tls* serves the DP server too
    finally:
        assert cp.stop() == 0
