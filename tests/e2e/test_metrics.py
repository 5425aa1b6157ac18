"""Metrics through real kuma-dp and Envoy: MeshMetric and Mesh.metrics endpoints, the monitoring assignment
server (Kuma's MADS and Prometheus' HTTP SD), the control plane's own /metrics, and a real Prometheus.

`web` calls `backend` (HTTP) through its outbound; `backend`'s application also serves its own metrics.
"""
from __future__ import annotations

import json
import re
import subprocess
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
import pytest
import requests
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import json_format

import appliance.runtime.mads_grpc  # noqa: F401  (describes kuma.observability.v1.MonitoringAssignment)

from tests.e2e.harness import Mesh, serve_in_thread
from tests.support import eventually, free_port, system_tool

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


def _unpack(packed):
    """A MonitoringAssignment out of its Any (the message as Kuma's mads.proto numbers its fields)."""
    from google.protobuf import descriptor_pool, message_factory
    assert packed.type_url == "type.googleapis.com/kuma.observability.v1.MonitoringAssignment"
    cls = message_factory.GetMessageClass(
        descriptor_pool.Default().FindMessageTypeByName("kuma.observability.v1.MonitoringAssignment"))
    message = cls()
    packed.Unpack(message)
    return message


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

    # gRPC on the same port: Kuma's MonitoringAssignmentDiscoveryService
    port_mads = int(metrics.mesh.cp.env["KUMA_MONITORING_ASSIGNMENT_SERVER_PORT"])
    with grpc.insecure_channel(f"127.0.0.1:{port_mads}") as channel:
        fetch = channel.unary_unary(
            "/kuma.observability.v1.MonitoringAssignmentDiscoveryService/FetchMonitoringAssignments",
            request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
            response_deserializer=discovery_pb2.DiscoveryResponse.FromString)
        response = fetch(discovery_pb2.DiscoveryRequest(node={"id": "prometheus-1"}), timeout=10)
    assert response.version_info == body["version_info"]
    assert [json_format.MessageToDict(_unpack(a), preserving_proto_field_name=True) for a in response.resources] == [
        {k: v for k, v in r.items() if k != "@type"} for r in body["resources"]]

    # a proxy started now, with its own port and an application to merge (read at bootstrap, as in Kuma)
    own_port = free_port()
    metrics.mesh.kuma_dp("backend-2", metrics.mesh.token("backend-2"), template=DATAPLANE + f"""metrics:
  type: prometheus
  conf:
    port: {own_port}
    aggregate:
    - name: orders
      port: {metrics.app_metrics_port}
      path: /app-metrics
""", port=free_port(), servicePort=metrics.app_port, service="backend", outPort=free_port())
    text = eventually(lambda: requests.get(f"http://127.0.0.1:{own_port}/stats", timeout=10).text, timeout=30)
    assert samples(text, "envoy_server_live") and samples(text, "app_orders_total") == [({}, 7.0)]

    groups = requests.get(mads_url(metrics) + "/http_sd", timeout=10).json()
    group = next(g for g in groups if g["labels"]["__meta_kuma_dataplane"] == "backend-1")
    assert group["targets"] == [f"127.0.0.1:{port}"]
    assert group["labels"]["__meta_kuma_mesh"] == "default" and group["labels"]["__metrics_path__"] == "/stats"
    assert group["labels"]["__meta_kuma_label_kuma_io_service"] == "backend"
    assert requests.get(mads_url(metrics) + "/http_sd", params={"mesh": "other"}, timeout=10).status_code == 404
    assert len(requests.get(mads_url(metrics) + "/http_sd", params={"mesh": "default"}, timeout=10).json()) == 3


_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
_SAMPLE_LINE = re.compile(rf"^({_NAME})(?:\{{((?:{_LABEL})(?:,{_LABEL})*)?\}})? (\S+)$")
_SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count", ""),
             "counter": ("", "_total"), "gauge": ("",), "untyped": ("",)}


