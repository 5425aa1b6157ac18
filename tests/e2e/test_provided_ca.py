"""A provided CA end to end, and a mesh whose CA cannot be used failing closed, through real Envoys.

The CA is made with openssl as a user would, its certificate and key stored as Secrets. Until they exist
(the Mesh was written with `skipValidation`, as Kuma allows), the caller gets no answer at all: no
plaintext outbound, no inbound. Once they do, traffic is mTLS signed by that CA and
MeshTrafficPermission decides.
"""
from __future__ import annotations

import base64
import http.client
import socket
import ssl
import subprocess
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from cryptography import x509

from appliance.ca import builtin
from tests.e2e.harness import ALLOW_ALL, Echo, Mesh, running_mesh, serve_in_thread
from tests.support import eventually, free_port

pytestmark = pytest.mark.slow

PROVIDED = {"enabledBackend": "mine", "backends": [{"name": "mine", "type": "provided", "conf": {
    "cert": {"secret": "my-ca-cert"}, "key": {"secret": "my-ca-key"}}}]}


def _openssl_ca(directory: Path) -> tuple[bytes, bytes]:
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=my-ca",
                    "-keyout", str(directory / "ca.key"), "-out", str(directory / "ca.pem"),
                    "-addext", "basicConstraints=critical,CA:TRUE",
                    "-addext", "keyUsage=critical,keyCertSign,cRLSign"], check=True, capture_output=True)
    return (directory / "ca.pem").read_bytes(), (directory / "ca.key").read_bytes()


def _refused(port: int) -> bool:
    try:
        requests.get(f"http://127.0.0.1:{port}/", timeout=2)
    except requests.ConnectionError:
        return True
    return False


def _as_web(directory: Path, ca: tuple[bytes, bytes], port: int, signer: tuple[bytes, bytes] | None = None) -> int:
    """A request straight to the backend's inbound with a certificate for `web` signed by `signer` (default
    `ca`), checking that the inbound's own certificate chains to `ca`: the status it answers."""
    cert, key, _ = builtin.issue_workload_cert(*(signer or ca), "default", ["web"], {})
    (directory / "web.pem").write_bytes(cert)
    (directory / "web.key").write_bytes(key)
    (directory / "web.key").chmod(0o600)
    context = ssl.create_default_context(cadata=ca[0].decode())
    context.check_hostname = False   # the inbound's identity is a SPIFFE URI, not a host name
    context.load_cert_chain(directory / "web.pem", directory / "web.key")
    context.set_alpn_protocols(["kuma"])
    with socket.create_connection(("127.0.0.1", port), timeout=3) as raw:
        with context.wrap_socket(raw) as tls:
            conn = http.client.HTTPConnection("backend")
            conn.sock = tls
            conn.request("GET", "/direct")
            return conn.getresponse().status


@pytest.fixture
def mesh(tmp_path: Path):
    yield from running_mesh(tmp_path)


