"""MeshAccessLog and MeshTrace through real kuma-dp + Envoy: what an operator collects.

`web` calls `backend` (HTTP) and `echo` (TCP) through its outbounds, with mTLS and an allow-all
MeshTrafficPermission. Access logs land in files on the proxy's host or on a TCP listener the test runs
(through kuma-dp's pipe); spans reach a Zipkin-compatible receiver the test runs (JSON v2 over HTTP).
"""
from __future__ import annotations

import json
import socketserver
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from appliance.model.names import access_log_socket
from tests.e2e.harness import ALLOW_ALL, CALLER_DATAPLANE, MTLS, Mesh, serve_in_thread, tcp_exchange, tcp_version_app, version_app
from tests.support import eventually, free_port

pytestmark = pytest.mark.slow


class Observed:
    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh
        self.ports: dict[str, tuple[int, int]] = {}   # caller -> (backend outbound, echo outbound)
        self.admin: dict[str, int] = {}

    def proxy(self, name: str, service: str, protocol: str, app: int) -> None:
        http_port, tcp_port, admin = free_port(), free_port(), free_port()
        self.ports[service], self.admin[service] = (http_port, tcp_port), admin
        self.mesh.kuma_dp(name, self.mesh.token(name), template=CALLER_DATAPLANE, port=free_port(), servicePort=app,
                          service=service, protocol=protocol, adminPort=admin, httpPort=http_port, tcpPort=tcp_port)

    def drained(self) -> bool:
        """No proxy still has a replaced listener draining: every connection runs on the current config
        (requests on connections opened before a policy came would otherwise meet the old listener)."""
        for admin in self.admin.values():
            text = requests.get(f"http://127.0.0.1:{admin}/stats", timeout=5,
                                params={"filter": "^listener_manager.total_(listeners|filter_chains)_draining$"}).text
            if any(line.split(": ")[1] != "0" for line in text.splitlines() if ": " in line):
                return False
        return True

    def get(self, path: str = "/") -> requests.Response:
        return requests.get(f"http://127.0.0.1:{self.ports['web'][0]}{path}", timeout=10)

    def tcp(self, payload: bytes) -> bytes:
        return tcp_exchange(self.ports["web"][1], payload)

    def put(self, kind_path: str, name: str, kind: str, spec: dict) -> None:
        r = requests.put(f"{self.mesh.cp.url}/meshes/default/{kind_path}/{name}",
                         json={"type": kind, "mesh": "default", "name": name, "spec": spec})
        assert r.status_code in (200, 201), r.text
        # "not applied" would mean the policy does nothing (Kuma's own deprecation notices are fine)
        assert not any("not" in w and "applied" in w for w in r.json().get("warnings", [])), r.json()


