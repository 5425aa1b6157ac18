"""Dataplane token signing keys rotated and tokens revoked under live proxies: real kuma-cp, kuma-dp
and Envoy on 127.0.0.1.

A proxy connected with a token of key 1 keeps its stream and its traffic when key 2 is added, new
tokens carry kid 2, and removing key 1 (the operator's decision) ends key 1's streams only. A
revoked token loses its stream at once and cannot open another; the same for a zone egress's zone token.
"""
from __future__ import annotations

import base64
import subprocess
from http.server import ThreadingHTTPServer
from pathlib import Path

import jwt
import pytest
import requests

from tests.e2e.harness import Echo, Mesh, serve_in_thread
from tests.support import cp_command, eventually, free_port

pytestmark = pytest.mark.slow


@pytest.fixture
def mesh(tmp_path: Path):
    m = Mesh(tmp_path)
    m.cp.start()
    yield m
    m.close()


def _subscriptions(mesh: Mesh, name: str) -> list[dict]:
    r = requests.get(f"{mesh.cp.url}/meshes/default/dataplanes/{name}/_overview", timeout=5)
    return r.json()["dataplaneInsight"]["subscriptions"] if r.ok else []


def _online(mesh: Mesh, name: str) -> bool:
    return any(not s.get("disconnectTime") for s in _subscriptions(mesh, name))


def _ended(mesh: Mesh, name: str) -> int:
    return sum(1 for s in _subscriptions(mesh, name) if s.get("disconnectTime"))


def _kid(token: Path) -> str:
    return jwt.get_unverified_header(token.read_text())["kid"]


def _backend(mesh: Mesh) -> None:
    app = free_port()
    serve_in_thread(ThreadingHTTPServer(("127.0.0.1", app), Echo))
    mesh.kuma_dp("backend-1", mesh.token("backend-1"), port=free_port(), servicePort=app, service="backend",
                 protocol="http", outPort=free_port(), outService="web")


def _client(mesh: Mesh, name: str, token: Path) -> int:
    """A proxy whose outbound reaches backend; returns that outbound's port once traffic passes."""
    out = free_port()
    mesh.kuma_dp(name, token, port=free_port(), servicePort=free_port(), service=name, protocol="http",
                 outPort=out, outService="backend")
    eventually(lambda: requests.get(f"http://127.0.0.1:{out}/", timeout=2).ok, f"traffic through {name}")
    eventually(lambda: _online(mesh, name), f"{name} online")
    return out


def test_a_new_signing_key_cuts_nobody_off_and_removing_the_old_one_is_the_operators_call(mesh: Mesh) -> None:
    _backend(mesh)
    old_token = mesh.token("web-1")
    assert _kid(old_token) == "1"
    web_out = _client(mesh, "web-1", old_token)

    key = subprocess.run([*cp_command("ctl", "generate", "signing-key")], capture_output=True, text=True, check=True)
    r = requests.put(f"{mesh.cp.url}/meshes/default/secrets/dataplane-token-signing-key-default-2",
                     json={"type": "Secret", "mesh": "default", "name": "dataplane-token-signing-key-default-2",
                           "data": key.stdout.strip()}, timeout=5)
    assert r.status_code == 201, r.text
    new_token = mesh.token("api-1")
    assert _kid(new_token) == "2"
    # a proxy with a key-2 token connects (so the control plane has seen key 2 by now)...
    api_out = _client(mesh, "api-1", new_token)
    # ...and the key-1 proxy kept its stream and its traffic
    assert _ended(mesh, "web-1") == 0 and _online(mesh, "web-1")
    assert requests.get(f"http://127.0.0.1:{web_out}/", timeout=3).ok

    assert requests.delete(f"{mesh.cp.url}/meshes/default/secrets/dataplane-token-signing-key-default-1",
                           timeout=5).status_code == 200
    eventually(lambda: not _online(mesh, "web-1"), "web-1 (token of key 1) disconnected after key 1 was removed")
    assert "there is no signing key with KID 1" in mesh.cp.read_log()
    assert _online(mesh, "api-1") and _ended(mesh, "api-1") == 0
    assert requests.get(f"http://127.0.0.1:{api_out}/", timeout=3).ok