def test_a_provided_ca_fails_closed_until_its_secrets_exist_then_signs_the_mesh(mesh: Mesh, tmp_path: Path) -> None:
    backend_app, backend_in, web_in, out_http = free_port(), free_port(), free_port(), free_port()
    serve_in_thread(ThreadingHTTPServer(("127.0.0.1", backend_app), Echo))
    mesh.kuma_dp("backend-1", mesh.token("backend-1"), port=backend_in, servicePort=backend_app,
                 service="backend", protocol="http", outPort=free_port(), outService="web")
    mesh.kuma_dp("web-1", mesh.token("web-1"), port=web_in, servicePort=free_port(), service="web",
                 protocol="http", outPort=out_http, outService="backend")
    eventually(lambda: requests.get(f"http://127.0.0.1:{out_http}/", timeout=2).ok)

    # Secrets missing: refused with the field named, unless validation is skipped (Kuma's escape hatch) ...
    r = requests.put(f"{mesh.cp.url}/meshes/default", json={"type": "Mesh", "name": "default", "mtls": PROVIDED})
    assert r.status_code == 400 and {p["field"] for p in r.json()["invalid_parameters"]} == {
        "mtls.backends[0].conf.cert", "mtls.backends[0].conf.key"}
    r = requests.put(f"{mesh.cp.url}/meshes/default", json={
        "type": "Mesh", "name": "default", "mtls": {**PROVIDED, "skipValidation": True}})
    assert r.status_code == 200, r.text
    assert any("fails closed" in w for w in r.json()["warnings"])
    # ... and then the mesh fails closed: no plaintext from the caller's outbound, nothing on the inbound
    eventually(lambda: _refused(out_http))
    assert _refused(backend_in)
    assert 'name="my-ca-cert" mesh="default"' in mesh.cp.read_log()
    insight = requests.get(f"{mesh.cp.url}/mesh-insights/default").json()
    assert 'name="my-ca-cert" mesh="default"' in insight["mTLS"]["error"] and insight["mTLS"]["issuedBackends"] == {}

    ca = _openssl_ca(tmp_path)
    for name, pem in (("my-ca-cert", ca[0]), ("my-ca-key", ca[1])):
        r = requests.put(f"{mesh.cp.url}/meshes/default/secrets/{name}", json={
            "type": "Secret", "mesh": "default", "name": name, "data": base64.b64encode(pem).decode()})
        assert r.status_code == 201, r.text
    # mTLS with the provided CA: no permission yet, so Kuma 2.14 denies ...
    eventually(lambda: requests.get(f"http://127.0.0.1:{out_http}/", timeout=2).status_code == 403)
    assert _as_web(tmp_path, ca, backend_in) == 403
    # ... until a MeshTrafficPermission allows; the backend sees the caller's SPIFFE identity
    assert requests.put(f"{mesh.cp.url}/meshes/default/meshtrafficpermissions/allow-all",
                        json=ALLOW_ALL).status_code == 201
    seen = eventually(lambda: (r := requests.get(f"http://127.0.0.1:{out_http}/", timeout=2)).ok and r.json())
    assert "error" not in requests.get(f"{mesh.cp.url}/mesh-insights/default").json()["mTLS"]
    xfcc = {k.lower(): v for k, v in seen["headers"].items()}.get("x-forwarded-client-cert", "")
    assert "URI=spiffe://default/web" in xfcc, seen
    assert eventually(lambda: _as_web(tmp_path, ca, backend_in) == 200)
    # a client certificate from another CA is not let in
    with pytest.raises((ssl.SSLError, ConnectionError)):
        _as_web(tmp_path, ca, backend_in, signer=builtin.new_root_ca("default", "other", 2048))


