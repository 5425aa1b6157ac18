"""MeshHealthCheck through real Envoys: two instances of a service, one of them failing its health check.

`web` calls `backend` (HTTP) and `echo` (TCP); each runs as `v1` (healthy) and `v2`, whose `/health` answers
500 and whose TCP check gets the wrong answer, while both keep serving ordinary requests. With a
MeshHealthCheck the caller's Envoy checks them actively and sends everything to v1; without it, both get
traffic again. Every config is ACKed.
"""
from __future__ import annotations

import json
import socketserver
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from tests.e2e.harness import ALLOW_ALL, MTLS, VERSIONED_DATAPLANE, Mesh, serve_in_thread, tcp_exchange
from tests.support import eventually, free_port

pytestmark = pytest.mark.slow


def _http_app(version: str, health_status: int, checks: list[dict]) -> int:
    """Answers its version on any path; `/health` answers `health_status` (and records who asked)."""
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            status, body = 200, json.dumps({"version": version}).encode()
            if self.path == "/health":
                checks.append({k.lower(): v for k, v in self.headers.items()})
                status = health_status
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    port = free_port()
    serve_in_thread(ThreadingHTTPServer(("127.0.0.1", port), Handler))
    return port


def _tcp_app(version: str, pong: bytes) -> int:
    """Answers `ping` with `pong` (the health check), anything else with its version."""
    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            while data := self.request.recv(4096):
                self.request.sendall(pong if data == b"ping" else version.encode())

    port = free_port()
    serve_in_thread(socketserver.ThreadingTCPServer(("127.0.0.1", port), Handler))
    return port


class Fleet:
    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh
        self.http_port, self.tcp_port = free_port(), free_port()
        self.checks: dict[str, list[dict]] = {"v1": [], "v2": []}

    def start(self) -> None:
        for version, status, pong in (("v1", 200, b"pong"), ("v2", 500, b"nope")):
            for name, service, protocol, app in (
                    (f"backend-{version}", "backend", "http", _http_app(version, status, self.checks[version])),
                    (f"echo-{version}", "echo", "tcp", _tcp_app(version, pong))):
                self.mesh.kuma_dp(name, self.mesh.token(name), template=VERSIONED_DATAPLANE, port=free_port(), servicePort=app,
                                  service=service, protocol=protocol, version=version, httpPort=free_port(),
                                  tcpPort=free_port())
        self.mesh.kuma_dp("web-1", self.mesh.token("web-1"), template=VERSIONED_DATAPLANE, port=free_port(),
                          servicePort=free_port(), service="web", protocol="http", version="v1",
                          httpPort=self.http_port, tcpPort=self.tcp_port)

    def http_versions(self, n: int) -> list[str]:
        out = []
        for _ in range(n):
            response = requests.get(f"http://127.0.0.1:{self.http_port}/", timeout=5)
            assert response.status_code == 200, response.text
            out.append(response.json()["version"])
        return out

    def tcp_versions(self, n: int) -> list[bytes]:
        return [tcp_exchange(self.tcp_port, b"hello") for _ in range(n)]

    def url(self, path: str) -> str:
        return f"{self.mesh.cp.url}/meshes/default/{path}"

    def cds_acks(self) -> int:
        """How many cluster sets web-1 (whose clusters the health checks are on) has ACKed so far."""
        insight = requests.get(self.url("dataplane-insights/web-1")).json()
        return sum(int(s["status"].get("cds", {}).get("responsesAcknowledged", "0"))
                   for s in insight.get("subscriptions", []))

    def acked(self, since: int) -> bool:
        """web-1 ACKed a new cluster set since `since`; every proxy ACKed all the cluster sets it got (where the
        health checks live) and NACKed nothing."""
        if self.cds_acks() <= since:
            return False
        items = requests.get(self.url("dataplanes/_overview")).json()["items"]
        status = [s["status"] for i in items for s in i["dataplaneInsight"].get("subscriptions", [])]
        return (len(items) == 5 and all(s["total"].get("responsesRejected", "0") == "0" for s in status)
                and all(s["cds"].get("responsesSent") == s["cds"].get("responsesAcknowledged") for s in status))


@pytest.fixture(params=["sotw", "delta"])
def fleet(request, tmp_path: Path):
    mesh = Mesh(tmp_path, {"KUMA_EXPERIMENTAL_DELTA_XDS": "true"} if request.param == "delta" else None)
    mesh.cp.start()
    r = requests.put(f"{mesh.cp.url}/meshes/default", json={"type": "Mesh", "name": "default", "mtls": MTLS})
    assert r.status_code == 200, r.text
    assert requests.put(f"{mesh.cp.url}/meshes/default/meshtrafficpermissions/allow-all", json=ALLOW_ALL).ok
    fleet = Fleet(mesh)
    fleet.start()
    yield fleet
    mesh.close()


HEALTH_CHECK = {"type": "MeshHealthCheck", "mesh": "default", "name": "health", "spec": {
    "targetRef": {"kind": "Mesh"},
    "to": [{"targetRef": {"kind": "Mesh"}, "default": {
        "interval": "1s", "timeout": "1s", "unhealthyThreshold": 1, "healthyThreshold": 1,
        "http": {"path": "/health", "expectedStatuses": [200],
                 "requestHeadersToAdd": {"set": [{"name": "x-checked-by", "value": "mesh"}]}},
        # Kuma sends the text as written (its docs say Base64; 2.14 does not decode it)
        "tcp": {"send": "ping", "receive": ["pong"]}}}]}}


def test_an_unhealthy_instance_gets_no_traffic_until_the_check_is_removed(fleet: Fleet) -> None:
    # without a health check both instances answer, over HTTP and TCP
    eventually(lambda: set(fleet.http_versions(20)) == {"v1", "v2"}, lambda: fleet.mesh.log_tail("web-1"), timeout=40)
    eventually(lambda: set(fleet.tcp_versions(20)) == {b"v1", b"v2"}, timeout=20)
    assert fleet.checks == {"v1": [], "v2": []}

    before = eventually(fleet.cds_acks)   # web-1's first clusters are ACKed (and the insight says so)
    r = requests.put(fleet.url("meshhealthchecks/health"), json=HEALTH_CHECK)
    assert r.status_code == 201 and "warnings" not in r.json(), r.text
    assert "/health" in requests.get(fleet.url("dataplanes/web-1/_config")).text
    eventually(lambda: fleet.acked(since=before))
    # in place once 40 requests in a row reach v1 (by chance under round robin: 2^-40)
    eventually(lambda: set(fleet.http_versions(40)) == {"v1"})
    eventually(lambda: set(fleet.tcp_versions(40)) == {b"v1"})
    # and it stays that way: every request goes to the healthy instance
    assert set(fleet.http_versions(100)) == {"v1"}
    assert set(fleet.tcp_versions(50)) == {b"v1"}
    # the checks reached both apps through their proxies (mTLS, permissions), with the policy's header; the
    # caller's x-kuma-tags header they also carry is removed by the checked inbound, as for any request
    assert fleet.checks["v1"] and fleet.checks["v2"][-1]["x-checked-by"] == "mesh"
    assert "x-kuma-tags" not in fleet.checks["v2"][-1]

    before = fleet.cds_acks()
    assert requests.delete(fleet.url("meshhealthchecks/health")).ok
    assert "/health" not in requests.get(fleet.url("dataplanes/web-1/_config")).text
    eventually(lambda: fleet.acked(since=before))
    eventually(lambda: set(fleet.http_versions(20)) == {"v1", "v2"})
    eventually(lambda: set(fleet.tcp_versions(20)) == {b"v1", b"v2"})
