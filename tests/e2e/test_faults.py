"""MeshFaultInjection and MeshRateLimit through real Envoys: what a caller of a service gets.

Two callers (`web`, `other`) reach `backend` (HTTP) and `echo` (TCP) through their outbounds, all behind
kuma-dp with mTLS and an allow-all MeshTrafficPermission. Faults and limits are inbound policies: they take
effect in the Envoy of `backend` / `echo`, for the clients they name.
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests

from tests.e2e.harness import ALLOW_ALL, CALLER_DATAPLANE, MTLS, Mesh, tcp_exchange, tcp_version_app, version_app
from tests.support import eventually, free_port

pytestmark = pytest.mark.slow


class Faults:
    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh
        self.ports: dict[str, tuple[int, int]] = {}   # caller -> (backend outbound, echo outbound)
        self.admin: dict[str, int] = {}

    def proxy(self, name: str, service: str, protocol: str, app: int) -> None:
        http_port, tcp_port, admin = free_port(), free_port(), free_port()
        self.ports[service], self.admin[service] = (http_port, tcp_port), admin
        self.mesh.kuma_dp(name, self.mesh.token(name), template=CALLER_DATAPLANE, port=free_port(), servicePort=app,
                          service=service, protocol=protocol, adminPort=admin, httpPort=http_port, tcpPort=tcp_port)

    def start(self) -> None:
        self.proxy("backend-1", "backend", "http", version_app("v1"))
        self.proxy("echo-1", "echo", "tcp", tcp_version_app("v1"))
        self.proxy("web-1", "web", "http", free_port())
        self.proxy("other-1", "other", "http", free_port())

    def get(self, caller: str) -> requests.Response:
        return requests.get(f"http://127.0.0.1:{self.ports[caller][0]}/", timeout=10)

    def tcp(self, caller: str) -> bytes:
        """What the echo answers; b"" when the connection is closed (or reset) without an answer."""
        try:
            return tcp_exchange(self.ports[caller][1], b"ping")
        except ConnectionResetError:
            return b""

    def put(self, kind_path: str, name: str, kind: str, spec: dict) -> None:
        r = requests.put(f"{self.mesh.cp.url}/meshes/default/{kind_path}/{name}",
                         json={"type": kind, "mesh": "default", "name": name, "spec": spec})
        assert r.status_code in (200, 201), r.text
        # Kuma's own deprecation notice for `from` is fine; "not applied" would mean it does nothing
        assert not any("not" in w and "applied" in w for w in r.json().get("warnings", [])), r.json()

    def delete(self, kind_path: str, name: str) -> None:
        assert requests.delete(f"{self.mesh.cp.url}/meshes/default/{kind_path}/{name}").ok

    def stat(self, service: str, pattern: str) -> int:
        """The sum of the counters of the service's Envoy whose names match `pattern` (a regex)."""
        text = requests.get(f"http://127.0.0.1:{self.admin[service]}/stats", params={"filter": pattern},
                            timeout=5).text
        return sum(int(line.split(": ")[1]) for line in text.splitlines() if ": " in line)

    def stats_text(self, service: str, pattern: str) -> str:
        """The service's Envoy's stats whose names match `pattern`, for a failure message."""
        return requests.get(f"http://127.0.0.1:{self.admin[service]}/stats", params={"filter": pattern},
                            timeout=5).text

    def drained(self, service: str) -> bool:
        """The service's Envoy holds no replaced listener or filter chain any more. Fault and rate-limit
        filters live in the inbound listener (as in Kuma), so a change replaces it, and requests on
        connections opened before still meet the old one until it has drained (kuma-dp --drain-time)."""
        return self.stat(service, r"listener_manager\.total_(listeners|filter_chains)_draining$") == 0

    def all_acked(self) -> bool:
        items = requests.get(f"{self.mesh.cp.url}/meshes/default/dataplanes/_overview").json()["items"]
        totals = [s["status"]["total"] for i in items for s in i["dataplaneInsight"]["subscriptions"]]
        return len(items) == 4 and all(t.get("responsesRejected", "0") == "0" for t in totals) and \
            all(int(t.get("responsesAcknowledged", "0")) > 0 for t in totals)


@pytest.fixture(params=["sotw", "delta"])
def faults(request, tmp_path: Path):
    mesh = Mesh(tmp_path, {"KUMA_EXPERIMENTAL_DELTA_XDS": "true"} if request.param == "delta" else None)
    mesh.cp.start()
    r = requests.put(f"{mesh.cp.url}/meshes/default", json={"type": "Mesh", "name": "default", "mtls": MTLS})
    assert r.status_code == 200, r.text
    assert requests.put(f"{mesh.cp.url}/meshes/default/meshtrafficpermissions/allow-all", json=ALLOW_ALL).ok
    faults = Faults(mesh)
    faults.start()
    eventually(lambda: faults.get("web").status_code == 200 and faults.get("other").status_code == 200, timeout=40)
    eventually(lambda: faults.tcp("web") == b"v1:ping", timeout=40)
    yield faults
    mesh.close()


