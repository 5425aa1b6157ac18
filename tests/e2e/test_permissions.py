"""MeshTrafficPermission as a user meets it through real Envoys: a change is the rule for the next request.

Real kuma-cp, kuma-dp and Envoy; a steady loop of keep-alive requests through the caller's Envoy while a
policy flips between Allow and Deny. "ACKed" is read from the callee's own Envoy (admin config_dump):
the route configuration that carries the RBAC decision holds the new verdict.
"""
from __future__ import annotations

import json
import socket
import socketserver
import threading
import time
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from appliance.dp.envoy import UnixHTTPConnection
from tests.e2e.harness import Echo, MTLS, Mesh, TcpEcho, running_mesh, serve_in_thread, tcp_exchange, tcp_refused
from tests.support import eventually, free_port

pytestmark = pytest.mark.slow

FLIPS = 10
PER_WINDOW = 20          # requests that must start after each ACK before the next flip


@pytest.fixture(params=["sotw", "delta"])
def mesh(request, tmp_path: Path):
    yield from running_mesh(tmp_path, request.param)


def _config_dump(mesh: Mesh, run: str, resource: str) -> list[dict]:
    """What the proxy's Envoy has accepted (its admin API on kuma-dp's socket)."""
    connection = UnixHTTPConnection(str(mesh.tmp / run / "envoy-admin.sock"), timeout=5)
    try:
        connection.request("GET", f"/config_dump?resource={resource}")
        return json.loads(connection.getresponse().read()).get("configs", [])
    finally:
        connection.close()


def _route_configs(mesh: Mesh, run: str) -> dict[str, dict]:
    return {c["route_config"]["name"]: c["route_config"]
            for c in _config_dump(mesh, run, "dynamic_route_configs") if "route_config" in c}


def _active_config(mesh: Mesh, run: str) -> str:
    """The proxy's route configurations and active (not draining) listeners, as text to search."""
    listeners = [c.get("active_state") for c in _config_dump(mesh, run, "dynamic_listeners")]
    return json.dumps([_route_configs(mesh, run), listeners])


def _policy(name: str, spec: dict) -> dict:
    return {"type": "MeshTrafficPermission", "mesh": "default", "name": name, "spec": spec}


def _put(mesh: Mesh, policy: dict) -> None:
    r = requests.put(f"{mesh.cp.url}/meshes/default/meshtrafficpermissions/{policy['name']}", json=policy)
    assert r.ok, r.text


