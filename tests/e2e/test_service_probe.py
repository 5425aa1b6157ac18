"""Dataplane `serviceProbe` through HDS: two instances of `backend` behind real Envoys, each inbound probed by
its own Envoy (TCP). When an app stops listening, its inbound is marked not ready in the API and callers stop
sending to it; when no instance is left the caller's own Envoy answers 503; when the app is back, so is its
traffic.
"""
from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from tests.e2e.harness import Mesh, serve_in_thread
from tests.support import eventually, free_port

pytestmark = pytest.mark.slow

PROBED = """type: Dataplane
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
    serviceProbe:
      interval: 1s
      timeout: 1s
      unhealthyThreshold: 1
      healthyThreshold: 1
      tcp: {}
  outbound:
  - port: {{ outPort }}
    tags:
      kuma.io/service: backend
"""


class App:
    """An HTTP app answering its name, which can stop listening (its socket closed) and start again."""

    def __init__(self, name: str) -> None:
        self.name, self.port = name, free_port()
        self.server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        name = self.name

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                body = json.dumps({"name": name}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        serve_in_thread(self.server)

    def stop(self) -> None:
        assert self.server is not None
        self.server.shutdown()
        self.server.server_close()
        self.server = None


@pytest.fixture
def fleet(tmp_path: Path):
    # HDS reports every second (Kuma's default is 5 s), so that a change is seen in a few seconds
    mesh = Mesh(tmp_path, {"KUMA_DP_SERVER_HDS_INTERVAL": "1s"})
    mesh.cp.start()
    apps = {name: App(name) for name in ("backend-1", "backend-2")}
    for app in apps.values():
        app.start()
        mesh.kuma_dp(app.name, mesh.token(app.name), template=PROBED, port=free_port(), servicePort=app.port,
                     service="backend", outPort=free_port())
    out_port = free_port()
    mesh.kuma_dp("web-1", mesh.token("web-1"), template=PROBED, port=free_port(), servicePort=free_port(),
                 service="web", outPort=out_port)
    yield mesh, apps, out_port
    for app in apps.values():
        if app.server is not None:
            app.stop()
    mesh.close()


def test_an_inbound_whose_app_stops_answering_its_probe_gets_no_traffic_until_it_is_back(fleet) -> None:
    mesh, apps, out_port = fleet

    def ready(name: str) -> bool | None:
        r = requests.get(f"{mesh.cp.url}/meshes/default/dataplanes/{name}")
        if r.status_code == 404:
            return None   # kuma-dp has not registered it yet
        inbound = r.json()["networking"]["inbound"][0]
        health = inbound.get("health")
        return None if health is None else health.get("ready") is True and inbound.get("state") != "NotReady"

    def answers(n: int) -> list[tuple[int, str]]:
        out = []
        for _ in range(n):
            r = requests.get(f"http://127.0.0.1:{out_port}/", timeout=5)
            out.append((r.status_code, r.json()["name"] if r.status_code == 200 else r.text))
        return out

    def log() -> str:
        return mesh.cp.read_log()[-3000:]

    # both apps pass their probes: ready in the API, and both get traffic
    eventually(lambda: ready("backend-1") is True and ready("backend-2") is True, log, timeout=40)
    eventually(lambda: {a for a in answers(20)} == {(200, "backend-1"), (200, "backend-2")}, timeout=30)

    # backend-2's app stops listening: its inbound is not ready, and callers send everything to backend-1
    apps["backend-2"].stop()
    eventually(lambda: ready("backend-2") is False, log)
    assert ready("backend-1") is True
    eventually(lambda: set(answers(40)) == {(200, "backend-1")})
    assert set(answers(100)) == {(200, "backend-1")}   # and it stays that way: no request reaches backend-2

    # no instance left: the caller's own Envoy has no endpoint to try, and answers 503 at once
    apps["backend-1"].stop()
    eventually(lambda: ready("backend-1") is False, log)
    eventually(lambda: set(answers(5)) == {(503, "no healthy upstream")})
    overview = requests.get(f"{mesh.cp.url}/meshes/default/dataplanes/backend-1/_overview").json()
    assert overview["dataplane"]["networking"]["inbound"][0]["health"] == {"ready": False}

    # the apps come back: ready again, and they get traffic again
    apps["backend-2"].start()
    eventually(lambda: ready("backend-2") is True, log)
    eventually(lambda: set(answers(20)) == {(200, "backend-2")})
    apps["backend-1"].start()
    eventually(lambda: ready("backend-1") is True, log)
    eventually(lambda: {a for a in answers(20)} == {(200, "backend-1"), (200, "backend-2")})
