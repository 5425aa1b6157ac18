"""A proxy's Envoy admin views through the control plane, with real kuma-cp, kuma-dp and Envoy.

Two proxies at their own addresses (127.0.0.3, 127.0.0.4, as on two hosts), mTLS on: `web` calls `backend`.
The control plane reaches each Envoy admin through the proxy's `kuma:envoy:admin` listener (mTLS with its
client certificate); nobody else can, and only admins may ask the control plane.
"""
from __future__ import annotations

import os
import socket
import ssl
import subprocess
from pathlib import Path

import pytest
import requests

from appliance.ca.envoy_admin import issue_client_cert, new_ca
from tests.e2e.harness import ALLOW_ALL, MTLS, Echo, Mesh, serve_in_thread
from tests.support import ROOT, _FromAddress, cp_command, eventually, free_port

pytestmark = pytest.mark.slow

DATAPLANE = """type: Dataplane
mesh: default
name: {{ name }}
networking:
  address: {{ address }}
  admin:
    port: {{ adminPort }}
  inbound:
  - port: {{ port }}
    servicePort: {{ servicePort }}
    serviceAddress: 127.0.0.1
    tags:
      kuma.io/service: {{ service }}
      kuma.io/protocol: http
  outbound:
  - port: {{ outPort }}
    tags:
      kuma.io/service: {{ outService }}
"""
WEB, BACKEND, EGRESS = "127.0.0.4", "127.0.0.3", "127.0.0.5"


def _zone_egress(mesh: Mesh) -> None:
    """egress-1 at 127.0.0.5, run by kuma-dp as a user runs one."""
    mesh.admin["egress-1"] = free_port()
    definition = mesh.tmp / "egress.yaml"
    definition.write_text(f"type: ZoneEgress\nname: egress-1\nnetworking:\n  address: {EGRESS}\n"
                          f"  port: {free_port()}\n  admin:\n    port: {mesh.admin['egress-1']}\n")
    token = requests.post(f"{mesh.cp.url}/tokens/zone", json={"zone": "default", "scope": ["egress"]})
    assert token.ok, token.text
    (mesh.tmp / "egress.token").write_text(token.text)
    log = open(mesh.tmp / "egress-1.log", "ab")
    mesh.procs.append(subprocess.Popen(
        [*cp_command("dp", "run"), "--proxy-type=egress", f"--cp-address=https://127.0.0.1:{mesh.cp_port}",
         f"--ca-cert-file={mesh.tmp / 'cp' / 'kuma-cp.crt'}", f"--dataplane-file={definition}",
         f"--dataplane-token-file={mesh.tmp / 'egress.token'}", f"--work-dir={mesh.tmp / 'egress-1'}",
         "--drain-time=1s"],
        stdout=log, stderr=subprocess.STDOUT, cwd=ROOT))


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory):
    from http.server import ThreadingHTTPServer
    tmp = tmp_path_factory.mktemp("admin-views")
    mesh = Mesh(tmp)
    try:
        mesh.cp.start()
        url = mesh.cp.url
        assert requests.put(f"{url}/meshes/default", json={"type": "Mesh", "name": "default", "mtls": MTLS}).ok
        assert requests.put(f"{url}/meshes/default/meshtrafficpermissions/allow-all", json=ALLOW_ALL).ok
        app = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
        serve_in_thread(app)
        mesh.admin = {"web-1": free_port(), "backend-1": free_port()}
        mesh.out_port = free_port()
        mesh.kuma_dp("backend-1", mesh.token("backend-1"), template=DATAPLANE, address=BACKEND,
                     adminPort=mesh.admin["backend-1"], port=free_port(), servicePort=app.server_address[1],
                     service="backend", outPort=free_port(), outService="web")
        mesh.kuma_dp("web-1", mesh.token("web-1"), template=DATAPLANE, address=WEB, adminPort=mesh.admin["web-1"],
                     port=free_port(), servicePort=free_port(), service="web", outPort=mesh.out_port,
                     outService="backend")
        mesh.admin["local-1"] = free_port()    # on the control plane's host: no admin listener, as in Kuma
        mesh.kuma_dp("local-1", mesh.token("local-1"), template=DATAPLANE, address="127.0.0.1",
                     adminPort=mesh.admin["local-1"], port=free_port(), servicePort=free_port(), service="local",
                     outPort=free_port(), outService="backend")
        _zone_egress(mesh)
        eventually(lambda: requests.get(f"http://127.0.0.1:{mesh.out_port}/", timeout=3).status_code == 200,
                   timeout=60, what="web -> backend over mTLS")
        yield mesh
    finally:
        mesh.close()