def _peer_issuer(port: int) -> str:
    """The issuer of the certificate an inbound presents (not verified here: only read)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    context.set_alpn_protocols(["kuma"])
    with socket.create_connection(("127.0.0.1", port), timeout=3) as raw:
        with context.wrap_socket(raw) as tls:
            der = tls.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der).issuer.rfc4514_string()


def _accepts(directory: Path, ca: tuple[bytes, bytes], port: int) -> bool:
    """The inbound takes a client certificate signed by `ca` (it answers HTTP, whatever the status)."""
    try:
        cert, key, _ = builtin.issue_workload_cert(*ca, "default", ["web"], {})
        (directory / "probe.pem").write_bytes(cert)
        (directory / "probe.key").write_bytes(key)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        context.load_cert_chain(directory / "probe.pem", directory / "probe.key")
        context.set_alpn_protocols(["kuma"])
        with socket.create_connection(("127.0.0.1", port), timeout=3) as raw:
            with context.wrap_socket(raw) as tls:
                conn = http.client.HTTPConnection("probe")
                conn.sock = tls
                conn.request("GET", "/probe")
                return conn.getresponse().status > 0
    except (ssl.SSLError, ConnectionError, http.client.HTTPException, OSError):
        return False


class _Loop:
    """Requests through the caller's outbound, one after another, until stopped: how many, which failed."""

    def __init__(self, port: int) -> None:
        self.port, self.sent, self.failed = port, 0, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            # a new connection each time: through TCP proxies, a new mTLS handshake between the proxies each time
            try:
                r = requests.get(f"http://127.0.0.1:{self.port}/loop", timeout=5, headers={"Connection": "close"})
                if r.status_code != 200:
                    self.failed.append(r.status_code)
            except requests.RequestException as e:
                self.failed.append(type(e).__name__)
            self.sent += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def test_ca_rotation_from_builtin_to_provided_and_back_fails_no_request(mesh: Mesh, tmp_path: Path) -> None:
    backend_app, web_app, backend_in, web_in, out_http = free_port(), free_port(), free_port(), free_port(), free_port()
    serve_in_thread(ThreadingHTTPServer(("127.0.0.1", backend_app), Echo))
    serve_in_thread(ThreadingHTTPServer(("127.0.0.1", web_app), Echo))   # so that a probe of web's inbound gets an answer
    builtin_backend = {"name": "ca-1", "type": "builtin"}
    r = requests.put(f"{mesh.cp.url}/meshes/default", json={"type": "Mesh", "name": "default", "mtls": {
        "enabledBackend": "ca-1", "backends": [builtin_backend]}})
    assert r.status_code == 200, r.text
    assert requests.put(f"{mesh.cp.url}/meshes/default/meshtrafficpermissions/allow-all",
                        json=ALLOW_ALL).status_code == 201
    mesh.kuma_dp("backend-1", mesh.token("backend-1"), port=backend_in, servicePort=backend_app,
                 service="backend", protocol="tcp", outPort=free_port(), outService="web")
    mesh.kuma_dp("web-1", mesh.token("web-1"), port=web_in, servicePort=web_app, service="web",
                 protocol="tcp", outPort=out_http, outService="backend")
    eventually(lambda: requests.get(f"http://127.0.0.1:{out_http}/", timeout=2).ok)
    builtin_issuer = _peer_issuer(backend_in)

    ca = _openssl_ca(tmp_path)
    for name, pem in (("my-ca-cert", ca[0]), ("my-ca-key", ca[1])):
        assert requests.put(f"{mesh.cp.url}/meshes/default/secrets/{name}", json={
            "type": "Secret", "mesh": "default", "name": name, "data": base64.b64encode(pem).decode()}).ok

    def mtls(enabled: str, *backends: dict) -> None:
        current = requests.get(f"{mesh.cp.url}/meshes/default").json()
        r = requests.put(f"{mesh.cp.url}/meshes/default", json={**current, "mtls": {
            "enabledBackend": enabled, "backends": list(backends)}})
        assert r.status_code == 200, r.text

    mine = PROVIDED["backends"][0]
    loop = _Loop(out_http)
    try:
        # 1. the provided CA joins: every proxy trusts it before anything is signed with it
        mtls("ca-1", builtin_backend, mine)
        eventually(lambda: _accepts(tmp_path, ca, backend_in) and _accepts(tmp_path, ca, web_in))
        # 2. enabled: every proxy gets a certificate of the provided CA
        mtls("mine", builtin_backend, mine)
        eventually(lambda: _peer_issuer(backend_in) == _peer_issuer(web_in) == "CN=my-ca")
        # 3. and back to the builtin CA, which every proxy still trusts
        mtls("ca-1", builtin_backend, mine)
        eventually(lambda: _peer_issuer(backend_in) == _peer_issuer(web_in) == builtin_issuer)
        # 4. the provided CA leaves: no longer trusted
        mtls("ca-1", builtin_backend)
        eventually(lambda: not _accepts(tmp_path, ca, backend_in) and not _accepts(tmp_path, ca, web_in))
        sent_before = loop.sent
        eventually(lambda: loop.sent > sent_before + 20)
    finally:
        loop.stop()
    assert loop.sent > 100 and loop.failed == [], (loop.sent, loop.failed[:20])
