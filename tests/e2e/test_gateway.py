"""Traffic into the mesh through the builtin gateway: a real kuma-cp, a kuma-dp running as a BUILTIN gateway
(`edge`) and a kuma-dp sidecar in front of `backend`, mTLS on. What a user sees: curl through the gateway's
port reaches the backend on the routes of a MeshHTTPRoute (the backend sees the gateway's SPIFFE id), other
paths answer 404, a route change applies without restarting the gateway, MeshTrafficPermission denying
the gateway's service gives 403, and a MeshTimeout for the gateway makes a slow backend answer 504. An HTTPS listener terminates TLS with a certificate from a Secret: the right
SNI gets the backend, another name gets no handshake, and a listener whose Secret is missing is left out (no
NACK) until the Secret is created. `kumactl inspect dataplane` shows the gateway's routes, and a MeshProxyPatch
for the gateway changes what it answers."""
from __future__ import annotations

import base64
import datetime
import socket
import ssl
from pathlib import Path
from typing import Iterator

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.e2e.harness import (
    ALLOW_ALL, MTLS, Mesh, kumactl_for, running_mesh, tcp_exchange, tcp_refused, tcp_version_app, version_app,
)
from tests.support import eventually, free_port

pytestmark = pytest.mark.slow

GATEWAY_DATAPLANE = """type: Dataplane
mesh: default
name: {{ name }}
networking:
  address: 127.0.0.1
  gateway:
    type: BUILTIN
    tags:
      kuma.io/service: edge
"""


DELEGATED_DATAPLANE = """type: Dataplane
mesh: default
name: {{ name }}
networking:
  address: 127.0.0.1
  gateway:
    type: DELEGATED
    tags:
      kuma.io/service: kong
  outbound:
  - port: {{ outPort }}
    tags:
      kuma.io/service: backend
"""


