"""Metrics through real kuma-dp and Envoy: MeshMetric and Mesh.metrics endpoints, the monitoring assignment
server (Kuma's MADS and Prometheus' HTTP SD), the control plane's own /metrics, and a real Prometheus.

`web` calls `backend` (HTTP) through its outbound; `backend`'s application also serves its own metrics.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from tests.e2e.harness import Mesh, serve_in_thread
from tests.support import eventually, free_port

pytestmark = pytest.mark.slow

DATAPLANE = """type: Dataplane
mesh: default
name: {{ name }}
networking:
  address: 127.0.0.1
  inbound:
  - port: {{ port }}
    servicePort: {{ servicePort }}
    tags:
      kuma.io/service: {{ service }}
      kuma.io/protocol: http
      version: v1
  outbound:
  - port: {{ outPort }}
    tags:
      kuma.io/service: backend
"""

APP_METRICS = "# HELP app_orders_total Orders taken.\n# TYPE app_orders_total counter\napp_orders_total 7\n"


def _app() -> tuple[int, int]:
    """An HTTP app on one port and its own Prometheus metrics on another."""
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = (APP_METRICS if self.path == "/app-metrics" else json.dumps({"path": self.path})).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    servers = [ThreadingHTTPServer(("127.0.0.1", 0), Handler) for _ in range(2)]
    for server in servers:
        serve_in_thread(server)
    return servers[0].server_address[1], servers[1].server_address[1]


class Metrics:
    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh
        self.web_port = free_port()
        self.app_port, self.app_metrics_port = _app()

    def start(self) -> None:
        for name, service, app in (("backend-1", "backend", self.app_port), ("web-1", "web", free_port())):
            self.mesh.kuma_dp(name, self.mesh.token(name), template=DATAPLANE, port=free_port(), servicePort=app,
                              service=service, outPort=self.web_port)

    def call(self) -> int:
        return requests.get(f"http://127.0.0.1:{self.web_port}/", timeout=10).status_code

    def put(self, path: str, body: dict) -> requests.Response:
        r = requests.put(f"{self.mesh.cp.url}{path}", json=body)
        assert r.status_code in (200, 201), r.text
        return r


@pytest.fixture
def metrics(tmp_path: Path):
    mesh = Mesh(tmp_path, {"KUMA_MONITORING_ASSIGNMENT_SERVER_PORT": str(free_port())})
    mesh.cp.start()
    m = Metrics(mesh)
    m.start()
    eventually(lambda: m.call() == 200, timeout=40)
    yield m
    mesh.close()


def scrape(port: int) -> str:
    r = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert r.status_code == 200, r.text
    return r.text


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    out = []
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)", line)
        if m and m.group(1) == name:
            labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
            out.append((labels, float(m.group(3))))
    return out


def test_meshmetric_serves_envoy_and_application_metrics(metrics: Metrics) -> None:
    port = free_port()
    metrics.put("/meshes/default/meshmetrics/metrics", {
        "type": "MeshMetric", "mesh": "default", "name": "metrics",
        "spec": {"targetRef": {"kind": "MeshService", "name": "backend"}, "default": {
            "applications": [{"name": "orders", "port": metrics.app_metrics_port, "path": "/app-metrics"}],
            "backends": [{"type": "Prometheus", "prometheus": {"port": port, "path": "/metrics"}}]}}})
    text = eventually(lambda: scrape(port), timeout=30)
    for _ in range(3):
        assert metrics.call() == 200

    def counted() -> float:
        found = samples(scrape(port), "envoy_http_downstream_rq_total")
        return sum(v for labels, v in found if labels.get("envoy_http_conn_manager_prefix") == "localhost_"
                   + str(metrics.app_port))

    assert eventually(lambda: counted() >= 3, timeout=20)
    text = scrape(port)
    orders = samples(text, "app_orders_total")
    assert orders and orders[0][1] == 7.0
    assert orders[0][0]["mesh"] == "default" and orders[0][0]["kuma_io_service"] == "backend"
    assert orders[0][0]["dataplane"] == "backend-1"


def mads_url(metrics: Metrics) -> str:
    return f"http://127.0.0.1:{metrics.mesh.cp.env['KUMA_MONITORING_ASSIGNMENT_SERVER_PORT']}"


def discovery_request(client_id: str, version: str = "", nonce: str = "") -> dict:
    """What Prometheus' kuma_sd sends (discovery/xds/client.go): a DiscoveryRequest as protojson."""
    return {"version_info": version, "node": {"id": client_id},
            "type_url": "type.googleapis.com/kuma.observability.v1.MonitoringAssignment", "response_nonce": nonce}


def test_mesh_metrics_backend_is_served_and_discovered_with_kumas_labels(metrics: Metrics) -> None:
    port = free_port()
    metrics.put("/meshes/default", {"type": "Mesh", "name": "default", "metrics": {
        "enabledBackend": "prom", "backends": [{"name": "prom", "type": "prometheus",
                                                "conf": {"port": port, "path": "/stats", "skipMTLS": True}}]}})
    assert metrics.call() == 200
    text = eventually(lambda: requests.get(f"http://127.0.0.1:{port}/stats", timeout=10).text, timeout=30)
    assert samples(text, "envoy_server_live")

    url = mads_url(metrics) + "/v3/discovery:monitoringassignments"
    r = requests.post(url, json=discovery_request("prometheus-1"), headers={"Accept": "application/json"},
                      timeout=10)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["type_url"] == "type.googleapis.com/kuma.observability.v1.MonitoringAssignment"
    by_name = {t["name"]: (a, t) for a in body["resources"] for t in a["targets"]}
    assignment, target = by_name["backend-1"]
    assert assignment["mesh"] == "default" and assignment["service"] == "backend"
    assert target["address"] == f"127.0.0.1:{port}" and target["metrics_path"] == "/stats"
    assert target["scheme"] == "http"
    assert target["labels"] == {"kuma_io_service": "backend", "kuma_io_services": ",backend,",
                                "kuma_io_protocol": "http", "kuma_io_protocols": ",http,",
                                "version": "v1", "versions": ",v1,"}
    # the same version again: nothing changed, the long poll ends with 304 after fetch-timeout
    again = requests.post(url + "?fetch-timeout=1s", json=discovery_request("prometheus-1", body["version_info"],
                                                                           body["nonce"]), timeout=10)
    assert again.status_code == 304

    groups = requests.get(mads_url(metrics) + "/http_sd", timeout=10).json()
    group = next(g for g in groups if g["labels"]["__meta_kuma_dataplane"] == "backend-1")
    assert group["targets"] == [f"127.0.0.1:{port}"]
    assert group["labels"]["__meta_kuma_mesh"] == "default" and group["labels"]["__metrics_path__"] == "/stats"
    assert group["labels"]["__meta_kuma_label_kuma_io_service"] == "backend"
    assert requests.get(mads_url(metrics) + "/http_sd", params={"mesh": "other"}, timeout=10).status_code == 404
    assert len(requests.get(mads_url(metrics) + "/http_sd", params={"mesh": "default"}, timeout=10).json()) == 2