class _Loop(threading.Thread):
    """Keep-alive requests one after the other, as fast as they come back: (start time, status).

    `pause()` holds it between two requests (its connections stay open, idle), `resume()` goes on: the
    connections a flip finds idle are the ones a listener-bound verdict would keep stale."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.results: list[tuple[float, int]] = []
        self.done = threading.Event()
        self.running = threading.Event()
        self.busy = threading.Lock()
        self.running.set()

    def run(self) -> None:
        with requests.Session() as session:
            while not self.done.is_set():
                if not self.running.wait(0.1):
                    continue
                with self.busy:
                    started = time.monotonic()
                    try:
                        status = session.get(self.url, timeout=5).status_code
                    except requests.RequestException:
                        status = 0
                    self.results.append((started, status))

    def pause(self) -> None:
        self.running.clear()
        with self.busy:   # the request on its way has come back
            pass

    def resume(self) -> None:
        self.running.set()

    def count_since(self, moment: float) -> int:
        return sum(1 for started, _ in list(self.results) if started >= moment)


def _start_backend_and_callers(mesh: Mesh) -> tuple[int, int]:
    """backend (HTTP), and two callers: web and other. Returns the outbound ports of web and other."""
    app = free_port()
    serve_in_thread(ThreadingHTTPServer(("127.0.0.1", app), Echo))
    out_web, out_other = free_port(), free_port()
    mesh.kuma_dp("backend-1", mesh.token("backend-1"), port=free_port(), servicePort=app, service="backend",
                 protocol="http", outPort=free_port(), outService="web")
    mesh.kuma_dp("web-1", mesh.token("web-1"), port=free_port(), servicePort=free_port(), service="web",
                 protocol="http", outPort=out_web, outService="backend")
    mesh.kuma_dp("other-1", mesh.token("other-1"), port=free_port(), servicePort=free_port(), service="other",
                 protocol="http", outPort=out_other, outService="backend")
    return out_web, out_other


def test_every_request_after_an_acked_flip_gets_the_new_answer(mesh: Mesh) -> None:
    out_web, out_other = _start_backend_and_callers(mesh)
    eventually(lambda: requests.get(f"http://127.0.0.1:{out_web}/", timeout=2).ok)
    r = requests.put(f"{mesh.cp.url}/meshes/default", json={"type": "Mesh", "name": "default", "mtls": MTLS})
    assert r.status_code == 200, r.text

    def flip(action: str) -> dict:
        return _policy("flip", {"targetRef": {"kind": "MeshService", "name": "backend"},
                                "from": [{"targetRef": {"kind": "Mesh"}, "default": {"action": action}}]})

    def verdict() -> str | None:
        config = _active_config(mesh, "backend-1")
        if "envoy.filters.http.rbac" not in config:
            return None   # mTLS not there yet: no RBAC at all
        return "Allow" if "MeshTrafficPermission" in config else "Deny"

    _put(mesh, flip("Allow"))
    eventually(lambda: verdict() == "Allow", timeout=40)
    eventually(lambda: requests.get(f"http://127.0.0.1:{out_web}/", timeout=2).ok)
    loop = _Loop(f"http://127.0.0.1:{out_web}/")
    loop.start()
    windows: list[tuple[float, float, int]] = []
    try:
        for i in range(FLIPS):
            action = "Deny" if i % 2 == 0 else "Allow"
            loop.pause()
            _put(mesh, flip(action))
            eventually(lambda: verdict() == action, timeout=20, every=0.01)
            acked = time.monotonic()
            loop.resume()
            eventually(lambda: loop.count_since(acked) >= PER_WINDOW, timeout=20, every=0.01)
            windows.append((acked, time.monotonic(), 403 if action == "Deny" else 200))
    finally:
        loop.done.set()
        loop.join(10)
    stale = [(i, status, round(started - start, 3)) for i, (start, end, expected) in enumerate(windows)
             for started, status in loop.results if start <= started < end and status != expected]
    assert stale == [], f"{len(stale)} requests after an ACKed flip got another answer: {stale[:10]}"
    assert len(windows) == FLIPS

    # rules only: exactly the clients named (web by its SPIFFE id) get in, `other` does not
    requests.delete(f"{mesh.cp.url}/meshes/default/meshtrafficpermissions/flip").raise_for_status()
    _put(mesh, _policy("only-web", {"targetRef": {"kind": "MeshService", "name": "backend"}, "rules": [{"default": {
        "allow": [{"spiffeID": {"type": "Exact", "value": "spiffe://default/web"}}]}}]}))
    eventually(lambda: "only-web" in json.dumps(_route_configs(mesh, "backend-1").get("inbound:backend")))
    for _ in range(5):
        assert requests.get(f"http://127.0.0.1:{out_web}/", timeout=2).status_code == 200
        assert requests.get(f"http://127.0.0.1:{out_other}/", timeout=2).status_code == 403

    # every config was accepted (no NACK), RDS included
    def acked_everything() -> bool:
        items = requests.get(f"{mesh.cp.url}/meshes/default/dataplanes/_overview").json()["items"]
        totals = [s["status"]["total"] for i in items for s in i["dataplaneInsight"]["subscriptions"]]
        return len(items) == 3 and all(t["responsesRejected"] == "0" for t in totals)
    eventually(acked_everything)


def test_open_tcp_connections_a_deny_forbids_are_closed_within_the_drain_time(mesh: Mesh) -> None:
    app, out_tcp = free_port(), free_port()
    serve_in_thread(socketserver.ThreadingTCPServer(("127.0.0.1", app), TcpEcho))
    mesh.kuma_dp("db-1", mesh.token("db-1"), port=free_port(), servicePort=app, service="db", protocol="tcp",
                 outPort=free_port(), outService="web")
    mesh.kuma_dp("web-1", mesh.token("web-1"), port=free_port(), servicePort=free_port(), service="web",
                 protocol="http", outPort=out_tcp, outService="db")   # kuma_dp's drain time here: 1 s
    r = requests.put(f"{mesh.cp.url}/meshes/default", json={"type": "Mesh", "name": "default", "mtls": MTLS})
    assert r.status_code == 200, r.text
    policy = _policy("db", {"targetRef": {"kind": "MeshService", "name": "db"},
                            "from": [{"targetRef": {"kind": "Mesh"}, "default": {"action": "Allow"}}]})
    _put(mesh, policy)
    assert eventually(lambda: tcp_exchange(out_tcp, b"hi"), timeout=40) == b"echo:hi"

    with socket.create_connection(("127.0.0.1", out_tcp), timeout=3) as held:
        held.sendall(b"before")
        assert held.recv(4096) == b"echo:before"
        policy["spec"]["from"][0]["default"]["action"] = "Deny"
        _put(mesh, policy)
        eventually(lambda: tcp_refused(out_tcp))   # new connections: denied
        denied = time.monotonic()
        held.settimeout(10)
        try:
            closed = held.recv(4096) == b""
        except ConnectionResetError:
            closed = True
        assert closed
        assert time.monotonic() - denied < 1 + 3   # the drain time and some slack
