"""A cross-mesh gateway: mesh `gw` exposes `backend` through a MeshGateway listener marked `crossMesh`, and a
sidecar of mesh `other` calls it through an outbound tagged `kuma.io/mesh: gw`, over mTLS with its own mesh's
identity (both meshes with builtin CAs). What a user sees: the request reaches the backend, routed by the
gateway's MeshHTTPRoute and its hostname; a sidecar of a mesh without mTLS, or a client outside any mesh,
is refused by the gateway."""
from __future__ import annotations

import socket
from typing import Iterator

import pytest
import requests

from tests.e2e.harness import ALLOW_ALL, MTLS, Mesh, running_mesh, version_app
from tests.support import dataplane_token, eventually, free_port

pytestmark = pytest.mark.slow

HOSTNAME = "edge.gw.mesh"
GATEWAY = """type: Dataplane
mesh: gw
name: {{ name }}
networking:
  address: 127.0.0.1
  gateway:
    type: BUILTIN
    tags:
      kuma.io/service: edge
"""
# a sidecar of mesh {{ mesh }} in front of an app of service {{ service }}, with an outbound to gw's gateway
SIDECAR = """type: Dataplane
mesh: {{ mesh }}
name: {{ name }}
networking:
  address: 127.0.0.1
  inbound:
  - port: {{ port }}
    servicePort: {{ servicePort }}
    tags:
      kuma.io/service: {{ service }}
      kuma.io/protocol: http
  outbound:
  - port: {{ outPort }}
    tags:
      kuma.io/service: edge
      kuma.io/mesh: gw
"""


class CrossMesh:
    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh
        self.gateway_port, self.other_port, self.plain_port = free_port(), free_port(), free_port()
        self.seen: list[dict] = []

    def put(self, mesh: str, path: str, body: dict) -> dict:
        r = requests.put(f"{self.mesh.cp.url}/meshes/{mesh}/{path}/{body['name']}", json=body, timeout=5)
        assert r.status_code in (200, 201), r.text
        return r.json()

    def sidecar(self, mesh: str, name: str, service: str, out_port: int) -> None:
        token = dataplane_token(self.mesh.cp.url, name, self.mesh.tmp, mesh=mesh)
        self.mesh.kuma_dp(name, token, template=SIDECAR, mesh=mesh, port=free_port(),
                          servicePort=version_app(name, self.seen), service=service, outPort=out_port)

    def get(self, port: int, host: str = HOSTNAME) -> requests.Response:
        return requests.get(f"http://127.0.0.1:{port}/items", headers={"Host": host}, timeout=5)

    def status(self, port: int, host: str = HOSTNAME) -> int | str:
        try:
            return self.get(port, host).status_code
        except requests.ConnectionError:
            return "refused"


@pytest.fixture(scope="module")
def cross(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CrossMesh]:
    for mesh in running_mesh(tmp_path_factory.mktemp("cross-mesh")):
        for name, mtls in (("gw", MTLS), ("other", MTLS), ("plain", None)):
            body = {"type": "Mesh", "name": name, **({"mtls": mtls} if mtls else {})}
            r = requests.put(f"{mesh.cp.url}/meshes/{name}", json=body, timeout=5)
            assert r.status_code in (200, 201), r.text
        cross = CrossMesh(mesh)
        cross.put("gw", "meshtrafficpermissions", {**ALLOW_ALL, "mesh": "gw"})
        created = cross.put("gw", "meshgateways", {
            "type": "MeshGateway", "mesh": "gw", "name": "edge",
            "selectors": [{"match": {"kuma.io/service": "edge"}}],
            "conf": {"listeners": [
                {"port": cross.gateway_port, "protocol": "HTTP", "hostname": HOSTNAME, "crossMesh": True}]}})
        assert "warnings" not in created, created
        cross.put("gw", "meshhttproutes", {"type": "MeshHTTPRoute", "mesh": "gw", "name": "edge-to-backend", "spec": {
            "targetRef": {"kind": "MeshGateway", "name": "edge"},
            "to": [{"targetRef": {"kind": "Mesh"}, "rules": [
                {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                 "default": {"backendRefs": [{"kind": "MeshService", "name": "backend"}]}}]}]}})
        cross.sidecar("gw", "backend-1", "backend", free_port())
        mesh.kuma_dp("edge-1", dataplane_token(mesh.cp.url, "edge-1", mesh.tmp, mesh="gw"), template=GATEWAY)
        cross.sidecar("other", "client-1", "client", cross.other_port)
        cross.sidecar("plain", "plain-1", "client", cross.plain_port)
        yield cross


def test_a_sidecar_of_another_mesh_reaches_the_backend_through_the_gateway(cross: CrossMesh) -> None:
    eventually(lambda: cross.status(cross.other_port) == 200,
               lambda: cross.mesh.log_tail("client-1") + "\n" + cross.mesh.log_tail("edge-1"), timeout=60)
    answer = cross.get(cross.other_port).json()
    assert answer["version"] == "backend-1" and answer["path"] == "/items"
    # inside mesh gw it is the gateway that calls the backend, over gw's own mTLS
    assert "URI=spiffe://gw/edge" in answer["headers"]["x-forwarded-client-cert"]
    # the gateway routes by its listener's hostname, as any HTTP listener
    assert cross.status(cross.other_port, host="elsewhere.example.com") == 404


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return True
    except OSError:
        return False


def test_a_mesh_without_mtls_and_a_client_outside_the_mesh_are_refused(cross: CrossMesh) -> None:
    eventually(lambda: cross.status(cross.other_port) == 200, timeout=60)
    reached = len(cross.seen)
    # the plain mesh's sidecar has its outbound to the gateway, but calls it in plaintext: the gateway closes it
    eventually(lambda: _listening(cross.plain_port), lambda: cross.mesh.log_tail("plain-1"), timeout=30)
    assert cross.status(cross.plain_port) == "refused"
    # and a client outside any mesh gets nothing from the crossMesh listener either
    assert cross.status(cross.gateway_port) == "refused"
    assert len(cross.seen) == reached, "no refused request reached the backend"