def parse_prometheus(text: str) -> dict[str, dict]:
    """A strict reader of the text format 0.0.4: every line a HELP, a TYPE or a sample of the family declared
    just before it, values are floats, histograms' buckets are cumulative and end at +Inf = _count."""
    families: dict[str, dict] = {}
    current = None
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            _, what, name, *rest = line.split(" ", 3)
            assert re.fullmatch(_NAME, name), line
            family = families.setdefault(name, {"type": "untyped", "samples": []})
            if what == "TYPE":
                assert rest and rest[0] in _SUFFIXES, line
                assert not family["samples"], f"TYPE after samples: {line}"
                family["type"] = rest[0]
            current = name
            continue
        assert not line.startswith("#") and line.strip(), f"unexpected line: {line!r}"
        m = _SAMPLE_LINE.match(line)
        assert m, f"not a sample: {line!r}"
        name, labels, value = m.group(1), m.group(2) or "", m.group(3)
        assert current is not None and any(name == current + s for s in _SUFFIXES[families[current]["type"]]), \
            f"{name} outside its family ({current})"
        float(value)   # +Inf, NaN and numbers only
        families[current]["samples"].append(
            (name, dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', labels)), float(value)))
    for name, family in families.items():
        if family["type"] == "histogram":
            series: dict = {}
            for sample, labels, value in family["samples"]:
                key = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
                series.setdefault(key, {"buckets": [], "count": None})
                if sample.endswith("_bucket"):
                    series[key]["buckets"].append((float(labels["le"]), value))
                elif sample.endswith("_count"):
                    series[key]["count"] = value
            for key, s in series.items():
                counts = [v for _, v in s["buckets"]]
                assert counts == sorted(counts), f"{name}{key}: buckets not cumulative"
                assert s["buckets"][-1][0] == float("inf") and counts[-1] == s["count"], f"{name}{key}"
    return families


def total(families: dict, name: str, sample: str | None = None, **labels: str) -> float:
    family = families.get(name)
    if family is None:
        return 0.0
    wanted = sample or name
    return sum(v for s, ls, v in family["samples"] if s == wanted and all(ls.get(k) == x for k, x in labels.items()))


def test_control_plane_metrics_count_the_pushes_a_change_causes(metrics: Metrics) -> None:
    url = f"http://127.0.0.1:{metrics.mesh.cp.diag_port}/metrics"

    def read() -> dict:
        r = requests.get(url, timeout=10)
        assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return parse_prometheus(r.text)

    def settled() -> dict | None:
        """Every response sent has been answered (ACK or NACK) and timed: nothing is on its way."""
        families = read()
        sent = total(families, "xds_responses_sent")
        both = total(families, "xds_streams_active") == 2
        return families if both and sent == total(families, "xds_delivery", "xds_delivery_count") else None

    before = eventually(settled, timeout=20)
    assert total(before, "xds_generation", "xds_generation_count") >= 2    # the two proxies' first configs
    assert before["xds_delivery"]["type"] == "histogram"

    # a change that concerns both proxies: a MeshTimeout on every outbound (named to sort before the mesh's
    # default one, which it then overrides: of two policies alike, the smaller name wins)
    r = requests.put(f"{metrics.mesh.cp.url}/meshes/default/meshtimeouts/a-slow", json={
        "type": "MeshTimeout", "mesh": "default", "name": "a-slow", "spec": {
            "targetRef": {"kind": "Mesh"}, "to": [{"targetRef": {"kind": "Mesh"},
                                                   "default": {"connectionTimeout": "7s"}}]}})
    assert r.status_code == 201, r.text

    def pushed() -> dict | None:
        families = settled()
        return families if families and total(families, "xds_responses_sent") > total(
            before, "xds_responses_sent") else None

    after = eventually(pushed, timeout=20)
    pushes = total(after, "xds_responses_sent") - total(before, "xds_responses_sent")
    delivered = total(after, "xds_delivery", "xds_delivery_count") - total(before, "xds_delivery", "xds_delivery_count")
    acks = total(after, "xds_requests_received", confirmation="ACK") - total(
        before, "xds_requests_received", confirmation="ACK")
    assert pushes >= 2 and delivered == pushes and acks >= pushes   # each push answered and timed, none rejected
    assert total(after, "xds_requests_received", confirmation="NACK") == 0
    assert total(after, "xds_generation", "xds_generation_count", proxy_type="dataplane", result="changed") >= 2
    # the route, not the resource's name, is the handler label
    assert total(after, "api_server_http_request_duration_seconds", "api_server_http_request_duration_seconds_count",
                 method="PUT", code="201", handler="/meshes/{mesh}/meshtimeouts/{name}") == 1
    assert total(after, "store", "store_count", operation="create", resource_type="MeshTimeout") >= 1
    assert total(after, "cp_info") == 1


@pytest.fixture
def prometheus() -> str:
    """Debian's prometheus (2.42: http_sd_configs, no kuma_sd_configs), checked before the mesh starts."""
    return system_tool("needs the prometheus binary: `make test-deps` (apt-get install -y prometheus)",
                       "prometheus")[0]


def test_real_prometheus_discovers_the_proxy_through_http_sd_and_scrapes_it(prometheus: str, metrics: Metrics,
                                                                            tmp_path: Path) -> None:
    port = free_port()
    metrics.put("/meshes/default/meshmetrics/metrics", {
        "type": "MeshMetric", "mesh": "default", "name": "metrics",
        "spec": {"targetRef": {"kind": "MeshService", "name": "backend"}, "default": {
            "backends": [{"type": "Prometheus", "prometheus": {"port": port}}]}}})
    eventually(lambda: scrape(port), timeout=30)
    web = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(json.dumps({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "kuma", "scrape_interval": "1s", "scrape_timeout": "1s",
                            "http_sd_configs": [{"url": mads_url(metrics) + "/http_sd", "refresh_interval": "1s"}]}]}))
    log = open(tmp_path / "prometheus.log", "ab")
    proc = subprocess.Popen([prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{web}"], stdout=log, stderr=subprocess.STDOUT)
    metrics.mesh.procs.append(proc)
    api = f"http://127.0.0.1:{web}/api/v1"

    def backend_target() -> dict | None:
        targets = requests.get(f"{api}/targets", timeout=5).json()["data"]["activeTargets"]
        found = [t for t in targets if t["discoveredLabels"].get("__meta_kuma_dataplane") == "backend-1"]
        return found[0] if found and found[0]["health"] == "up" else None

    target = eventually(backend_target, timeout=60)
    assert target["scrapeUrl"] == f"http://127.0.0.1:{port}/metrics"
    assert target["discoveredLabels"]["__meta_kuma_mesh"] == "default"
    assert target["discoveredLabels"]["__meta_kuma_service"] == "backend"

    query = (f'sum(envoy_http_downstream_rq_total{{dataplane="backend-1",'
             f'envoy_http_conn_manager_prefix="localhost_{metrics.app_port}"}})')

    def requests_seen() -> float | None:
        result = requests.get(f"{api}/query", params={"query": query}, timeout=5).json()["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    first = eventually(requests_seen, timeout=30)
    for _ in range(5):
        assert metrics.call() == 200
    assert eventually(lambda: (requests_seen() or 0) >= first + 5, timeout=30)


def test_opentelemetry_backend_gets_the_proxys_metrics_pushed_through_envoy(metrics: Metrics) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2

    received: list = []

    def export(request, context):
        received.append(request)
        return metrics_service_pb2.ExportMetricsServiceResponse()

    collector = grpc.server(ThreadPoolExecutor(max_workers=2))
    collector.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "opentelemetry.proto.collector.metrics.v1.MetricsService", {"Export": grpc.unary_unary_rpc_method_handler(
            export, request_deserializer=metrics_service_pb2.ExportMetricsServiceRequest.FromString,
            response_serializer=metrics_service_pb2.ExportMetricsServiceResponse.SerializeToString)}),))
    port = collector.add_insecure_port("127.0.0.1:0")
    collector.start()
    try:
        r = metrics.put("/meshes/default/meshmetrics/metrics", {
            "type": "MeshMetric", "mesh": "default", "name": "metrics",
            "spec": {"targetRef": {"kind": "MeshService", "name": "backend"}, "default": {
                "applications": [{"port": metrics.app_metrics_port, "path": "/app-metrics"}],
                "backends": [{"type": "OpenTelemetry", "openTelemetry": {
                    "endpoint": f"127.0.0.1:{port}", "refreshInterval": "1s"}}]}}})
        assert not [w for w in r.json().get("warnings", []) if "not yet applied" in w]

        def pushed() -> dict | None:
            for request in list(received):
                found = {m.name: m for rm in request.resource_metrics for s in rm.instrumentation_library_metrics
                         for m in s.metrics}
                if "app_orders_total" in found and "envoy_server_live" in found:
                    return found
            return None

        found = eventually(pushed, timeout=30)
        orders = found["app_orders_total"]
        assert orders.sum.is_monotonic and orders.sum.data_points[0].as_double == 7.0
        attributes = {a.key: a.value.string_value for a in orders.sum.data_points[0].attributes}
        assert attributes["dataplane"] == "backend-1" and attributes["mesh"] == "default"
        assert attributes["kuma_io_service"] == "backend"
        count = len(received)
        assert eventually(lambda: len(received) >= count + 2, timeout=10)   # every refreshInterval
    finally:
        collector.stop(0)


