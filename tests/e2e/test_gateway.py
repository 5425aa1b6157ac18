"""Traffic into the mesh through the builtin gateway: a real kuma-cp, a kuma-dp running as a BUILTIN gateway
(`edge`) and a kuma-dp sidecar in front of `backend`, mTLS on. What a user sees: curl through the gateway's
port reaches the backend on the routes of a MeshHTTPRoute (the backend sees the gateway's SPIFFE id), other
paths answer 404, a route change applies without restarting the gateway, and MeshTrafficPermission denying
the gateway's service gives 403."""
from __future__ import annotations

from typing import Iterator

import pytest
import requests

from tests.e2e.harness import ALLOW_ALL, DATAPLANE, MTLS, Mesh, running_mesh, version_app
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


def _route(prefix: str) -> dict:
    return {"type": "MeshHTTPRoute", "mesh": "default", "name": "edge-to-backend", "spec": {
        "targetRef": {"kind": "MeshGateway", "name": "edge"},
        "to": [{"targetRef": {"kind": "Mesh"}, "rules": [
            {"matches": [{"path": {"type": "PathPrefix", "value": prefix}}],
             "default": {"backendRefs": [{"kind": "MeshService", "name": "backend"}]}}]}]}}


class Edge:
    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh
        self.port = free_port()
        self.seen: list[dict] = []
        self.gateway = None

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
        created = edge.put("meshgateways", {
            "type": "MeshGateway", "mesh": "default", "name": "edge",
            "selectors": [{"match": {"kuma.io/service": "edge"}}],
            "conf": {"listeners": [{"port": edge.port, "protocol": "HTTP", "hostname": "*"}]}})
        assert "warnings" not in created, created
        assert "warnings" not in edge.put("meshhttproutes", _route("/api")), "the route applies to the gateway"
        mesh.kuma_dp("backend-1", mesh.token("backend-1"), port=free_port(),
                     servicePort=version_app("v1", edge.seen), service="backend", protocol="http",
                     outPort=free_port(), outService="nothing")
        edge.gateway = mesh.kuma_dp("edge-1", mesh.token("edge-1"), template=GATEWAY_DATAPLANE)
        yield edge


def test_a_route_reaches_the_backend_over_mtls_and_other_paths_answer_404(edge: Edge) -> None:
    eventually(lambda: edge.status("/api/items?q=1") == 200, lambda: edge.mesh.log_tail("edge-1"), timeout=60)
    answer = edge.get("/api/items?q=1").json()
    assert answer["path"] == "/api/items?q=1"
    # the backend's sidecar checked the gateway's certificate and says who called: the gateway's SPIFFE id
    assert "URI=spiffe://default/edge" in answer["headers"]["x-forwarded-client-cert"]
    assert edge.status("/api") == 200
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
