"""MeshTLS through real Envoys: a TLS version floor on a service's inbound, and Permissive vs Strict.

Real kuma-cp, kuma-dp and Envoy. The mesh's CA is provided (made here), so that the test can play a client
outside the mesh with a workload certificate of the mesh: the inbound then accepts its handshake unless
MeshTLS says otherwise. What a user sees: a TLS 1.2-only client is refused once `tlsVersion.min` is TLS13,
mesh traffic keeps flowing, and plaintext gets in only while the inbound is Permissive.
"""
from __future__ import annotations

import base64
import http.client
import socket
import ssl
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from appliance.ca import builtin
from tests.e2e.harness import ALLOW_ALL, Echo, Mesh, serve_in_thread
from tests.support import eventually, free_port

pytestmark = pytest.mark.slow

PROVIDED = {"enabledBackend": "mine", "backends": [{"name": "mine", "type": "provided", "conf": {
    "cert": {"secret": "my-ca-cert"}, "key": {"secret": "my-ca-key"}}}]}


@pytest.fixture
def mesh(tmp_path: Path):
    m = Mesh(tmp_path)
    m.cp.start()
    yield m
    m.close()


def _put(mesh: Mesh, path: str, body: dict) -> None:
    r = requests.put(f"{mesh.cp.url}{path}", json=body)
    assert r.status_code in (200, 201), r.text


def _meshtls(mesh: Mesh, name: str, spec: dict) -> None:
    _put(mesh, f"/meshes/default/meshtlses/{name}", {"type": "MeshTLS", "mesh": "default", "name": name, "spec": spec})


class _Client:
    """A client outside the mesh with a certificate for `web` signed by the mesh CA, straight to an inbound."""

    def __init__(self, directory: Path, ca: tuple[bytes, bytes]) -> None:
        cert, key, _ = builtin.issue_workload_cert(*ca, "default", ["web"], {})
        self.cert, self.key = directory / "client.pem", directory / "client.key"
        self.cert.write_bytes(cert)
        self.key.write_bytes(key)
        self.key.chmod(0o600)
        self.ca = ca[0].decode()

    def get(self, port: int, maximum: ssl.TLSVersion = ssl.TLSVersion.MAXIMUM_SUPPORTED) -> tuple[int, str]:
        """(HTTP status, TLS version negotiated); ssl.SSLError when the handshake fails."""
        context = ssl.create_default_context(cadata=self.ca)
        context.check_hostname = False   # the inbound's identity is a SPIFFE URI, not a host name
        context.maximum_version = maximum
        context.load_cert_chain(self.cert, self.key)
        context.set_alpn_protocols(["kuma"])
        with socket.create_connection(("127.0.0.1", port), timeout=3) as raw:
            with context.wrap_socket(raw) as tls:
                conn = http.client.HTTPConnection("backend")
                conn.sock = tls
                conn.request("GET", "/direct")
                return conn.getresponse().status, tls.version() or ""


def _tls12_refused(client: _Client, port: int) -> bool:
    try:
        client.get(port, ssl.TLSVersion.TLSv1_2)
    except ssl.SSLError:
        return True
    return False


def _plaintext_status(port: int) -> int:
    """The status a plaintext request straight to the inbound gets; 0 when the connection is refused or closed."""
    try:
        return requests.get(f"http://127.0.0.1:{port}/plain", timeout=2).status_code
    except requests.ConnectionError:
        return 0


def _through_mesh(port: int) -> bool:
    return requests.get(f"http://127.0.0.1:{port}/", timeout=2).ok


def test_tls_floor_and_mode_on_an_inbound(mesh: Mesh, tmp_path: Path) -> None:
    backend_app, backend_in, out_http = free_port(), free_port(), free_port()
    serve_in_thread(ThreadingHTTPServer(("127.0.0.1", backend_app), Echo))
    ca = builtin.new_root_ca("default", "mine", 2048)
    for name, pem in (("my-ca-cert", ca[0]), ("my-ca-key", ca[1])):
        _put(mesh, f"/meshes/default/secrets/{name}",
             {"type": "Secret", "mesh": "default", "name": name, "data": base64.b64encode(pem).decode()})
    _put(mesh, "/meshes/default", {"type": "Mesh", "name": "default", "mtls": PROVIDED})
    _put(mesh, "/meshes/default/meshtrafficpermissions/allow-all", ALLOW_ALL)
    mesh.kuma_dp("backend-1", mesh.token("backend-1"), port=backend_in, servicePort=backend_app,
                 service="backend", protocol="http", outPort=free_port(), outService="web")
    mesh.kuma_dp("web-1", mesh.token("web-1"), port=free_port(), servicePort=free_port(), service="web",
                 protocol="http", outPort=out_http, outService="backend")
    eventually(lambda: _through_mesh(out_http), timeout=40)
    client = _Client(tmp_path, ca)

    # Before any MeshTLS: a strict mesh takes TLS 1.2 from a mesh certificate, and refuses plaintext.
    assert client.get(backend_in, ssl.TLSVersion.TLSv1_2) == (200, "TLSv1.2")
    assert _plaintext_status(backend_in) == 0

    # TLS 1.3 at least, for the whole mesh (Kuma stores `max: TLSAuto` beside it).
    _meshtls(mesh, "tls13", {"targetRef": {"kind": "Mesh"}, "rules": [{"default": {"tlsVersion": {"min": "TLS13"}}}]})
    eventually(lambda: _tls12_refused(client, backend_in), "a TLS 1.2-only client is refused")
    assert client.get(backend_in) == (200, "TLSv1.3")
    for _ in range(5):   # the proxies still talk to each other (each outbound carries the same floor)
        assert _through_mesh(out_http)

    # Permissive on the backend's proxy: plaintext gets in beside mTLS, which keeps its floor.
    mode = {"targetRef": {"kind": "Dataplane", "name": "backend-1"}, "rules": [{"default": {"mode": "Permissive"}}]}
    _meshtls(mesh, "mode", mode)
    assert eventually(lambda: _plaintext_status(backend_in), "plaintext is let in") == 200
    assert _tls12_refused(client, backend_in) and client.get(backend_in)[0] == 200
    assert _through_mesh(out_http)

    # Strict again: plaintext is refused, mesh traffic flows.
    mode["rules"][0]["default"]["mode"] = "Strict"
    _meshtls(mesh, "mode", mode)
    eventually(lambda: _plaintext_status(backend_in) == 0, "plaintext is refused again")
    for _ in range(5):
        assert _through_mesh(out_http)