def _self_signed(directory: Path) -> tuple[Path, Path]:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "metrics")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = directory / "metrics.crt", directory / "metrics.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_file.chmod(0o600)
    return cert_file, key_file


def test_provided_tls_serves_metrics_over_tls_only(metrics: Metrics, tmp_path: Path, monkeypatch) -> None:
    cert_file, key_file = _self_signed(tmp_path)
    monkeypatch.setenv("KUMA_DATAPLANE_RUNTIME_METRICS_CERT_PATH", str(cert_file))
    monkeypatch.setenv("KUMA_DATAPLANE_RUNTIME_METRICS_KEY_PATH", str(key_file))
    # a proxy of its own, started with the certificate (kuma-dp gives its paths to the control plane)
    metrics.mesh.kuma_dp("secure-1", metrics.mesh.token("secure-1"), template=DATAPLANE, port=free_port(),
                         servicePort=metrics.app_port, service="secure", outPort=free_port())
    port = free_port()
    r = metrics.put("/meshes/default/meshmetrics/secure", {
        "type": "MeshMetric", "mesh": "default", "name": "secure",
        "spec": {"targetRef": {"kind": "MeshService", "name": "secure"}, "default": {
            "backends": [{"type": "Prometheus", "prometheus": {"port": port, "tls": {"mode": "ProvidedTLS"}}}]}}})
    assert not [w for w in r.json().get("warnings", []) if "not applied" in w or "not yet applied" in w]
    text = eventually(lambda: requests.get(f"https://127.0.0.1:{port}/metrics", verify=str(cert_file),
                                           timeout=10).text, timeout=30)
    assert samples(text, "envoy_server_live")
    with pytest.raises(requests.ConnectionError):   # no plaintext beside it
        requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    # MADS tells Prometheus to use https
    groups = requests.get(mads_url(metrics) + "/http_sd", timeout=10).json()
    assert [g["labels"]["__scheme__"] for g in groups if g["labels"]["__meta_kuma_dataplane"] == "secure-1"] == [
        "https"]