def _view(mesh: Mesh, name: str, view: str, **params: str) -> requests.Response:
    return requests.get(f"{mesh.cp.url}/meshes/default/dataplanes/{name}/{view}", params=params, timeout=15)


def test_config_dump_shows_the_proxys_listeners_without_secrets(mesh: Mesh) -> None:
    r = _view(mesh, "web-1", "xds")
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    dump = r.json()
    listeners = [item["active_state"]["listener"] for section in dump["configs"]
                 if section["@type"].endswith("ListenersConfigDump")
                 for item in section.get("dynamic_listeners", ()) if "active_state" in item]
    addresses = {(entry["address"]["socket_address"]["address"], entry["address"]["socket_address"]["port_value"])
                 for entry in listeners}
    assert (WEB, mesh.admin["web-1"]) in addresses                   # kuma:envoy:admin
    assert ("127.0.0.1", mesh.out_port) in addresses                  # the outbound to backend
    assert any(name.startswith("inbound:") for name in (entry["name"] for entry in listeners))
    # the secrets are in there (the identity, the admin listener's), their keys are not; nor is the
    # dataplane token of the bootstrap
    assert "PRIVATE KEY" not in r.text
    secrets = [s["secret"] for section in dump["configs"] if section["@type"].endswith("SecretsConfigDump")
               for s in section.get("dynamic_active_secrets", ())]
    assert {"identity_cert:secret:default", "kuma:envoy:admin"} <= {s["name"] for s in secrets}
    keys = [s["tls_certificate"]["private_key"] for s in secrets if "tls_certificate" in s]
    assert len(keys) == 2 and all(k == {"inline_string": "[redacted]"} for k in keys), keys
    token = (mesh.tmp / "web-1.token").read_text().strip()
    assert len(token) > 20 and token not in r.text
    with_eds = _view(mesh, "web-1", "xds", include_eds="true")
    assert "EndpointsConfigDump" in with_eds.text and "EndpointsConfigDump" not in r.text


def test_stats_have_counters_of_the_proxys_clusters(mesh: Mesh) -> None:
    assert requests.get(f"http://127.0.0.1:{mesh.out_port}/", timeout=5).status_code == 200
    r = _view(mesh, "web-1", "stats")
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/plain")
    counters = dict(line.split(": ", 1) for line in r.text.splitlines() if ": " in line)
    assert int(counters["cluster.backend.upstream_rq_total"]) >= 1
    as_json = _view(mesh, "web-1", "stats", format="json")
    assert any(s.get("name") == "cluster.backend.upstream_rq_total" for s in as_json.json()["stats"])


def test_clusters_lists_the_proxys_clusters(mesh: Mesh) -> None:
    r = _view(mesh, "web-1", "clusters")
    assert r.status_code == 200, r.text
    names = {line.split("::", 1)[0] for line in r.text.splitlines()}
    assert {"backend", "kuma:envoy:admin"} <= names
    as_json = _view(mesh, "backend-1", "clusters", format="json")
    assert "localhost:" in " ".join(c["name"] for c in as_json.json()["cluster_statuses"])


def test_anyone_sees_the_views_by_kumas_default_access_lists_without_keys_or_tokens(mesh: Mesh) -> None:
    """access.static viewConfigDump / viewStats / viewClusters let everybody by default, as in Kuma (the 403
    when they are limited: tests/api/test_envoy_admin_views.py); what they show never holds a secret."""
    remote = requests.Session()
    remote.mount("http://", _FromAddress("127.0.0.2"))
    token = (mesh.tmp / "web-1.token").read_text().strip()
    for view in ("xds", "stats", "clusters"):
        r = remote.get(f"{mesh.cp.url}/meshes/default/dataplanes/web-1/{view}", timeout=10)
        assert r.status_code == 200, r.text
        assert "PRIVATE KEY" not in r.text and token not in r.text