@pytest.fixture
def observed(tmp_path: Path):
    mesh = Mesh(tmp_path)
    mesh.cp.start()
    r = requests.put(f"{mesh.cp.url}/meshes/default", json={"type": "Mesh", "name": "default", "mtls": MTLS})
    assert r.status_code == 200, r.text
    assert requests.put(f"{mesh.cp.url}/meshes/default/meshtrafficpermissions/allow-all", json=ALLOW_ALL).ok
    found = Observed(mesh)
    found.proxy("backend-1", "backend", "http", version_app("v1"))
    found.proxy("echo-1", "echo", "tcp", tcp_version_app("v1"))
    found.proxy("web-1", "web", "http", free_port())
    eventually(lambda: found.get().status_code == 200, timeout=40)
    eventually(lambda: found.tcp(b"ping") == b"v1:ping", timeout=40)
    yield found
    mesh.close()


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_each_request_adds_a_line_naming_source_and_destination(observed: Observed, tmp_path: Path) -> None:
    plain, as_json = tmp_path / "web-out.log", tmp_path / "backend-in.json"
    observed.put("meshaccesslogs", "web-out", "MeshAccessLog", {
        "targetRef": {"kind": "MeshService", "name": "web"},
        "to": [{"targetRef": {"kind": "MeshService", "name": "backend"},
                "default": {"backends": [{"type": "File", "file": {"path": str(plain)}}]}}]})
    observed.put("meshaccesslogs", "backend-in", "MeshAccessLog", {
        "targetRef": {"kind": "MeshService", "name": "backend"},
        "rules": [{"default": {"backends": [{"type": "File", "file": {"path": str(as_json), "format": {
            "type": "Json", "json": [{"key": "destination", "value": "%KUMA_DESTINATION_SERVICE%"},
                                     {"key": "direction", "value": "%KUMA_TRAFFIC_DIRECTION%"},
                                     {"key": "mesh", "value": "%KUMA_MESH%"},
                                     {"key": "path", "value": "%REQ(:PATH)%"},
                                     {"key": "status", "value": "%RESPONSE_CODE%"}]}}}]}}]})
    # the listeners are replaced once both Envoys took the policies: a first logged request says so
    eventually(lambda: observed.get("/warm").ok and _lines(plain) and _lines(as_json), timeout=30)
    eventually(observed.drained, "replaced listeners drained", timeout=30)
    assert observed.get("/ready").status_code == 200
    eventually(lambda: "/ready" in _lines(as_json)[-1] and "/ready" in _lines(plain)[-1],
               "the last request before the count logged", timeout=20)
    before_plain, before_json = len(_lines(plain)), len(_lines(as_json))

    for i in range(5):
        assert observed.get(f"/item/{i}").status_code == 200
    eventually(lambda: len(_lines(plain)) == before_plain + 5 and len(_lines(as_json)) == before_json + 5,
               lambda: f"plain: {_lines(plain)}, json: {_lines(as_json)}", timeout=20)

    # Kuma's default HTTP format, with the services' names where its placeholders were
    for line in _lines(plain)[before_plain:]:
        assert '"web" "backend" "127.0.0.1"' in line, line
        assert " default \"GET /item/" in line and " 200 " in line, line
    entries = [json.loads(line) for line in _lines(as_json)[before_json:]]
    assert [e["path"] for e in entries] == [f"/item/{i}" for i in range(5)]
    assert all(e["destination"] == "backend" and e["direction"] == "INBOUND" and e["mesh"] == "default"
               and e["status"] == 200 for e in entries), entries


class _Collector(socketserver.ThreadingTCPServer):
    # kuma-dp keeps its connection open: closing the server must not wait for the handler reading it
    daemon_threads, block_on_close = True, False