def test_abort_for_one_client_then_delay_by_identity_then_removal(faults: Faults) -> None:
    # `from` a MeshService: only web's requests are aborted (matched on the x-kuma-tags its Envoy sends)
    faults.put("meshfaultinjections", "backend-faults", "MeshFaultInjection", {
        "targetRef": {"kind": "MeshService", "name": "backend"},
        "from": [{"targetRef": {"kind": "MeshService", "name": "web"},
                  "default": {"http": [{"abort": {"httpStatus": 418, "percentage": 100}}]}}]})
    # in place once aborted, and for every request once the replaced inbound listener has drained
    eventually(lambda: faults.get("web").status_code == 418)
    eventually(lambda: faults.drained("backend"))
    assert all(faults.get("web").status_code == 418 for _ in range(20))
    assert all(faults.get("other").status_code == 200 for _ in range(20))

    # `rules` by SPIFFE ID: web's requests wait at least the delay, then reach the backend
    faults.put("meshfaultinjections", "backend-faults", "MeshFaultInjection", {
        "targetRef": {"kind": "MeshService", "name": "backend"},
        "rules": [{"matches": [{"spiffeID": {"type": "Exact", "value": "spiffe://default/web"}}],
                   "default": {"http": [{"delay": {"value": "1500ms", "percentage": 100}}]}}]})
    eventually(lambda: faults.get("web").status_code == 200)
    eventually(lambda: faults.drained("backend"))

    def timed(caller: str) -> float:
        start = time.monotonic()
        assert faults.get(caller).status_code == 200
        return time.monotonic() - start

    durations = [timed("web") for _ in range(3)]
    # Envoy arms the delay from its event loop's cached time, so a 1.5 s delay can measure 1.499 s here; without
    # it a request takes milliseconds. On failure, what the backend's Envoy did.
    assert all(d >= 1.4 for d in durations), (durations, faults.stats_text("backend", r"fault\.|listener_manager\."))
    assert faults.get("other").status_code == 200

    faults.delete("meshfaultinjections", "backend-faults")
    eventually(lambda: timed("web") < 1.0)
    eventually(lambda: faults.drained("backend"))
    assert all(timed("web") < 1.0 for _ in range(5))
    eventually(faults.all_acked)


def test_request_rate_limit_answers_the_configured_status_and_headers(faults: Faults) -> None:
    faults.put("meshratelimits", "backend-limit", "MeshRateLimit", {
        "targetRef": {"kind": "MeshService", "name": "backend"},
        "rules": [{"default": {"local": {"http": {
            "requestRate": {"num": 5, "interval": "1h"},
            "onRateLimit": {"status": 429, "headers": {"set": [{"name": "x-limited", "value": "yes"}],
                                                       "add": [{"name": "x-by", "value": "mesh"}]}}}}}}]})
    eventually(lambda: all(faults.get(c).status_code == 429 for c in ("web", "other") for _ in range(3)))
    # a caller's pooled connection opened before the change still meets the old, unlimited inbound until it drains
    eventually(lambda: faults.drained("backend"))
    limited = faults.get("web")
    assert limited.headers["x-limited"] == "yes" and limited.headers["x-by"] == "mesh"
    # the limit is shared by all clients of the inbound and does not refill within the hour
    for caller in ("web", "other", "web"):
        r = faults.get(caller)
        assert (r.status_code, r.headers.get("x-limited")) == (429, "yes")
    # exactly `num` requests went through the limiter before the first 429 (counted by the backend's Envoy)
    assert faults.stat("backend", r"http_local_rate_limit\.ok$") == 5
    assert faults.stat("backend", r"http_local_rate_limit\.rate_limited$") >= 4

    faults.delete("meshratelimits", "backend-limit")
    eventually(lambda: all(faults.get(c).status_code == 200 for c in ("web", "other")))
    eventually(lambda: faults.drained("backend"))
    assert all(faults.get(c).status_code == 200 for c in ("web", "other") for _ in range(10))
    eventually(faults.all_acked)


def test_connection_rate_limit_closes_the_extra_connections(faults: Faults) -> None:
    faults.put("meshratelimits", "echo-limit", "MeshRateLimit", {
        "targetRef": {"kind": "MeshService", "name": "echo"},
        "from": [{"targetRef": {"kind": "Mesh"},
                  "default": {"local": {"tcp": {"connectionRate": {"num": 3, "interval": "1h"}}}}}]})
    # in place once a connection is closed without an answer; from then on every new one is
    eventually(lambda: faults.tcp("web") == b"")
    assert all(faults.tcp(caller) == b"" for caller in ("web", "other", "web"))
    assert faults.stat("echo", r"tcp_rate_limit.*rate_limited$") >= 4

    faults.delete("meshratelimits", "echo-limit")
    eventually(lambda: faults.tcp("web") == b"v1:ping")
    assert all(faults.tcp(c) == b"v1:ping" for c in ("web", "other") for _ in range(5))
    eventually(faults.all_acked)