def _handshake(address: str, port: int, context: ssl.SSLContext) -> bytes:
    with socket.create_connection((address, port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=address) as tls:
            tls.sendall(b"GET /config_dump HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return tls.recv(65536)


def test_the_admin_listener_answers_only_the_control_plane(mesh: Mesh, tmp_path: Path) -> None:
    port = mesh.admin["web-1"]
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    # no client certificate: Envoy ends the handshake (TLS 1.3 may report it at the first read)
    with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
        assert _handshake(WEB, port, context) == b""
    # a client certificate with the control plane's SAN, from another CA: refused the same way
    other = new_ca()
    cert, key = issue_client_cert(other)
    (tmp_path / "client.pem").write_bytes(cert + key)
    os.chmod(tmp_path / "client.pem", 0o600)
    context.load_cert_chain(tmp_path / "client.pem")
    with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
        assert _handshake(WEB, port, context) == b""
    # plaintext matches no filter chain: closed without an answer
    with socket.create_connection((WEB, port), timeout=5) as raw:
        raw.sendall(b"GET /config_dump HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            assert raw.recv(65536) == b""
        except ConnectionResetError:
            pass


def test_kumactl_inspect_dataplane_stats(mesh: Mesh, tmp_path: Path) -> None:
    env = {**os.environ, "HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    config = tmp_path / "kumactl.yaml"

    def kumactl(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(cp_command("ctl", "--config-file", str(config), *args), capture_output=True,
                              text=True, timeout=60, env=env, cwd=ROOT)

    added = kumactl("config", "control-planes", "add", "--name", "cp", "--address", mesh.cp.url)
    assert added.returncode == 0, added.stderr
    stats = kumactl("inspect", "dataplane", "web-1", "--type", "stats")
    assert stats.returncode == 0, stats.stderr
    assert "cluster.backend.upstream_rq_total: " in stats.stdout
    clusters = kumactl("inspect", "dataplane", "backend-1", "--type", "clusters")
    assert clusters.returncode == 0 and "kuma:envoy:admin::" in clusters.stdout, clusters.stderr
    dump = kumactl("inspect", "dataplane", "web-1", "--type", "config-dump")
    assert dump.returncode == 0 and "ListenersConfigDump" in dump.stdout and "PRIVATE KEY" not in dump.stdout


def test_a_zone_egress_has_the_same_views(mesh: Mesh) -> None:
    url = f"{mesh.cp.url}/zoneegresses/egress-1"
    dump = eventually(lambda: (r := requests.get(f"{url}/xds", timeout=10)).status_code == 200 and r, timeout=30,
                      what="the zone egress's config dump")
    assert "ListenersConfigDump" in dump.text and "PRIVATE KEY" not in dump.text
    assert (mesh.tmp / "egress.token").read_text().strip() not in dump.text
    assert "kuma:envoy:admin::" in requests.get(f"{url}/clusters", timeout=10).text
    assert "server.live: 1" in requests.get(f"{url}/stats", params={"usedonly": "false"}, timeout=10).text


def test_a_proxy_at_127_0_0_1_is_asked_directly_and_only_its_own_envoy_answers(mesh: Mesh) -> None:
    stats = eventually(lambda: (r := _view(mesh, "local-1", "stats")).status_code == 200 and r, timeout=30,
                       what="local-1's stats")
    assert "cluster.backend." in stats.text
    # a Dataplane naming local-1's admin port as its own gets an error, never local-1's answer
    ghost = {"type": "Dataplane", "mesh": "default", "name": "ghost-1", "networking": {
        "address": "127.0.0.1", "admin": {"port": mesh.admin["local-1"]},
        "inbound": [{"port": free_port(), "tags": {"kuma.io/service": "ghost"}}]}}
    assert requests.put(f"{mesh.cp.url}/meshes/default/dataplanes/ghost-1", json=ghost).ok
    r = _view(mesh, "ghost-1", "stats")
    assert r.status_code == 500 and "is not this proxy's (it is default.local-1's)" in r.json()["detail"], r.text