def _certificates(tmp: Path, *hostnames: str) -> tuple[Path, bytes]:
    """A CA (its PEM file, for the client) and a server certificate for `hostnames` signed by it, with its key,
    as one PEM: what a gateway certificate Secret holds."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "shop CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    server = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])]))
              .issuer_name(ca_name).public_key(key.public_key()).serial_number(2)
              .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
              .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in hostnames]), critical=False)
              .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
              .sign(ca_key, hashes.SHA256()))
    ca_file = tmp / "shop-ca.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    pem = server.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return ca_file, pem


def _secret(name: str, pem: bytes) -> dict:
    return {"type": "Secret", "mesh": "default", "name": name, "data": base64.b64encode(pem).decode()}


def _route(prefix: str) -> dict:
    return {"type": "MeshHTTPRoute", "mesh": "default", "name": "edge-to-backend", "spec": {
        "targetRef": {"kind": "MeshGateway", "name": "edge"},
        "to": [{"targetRef": {"kind": "Mesh"}, "rules": [
            {"matches": [{"path": {"type": "PathPrefix", "value": prefix}}],
             "default": {"backendRefs": [{"kind": "MeshService", "name": "backend"}]}}]}]}}


class Edge:
    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh
        self.port, self.tls_port, self.tcp_port, self.tls_tcp_port = free_port(), free_port(), free_port(), free_port()
        self.delegated_port = free_port()
        self.seen: list[dict] = []
        self.gateway = None
        self.ca_file, self.pem = _certificates(mesh.tmp, "shop.example.com", "late.example.com")

    def https(self, sni: str, path: str) -> tuple[int, str]:
        """GET over TLS to the gateway's HTTPS port as `curl --cacert ca.pem --resolve <sni>:...` does:
        the status code and the Strict-Transport-Security header."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        with socket.create_connection(("127.0.0.1", self.tls_port), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname=sni) as tls:
                tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n".encode())
                answer = b""
                while chunk := tls.recv(65536):
                    answer += chunk
        head = answer.split(b"\r\n\r\n", 1)[0].decode().splitlines()
        hsts = next((line.split(":", 1)[1].strip() for line in head
                     if line.lower().startswith("strict-transport-security:")), "")
        return int(head[0].split()[1]), hsts

    def handshake_refused(self, sni: str) -> bool:
        try:
            self.https(sni, "/api")
        except (ssl.SSLError, ConnectionResetError):
            return True
        return False

    def rejected(self) -> int:
        """How many configs the gateway's Envoy refused (NACKs), as its DataplaneInsight says."""
        r = requests.get(f"{self.mesh.cp.url}/meshes/default/dataplanes/edge-1/_overview", timeout=5).json()
        return sum(int(s["status"]["total"].get("responsesRejected", "0"))
                   for s in r["dataplaneInsight"]["subscriptions"])

    def put(self, path: str, body: dict) -> dict:
        r = requests.put(f"{self.mesh.cp.url}/meshes/default/{path}/{body['name']}", json=body, timeout=5)
        assert r.status_code in (200, 201), r.text
        return r.json()

    def get(self, path: str) -> requests.Response:
        return requests.get(f"http://127.0.0.1:{self.port}{path}", timeout=5)

    def status(self, path: str) -> int:
        assert self.gateway is not None and self.gateway.poll() is None, self.mesh.log_tail("edge-1")
        return self.get(path).status_code


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    for mesh in running_mesh(tmp_path_factory.mktemp("gateway")):
        r = requests.put(f"{mesh.cp.url}/meshes/default", json={"type": "Mesh", "name": "default", "mtls": MTLS})
        assert r.status_code == 200, r.text
        edge = Edge(mesh)
        edge.put("meshtrafficpermissions", ALLOW_ALL)
        edge.put("secrets", _secret("shop-cert", edge.pem))
        created = edge.put("meshgateways", {
            "type": "MeshGateway", "mesh": "default", "name": "edge",
            "selectors": [{"match": {"kuma.io/service": "edge"}}],
            "conf": {"listeners": [
                {"port": edge.port, "protocol": "HTTP", "hostname": "*"},
                {"port": edge.tls_port, "protocol": "HTTPS", "hostname": "shop.example.com",
                 "tls": {"mode": "TERMINATE", "certificates": [{"secret": "shop-cert"}]}},
                {"port": edge.tls_port, "protocol": "HTTPS", "hostname": "late.example.com",
                 "tls": {"mode": "TERMINATE", "certificates": [{"secret": "late-cert"}]}},
                {"port": edge.tcp_port, "protocol": "TCP", "resources": {"connectionLimit": 1}},
                {"port": edge.tls_tcp_port, "protocol": "TLS", "hostname": "shop.example.com",
                 "tls": {"mode": "TERMINATE", "certificates": [{"secret": "shop-cert"}]}}]}})
        assert "warnings" not in created, created
        assert "warnings" not in edge.put("meshhttproutes", _route("/api")), "the route applies to the gateway"
        assert "warnings" not in edge.put("meshtcproutes", {
            "type": "MeshTCPRoute", "mesh": "default", "name": "edge-to-echo", "spec": {
                "targetRef": {"kind": "MeshGateway", "name": "edge"},
                "to": [{"targetRef": {"kind": "Mesh"},
                        "rules": [{"default": {"backendRefs": [{"kind": "MeshService", "name": "echo"}]}}]}]}})
        mesh.kuma_dp("echo-1", mesh.token("echo-1"), port=free_port(), servicePort=tcp_version_app("echo"),
                     service="echo", protocol="tcp", outPort=free_port(), outService="nothing")
        mesh.kuma_dp("backend-1", mesh.token("backend-1"), port=free_port(),
                     servicePort=version_app("v1", edge.seen), service="backend", protocol="http",
                     outPort=free_port(), outService="nothing")
        edge.gateway = mesh.kuma_dp("edge-1", mesh.token("edge-1"), template=GATEWAY_DATAPLANE)
        mesh.kuma_dp("kong-1", mesh.token("kong-1"), template=DELEGATED_DATAPLANE, outPort=edge.delegated_port)
        yield edge


def test_a_route_reaches_the_backend_over_mtls_and_other_paths_answer_404(edge: Edge) -> None:
    eventually(lambda: edge.status("/api/items?q=1") == 200, lambda: edge.mesh.log_tail("edge-1"), timeout=60)
    answer = edge.get("/api/items?q=1").json()
    assert answer["path"] == "/api/items?q=1"
    # the backend's sidecar checked the gateway's certificate and says who called: the gateway's SPIFFE id
    assert "URI=spiffe://default/edge" in answer["headers"]["x-forwarded-client-cert"]
    assert edge.status("/api") == 200
    # as Kuma's gateway: responses compressed for clients that accept gzip
    compressed = requests.get(f"http://127.0.0.1:{edge.port}/api/items", headers={"Accept-Encoding": "gzip"}, timeout=5)
    assert compressed.headers.get("content-encoding") == "gzip" and compressed.json()["path"] == "/api/items"
    missed = edge.get("/other")
    assert missed.status_code == 404 and missed.headers["server"] == "Kuma Gateway"
    assert edge.status("/apix") == 404            # a path prefix matches whole segments only