class _LineCollector(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        for line in self.rfile:
            with self.server.lock:  # type: ignore[attr-defined]
                self.server.lines.append(line.decode().rstrip("\n"))  # type: ignore[attr-defined]


def test_a_tcp_backend_receives_the_lines(observed: Observed) -> None:
    collector = _Collector(("127.0.0.1", free_port()), _LineCollector)
    collector.lines, collector.lock = [], threading.Lock()  # type: ignore[attr-defined]
    serve_in_thread(collector)
    address = f"127.0.0.1:{collector.server_address[1]}"
    try:
        observed.put("meshaccesslogs", "to-collector", "MeshAccessLog", {
            "targetRef": {"kind": "MeshService", "name": "web"},
            "to": [{"targetRef": {"kind": "MeshService", "name": "echo"}, "default": {"backends": [
                {"type": "Tcp", "tcp": {"address": address, "format": {
                    "type": "Plain", "plain": "tcp %KUMA_SOURCE_SERVICE%->%KUMA_DESTINATION_SERVICE% in=%BYTES_RECEIVED%"}}}]}},
                   {"targetRef": {"kind": "MeshService", "name": "backend"}, "default": {"backends": [
                       {"type": "Tcp", "tcp": {"address": address, "format": {
                           "type": "Json", "json": [{"key": "src", "value": "%KUMA_SOURCE_SERVICE%"},
                                                    {"key": "dst", "value": "%KUMA_DESTINATION_SERVICE%"},
                                                    {"key": "path", "value": "%REQ(:PATH)%"}]}}}]}}]})

        def seen() -> list[str]:
            with collector.lock:  # type: ignore[attr-defined]
                return list(collector.lines)  # type: ignore[attr-defined]

        # a TCP connection is logged when it closes; each exchange is one connection
        eventually(lambda: observed.tcp(b"hello") == b"v1:hello" and "tcp web->echo in=5" in seen(),
                   lambda: f"received: {seen()}", timeout=30)
        eventually(lambda: observed.get("/via-tcp-backend").ok and any(
            line.startswith("{") and json.loads(line) == {"dst": "backend", "path": "/via-tcp-backend", "src": "web"}
            for line in seen()), lambda: f"received: {seen()}", timeout=30)
        # what `inspect` shows is what the proxy got: the pipe in its kuma-dp's work dir
        config = requests.get(f"{observed.mesh.cp.url}/meshes/default/dataplanes/web-1/_config").text
        assert access_log_socket(str(observed.mesh.tmp / "web-1"), "web-1", "default") in config
    finally:
        collector.shutdown()
        collector.server_close()


class _ZipkinReceiver(BaseHTTPRequestHandler):
    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b""
        while size := int(self.rfile.readline().split(b";")[0], 16):
            body += self.rfile.read(size)
            self.rfile.readline()
        self.rfile.readline()
        return body

    def do_POST(self) -> None:  # noqa: N802
        body = self._body()
        if self.path == "/api/v2/spans":
            with self.server.lock:  # type: ignore[attr-defined]
                self.server.spans.extend(json.loads(body))  # type: ignore[attr-defined]
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_spans_of_two_proxies_reach_zipkin_as_parent_and_child(observed: Observed) -> None:
    zipkin = ThreadingHTTPServer(("127.0.0.1", free_port()), _ZipkinReceiver)
    zipkin.spans, zipkin.lock = [], threading.Lock()  # type: ignore[attr-defined]
    serve_in_thread(zipkin)
    try:
        observed.put("meshtraces", "zipkin", "MeshTrace", {"targetRef": {"kind": "Mesh"}, "default": {
            "backends": [{"type": "Zipkin", "zipkin": {
                "url": f"http://127.0.0.1:{zipkin.server_address[1]}/api/v2/spans", "sharedSpanContext": False}}],
            "sampling": {"overall": 100, "random": 100},
            "tags": [{"name": "team", "literal": "payments"},
                     {"name": "caller", "header": {"name": "x-caller", "default": "anonymous"}}]}})

        def trace_of(path: str) -> tuple[dict, dict] | None:
            """web's client span and backend's server span of one request to `path`."""
            with zipkin.lock:  # type: ignore[attr-defined]
                spans = [s for s in zipkin.spans if (s.get("tags") or {}).get("http.url", "").endswith(path)]  # type: ignore[attr-defined]
            servers = {s["traceId"]: s for s in spans
                       if s.get("kind") == "SERVER" and s["localEndpoint"]["serviceName"] == "backend"}
            pairs = [(s, servers[s["traceId"]]) for s in spans if s["traceId"] in servers and
                     s.get("kind") == "CLIENT" and s["localEndpoint"]["serviceName"] == "web"]
            return pairs[0] if pairs else None

        # Envoy sends spans in batches (every 5 s or 5 spans): poll with fresh requests until a pair arrives
        found = eventually(lambda: observed.get("/traced").ok and trace_of("/traced"),
                           lambda: f"spans: {zipkin.spans}", timeout=60)  # type: ignore[attr-defined]
        client, server = found
        assert server["traceId"] == client["traceId"]
        assert server["parentId"] == client["id"]      # the backend's span is the child of web's
        for span in (client, server):
            assert span["tags"]["team"] == "payments" and span["tags"]["caller"] == "anonymous"
            assert span["tags"]["kuma.mesh"] == "default"
    finally:
        zipkin.shutdown()
        zipkin.server_close()
