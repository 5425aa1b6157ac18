"""Who may register and keep a Dataplane: real kuma-cp, kuma-dp and Envoy on 127.0.0.1.

A token bound to tags registers only Dataplanes with those tags, and cannot take over another's
stream; a proxy's Dataplane stays while any of its streams is open (a second connection that comes
and goes, a restarted kuma-dp whose old Envoy drains while the new one is connected).
"""
from __future__ import annotations

import re
from http.server import ThreadingHTTPServer
from pathlib import Path

import grpc
import pytest
import requests

from tests.ads_proxy import Proxy
from tests.e2e.harness import Echo, Mesh, running_mesh, serve_in_thread
from tests.support import dataplane_token, eventually, free_port

pytestmark = pytest.mark.slow


@pytest.fixture
def mesh(tmp_path: Path):
    yield from running_mesh(tmp_path)


def _ca(mesh: Mesh) -> bytes:
    return (mesh.tmp / "cp" / "kuma-cp.crt").read_bytes()


def _status(mesh: Mesh, name: str) -> int:
    return requests.get(f"{mesh.cp.url}/meshes/default/dataplanes/{name}", timeout=5).status_code


def _streams_active(mesh: Mesh) -> int:
    text = requests.get(f"http://127.0.0.1:{mesh.cp.diag_port}/metrics", timeout=5).text
    return int(float(re.search(r"^xds_streams_active(?:\{[^}]*\})? (\S+)$", text, re.M).group(1)))


def _subscriptions(mesh: Mesh, name: str) -> list[dict]:
    r = requests.get(f"{mesh.cp.url}/meshes/default/dataplanes/{name}/_overview", timeout=5)
    return r.json()["dataplaneInsight"]["subscriptions"] if r.ok else []


def _online(mesh: Mesh, name: str) -> bool:
    """Online as Kuma and kumactl say: while any of its subscriptions is open."""
    return any(not s.get("disconnectTime") for s in _subscriptions(mesh, name))


def _ended(mesh: Mesh, name: str) -> int:
    return sum(1 for s in _subscriptions(mesh, name) if s.get("disconnectTime"))


def _kept_or_removed(mesh: Mesh, name: str) -> None:
    """Wait until the control plane decided about a closed stream of `name`: it says it keeps the
    Dataplane (other streams are open), or the Dataplane is gone."""
    kept = f"a stream of default.{name} closed; "
    eventually(lambda: kept in mesh.cp.read_log() or _status(mesh, name) == 404, timeout=20)


def _backend_and_web(mesh: Mesh, backend_port: int | None = None, drain: str = "1s") -> tuple[int, int]:
    """backend-1 (its own token) behind web-1's outbound; returns (the outbound port, the app's port)."""
    app, out = free_port(), free_port()
    serve_in_thread(ThreadingHTTPServer(("127.0.0.1", app), Echo))
    mesh.kuma_dp("backend-1", mesh.token("backend-1"), port=backend_port or free_port(), servicePort=app,
                 service="backend", protocol="http", outPort=free_port(), outService="web", drain=drain)
    mesh.kuma_dp("web-1", mesh.token("web-1"), port=free_port(), servicePort=free_port(), service="web",
                 protocol="http", outPort=out, outService="backend")
    eventually(lambda: requests.get(f"http://127.0.0.1:{out}/", timeout=2).ok)
    return out, app


def test_a_token_bound_to_tags_registers_only_dataplanes_with_those_tags(mesh: Mesh) -> None:
    web_only = dataplane_token(mesh.cp.url, "", mesh.tmp, tags={"kuma.io/service": ["web"]})
    proc = mesh.kuma_dp("backend-1", web_only, port=free_port(), servicePort=free_port(), service="backend",
                        protocol="http", outPort=free_port(), outService="web")
    assert proc.wait(30) != 0
    log = (mesh.tmp / "backend-1.log").read_text()
    assert ('dataplane contains tag "kuma.io/service" with value "backend" which is not allowed with this '
            'token. Allowed values in token are ["web"]') in log, log
    assert _status(mesh, "backend-1") == 404
    # the same token starts what it allows
    mesh.kuma_dp("web-1", web_only, port=free_port(), servicePort=free_port(), service="web", protocol="http",
                 outPort=free_port(), outService="backend")
    eventually(lambda: _online(mesh, "web-1"))

    # nor can it take over the stream of a proxy registered with its own token
    mesh.kuma_dp("backend-1", mesh.token("backend-1"), port=free_port(), servicePort=free_port(),
                 service="backend", protocol="http", outPort=free_port(), outService="web")
    eventually(lambda: _online(mesh, "backend-1"))
    with pytest.raises(grpc.RpcError) as refused:
        Proxy(mesh.cp_port, _ca(mesh), definition=None, token=web_only.read_text(), node_id="default.backend-1")
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert 'with value "backend" which is not allowed with this token' in refused.value.details()


def test_a_second_connection_that_comes_and_goes_leaves_the_proxy_registered(mesh: Mesh) -> None:
    out, _ = _backend_and_web(mesh)
    eventually(lambda: _online(mesh, "backend-1"))
    assert _streams_active(mesh) == 2
    token = (mesh.tmp / "backend-1.token").read_text()
    second = Proxy(mesh.cp_port, _ca(mesh), definition=None, token=token, node_id="default.backend-1")
    eventually(lambda: _streams_active(mesh) == 3)
    second.close()
    _kept_or_removed(mesh, "backend-1")
    assert _status(mesh, "backend-1") == 200
    assert _streams_active(mesh) == 2
    # the insight records the second stream's end, and the proxy stays online
    eventually(lambda: _ended(mesh, "backend-1") == 1 or _status(mesh, "backend-1") == 404)
    assert _online(mesh, "backend-1"), _subscriptions(mesh, "backend-1")
    assert requests.get(f"http://127.0.0.1:{out}/", timeout=5).ok


def test_a_restarted_kuma_dp_keeps_its_dataplane_when_the_old_envoy_leaves(mesh: Mesh) -> None:
    _, app = _backend_and_web(mesh, drain="4s")
    old = mesh.procs[0]
    old.terminate()   # its Envoy drains, its stream still open, while the new kuma-dp starts
    mesh.kuma_dp("backend-1", mesh.tmp / "backend-1.token", instance="-new", port=free_port(), servicePort=app,
                 service="backend", protocol="http", outPort=free_port(), outService="web")
    eventually(lambda: _streams_active(mesh) == 3)
    assert old.wait(30) == 0
    _kept_or_removed(mesh, "backend-1")
    assert _status(mesh, "backend-1") == 200
    eventually(lambda: _ended(mesh, "backend-1") == 1 or _status(mesh, "backend-1") == 404)
    assert _online(mesh, "backend-1"), _subscriptions(mesh, "backend-1")
    assert _streams_active(mesh) == 2    # the new proxy and web-1