def test_a_route_change_reroutes_without_restarting_the_gateway(edge: Edge) -> None:
    eventually(lambda: edge.status("/api/items") == 200, timeout=60)
    pid = edge.gateway.pid
    edge.put("meshhttproutes", _route("/shop"))
    eventually(lambda: edge.status("/shop/cart") == 200 and edge.status("/api/items") == 404,
               lambda: edge.mesh.log_tail("edge-1"))
    assert edge.gateway.pid == pid and edge.gateway.poll() is None
    edge.put("meshhttproutes", _route("/api"))
    eventually(lambda: edge.status("/api/items") == 200)


def test_a_permission_denying_the_gateway_gives_403(edge: Edge) -> None:
    eventually(lambda: edge.status("/api/items") == 200, timeout=60)
    deny = {"type": "MeshTrafficPermission", "mesh": "default", "name": "no-edge", "spec": {
        "targetRef": {"kind": "MeshService", "name": "backend"},
        "from": [{"targetRef": {"kind": "MeshService", "name": "edge"}, "default": {"action": "Deny"}}]}}
    edge.put("meshtrafficpermissions", deny)
    eventually(lambda: edge.status("/api/items") == 403, lambda: edge.mesh.log_tail("backend-1"))
    assert requests.delete(f"{edge.mesh.cp.url}/meshes/default/meshtrafficpermissions/no-edge", timeout=5).ok
    eventually(lambda: edge.status("/api/items") == 200)


def test_a_gateway_request_timeout_answers_504_from_a_slow_backend(edge: Edge) -> None:
    eventually(lambda: edge.status("/api/items") == 200, timeout=60)
    assert edge.status("/api/slow?delay=2") == 200      # the mesh default: 15 s per request
    timeout = {"type": "MeshTimeout", "mesh": "default", "name": "edge-timeout", "spec": {
        "targetRef": {"kind": "MeshGateway", "name": "edge"},
        "to": [{"targetRef": {"kind": "Mesh"}, "default": {"http": {"requestTimeout": "1s"}}}]}}
    assert "warnings" not in edge.put("meshtimeouts", timeout), "MeshTimeout applies to builtin gateways"
    eventually(lambda: edge.status("/api/slow?delay=2") == 504, lambda: edge.mesh.log_tail("edge-1"))
    assert edge.status("/api/items") == 200
    assert requests.delete(f"{edge.mesh.cp.url}/meshes/default/meshtimeouts/edge-timeout", timeout=5).ok
    eventually(lambda: edge.status("/api/slow?delay=2") == 200)


def test_https_terminates_with_the_secrets_certificate_and_refuses_other_names(edge: Edge) -> None:
    status, hsts = eventually(lambda: edge.https("shop.example.com", "/api/items"), lambda: edge.mesh.log_tail("edge-1"),
                              timeout=60)
    assert status == 200 and hsts == "max-age=31536000; includeSubDomains"
    assert edge.https("shop.example.com", "/other")[0] == 404
    # what the gateway gets, as `kumactl inspect dataplane edge-1 --type=config` shows it: names, never the key
    config = requests.get(f"{edge.mesh.cp.url}/meshes/default/dataplanes/edge-1/_config", timeout=5).text
    assert "cert.ecdsa:secret:shop-cert" in config and "edge:HTTPS:" in config
    key_pem = edge.pem[edge.pem.index(b"-----BEGIN PRIVATE KEY-----"):]
    assert base64.b64encode(key_pem).decode() not in config and key_pem.decode().splitlines()[1] not in config
    assert edge.handshake_refused("other.example.com")
    # the listener whose Secret does not exist yet is left out: no handshake for its name, and no NACK
    assert edge.handshake_refused("late.example.com") and edge.rejected() == 0
    assert "MeshGateway default/edge: listener conf.listeners[2] is not served until its certificate can be used: " \
           "conf.listeners[2].tls.certificates[0]: there is no Secret 'late-cert' in the mesh" in edge.mesh.cp.read_log()
    edge.put("secrets", _secret("late-cert", edge.pem))
    eventually(lambda: not edge.handshake_refused("late.example.com") and edge.https("late.example.com", "/api")[0] == 200)
    assert edge.rejected() == 0