def test_a_revoked_token_loses_its_stream_and_cannot_open_another(mesh: Mesh) -> None:
    _backend(mesh)
    web_token = mesh.token("web-1")
    _client(mesh, "web-1", web_token)
    _client(mesh, "api-1", mesh.token("api-1"))
    jti = jwt.decode(web_token.read_text(), options={"verify_signature": False})["jti"]

    r = requests.put(f"{mesh.cp.url}/meshes/default/secrets/dataplane-token-revocations-default",
                     json={"type": "Secret", "mesh": "default", "name": "dataplane-token-revocations-default",
                           "data": base64.b64encode(jti.encode()).decode()}, timeout=5)
    assert r.status_code == 201, r.text
    eventually(lambda: not _online(mesh, "web-1"), "web-1's stream closed after its token was revoked")
    assert "closed the xDS stream of default.web-1: authentication failed: token is revoked" in mesh.cp.read_log()
    # its health stream too: a revoked proxy reports no more health for its inbounds
    eventually(lambda: "closed the HDS stream of default.web-1: authentication failed: token is revoked"
               in mesh.cp.read_log(), "web-1's HDS stream closed")
    # Envoy reconnects on its own, and is refused each time
    eventually(lambda: "refused xDS stream of default.web-1: authentication failed: token is revoked"
               in mesh.cp.read_log(), "web-1's reconnect refused")
    eventually(lambda: "refused HDS stream of default.web-1" in mesh.cp.read_log(), "web-1's HDS reconnect refused")
    assert not _online(mesh, "web-1")
    assert _online(mesh, "api-1") and _ended(mesh, "api-1") == 0


def test_a_revoked_zone_token_loses_the_egress_its_stream(mesh: Mesh) -> None:
    egress = mesh.tmp / "egress.yaml"
    egress.write_text(f"type: ZoneEgress\nname: egress-2\nnetworking:\n  address: 127.0.0.1\n  port: {free_port()}\n")
    r = requests.post(f"{mesh.cp.url}/tokens/zone", json={"zone": "default", "scope": ["egress"]}, timeout=5)
    assert r.status_code == 200, r.text
    token = r.text
    (mesh.tmp / "zone.token").write_text(token)
    with open(mesh.tmp / "egress-2.log", "ab") as log:
        mesh.procs.append(subprocess.Popen(
            [*cp_command("dp", "run"), "--proxy-type=egress", f"--cp-address=https://127.0.0.1:{mesh.cp_port}",
             f"--ca-cert-file={mesh.tmp / 'cp' / 'kuma-cp.crt'}", f"--dataplane-file={egress}",
             f"--dataplane-token-file={mesh.tmp / 'zone.token'}", f"--work-dir={mesh.tmp / 'egress-run'}",
         "--drain-time=1s"],
            stdout=log, stderr=subprocess.STDOUT))

    def online() -> bool:
        overview = requests.get(f"{mesh.cp.url}/zoneegresses/egress-2/_overview", timeout=5)
        return overview.ok and any(not s.get("disconnectTime")
                                   for s in overview.json()["zoneEgressInsight"]["subscriptions"])
    eventually(online, "egress-2 online")
    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
    r = requests.put(f"{mesh.cp.url}/global-secrets/zone-token-revocations",
                     json={"type": "GlobalSecret", "name": "zone-token-revocations",
                           "data": base64.b64encode(f"{jti}\n".encode()).decode()}, timeout=5)
    assert r.status_code == 201, r.text
    eventually(lambda: not online(), "egress-2's stream closed after its zone token was revoked")
    assert "closed the xDS stream of egress-2: authentication failed: token is revoked" in mesh.cp.read_log()