def test_a_tcp_listener_reaches_a_tcp_service_over_mtls_within_its_connection_limit(edge: Edge) -> None:
    eventually(lambda: tcp_exchange(edge.tcp_port, b"hello") == b"echo:hello", lambda: edge.mesh.log_tail("edge-1"),
               timeout=60)

    def held() -> socket.socket | None:
        """A connection that got its echo and stays open (once the previous one is no longer counted)."""
        conn = socket.create_connection(("127.0.0.1", edge.tcp_port), timeout=3)
        conn.sendall(b"one")
        if conn.recv(4096) == b"echo:one":
            return conn
        conn.close()
        return None

    with eventually(held) as first:
        assert tcp_refused(edge.tcp_port)        # connectionLimit: 1, and one is open
        first.sendall(b"two")
        assert first.recv(4096) == b"echo:two"
    eventually(lambda: tcp_exchange(edge.tcp_port, b"again") == b"echo:again")


def test_a_tls_listener_terminates_tls_and_proxies_the_connection(edge: Edge) -> None:
    def exchange() -> bytes:
        context = ssl.create_default_context(cafile=str(edge.ca_file))
        with socket.create_connection(("127.0.0.1", edge.tls_tcp_port), timeout=3) as raw:
            with context.wrap_socket(raw, server_hostname="shop.example.com") as tls:
                tls.sendall(b"secret")
                return tls.recv(4096)

    eventually(lambda: exchange() == b"echo:secret", lambda: edge.mesh.log_tail("edge-1"), timeout=60)


def test_a_delegated_gateway_calls_the_mesh_as_its_own_service(edge: Edge) -> None:
    """A gateway of one's own (e.g. Kong) beside kuma-dp: its outbounds reach backend over mTLS with the gateway's
    identity, so the backend (and its MeshTrafficPermissions) see spiffe://default/kong."""
    answer = eventually(lambda: (r := requests.get(f"http://127.0.0.1:{edge.delegated_port}/orders", timeout=5)).ok
                        and r.json(), lambda: edge.mesh.log_tail("kong-1"), timeout=60)
    assert "URI=spiffe://default/kong" in answer["headers"]["x-forwarded-client-cert"]


def test_kumactl_inspects_the_gateway_and_a_proxy_patch_reaches_it(edge: Edge, tmp_path: Path) -> None:
    eventually(lambda: edge.status("/api/items") == 200, timeout=60)
    kumactl = kumactl_for(tmp_path, edge.mesh.cp.url)
    assert f"LISTENER (HTTP:{edge.port}):\n  *:\n    ROUTE edge-to-backend:\n      SERVICE backend:\n" in \
        kumactl.ok("inspect", "dataplane", "edge-1")
    assert kumactl.ok("inspect", "meshgateway", "edge") == "edge-1\n"
    hcm = "envoy.filters.network.http_connection_manager"
    patch = {"type": "MeshProxyPatch", "mesh": "default", "name": "edge-server", "spec": {
        "targetRef": {"kind": "MeshGateway", "name": "edge"},
        "default": {"appendModifications": [{"networkFilter": {
            "operation": "Patch", "match": {"name": hcm, "listenerName": f"edge:HTTP:{edge.port}", "origin": "gateway"},
            "value": f"name: {hcm}\ntypedConfig:\n  '@type': type.googleapis.com/envoy.extensions.filters.network."
                     "http_connection_manager.v3.HttpConnectionManager\n  serverName: patched-edge"}}]}}}
    assert "warnings" not in edge.put("meshproxypatches", patch), "MeshProxyPatch applies to builtin gateways"
    eventually(lambda: edge.get("/other").headers["server"] == "patched-edge", lambda: edge.mesh.log_tail("edge-1"))
    assert edge.status("/api/items") == 200 and edge.rejected() == 0
    assert requests.delete(f"{edge.mesh.cp.url}/meshes/default/meshproxypatches/edge-server", timeout=5).ok
    eventually(lambda: edge.get("/other").headers["server"] == "Kuma Gateway")
