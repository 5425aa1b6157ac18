"""External services through the zone egress that `kuma-cp run --egress-enabled` runs itself.

Real kuma-cp (with its managed egress: kuma-dp + Envoy), a real sidecar (kuma-dp + Envoy), and two
external servers on 127.0.0.1: plain HTTP and HTTPS with a self-signed CA. Which process opened the
connection an external server received is read from /proc: the egress's Envoy or the sidecar's.
"""
from __future__ import annotations

import base64
import json
import os
import signal
import ssl
import subprocess
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from appliance.kumactl.generate import self_signed_certificate
from tests.e2e.harness import ALLOW_ALL, MTLS, Mesh, serve_in_thread
from tests.support import cp_command, eventually, free_port

pytestmark = pytest.mark.slow


class _External(BaseHTTPRequestHandler):
    """An external server that records which process called it (looked up while the connection is open)."""
    callers: list[int | None] = []

    def do_GET(self) -> None:  # noqa: N802
        type(self).callers.append(_socket_owner(self.client_address[1], self.server.server_address[1]))
        body = json.dumps({"host": self.headers.get("Host", "")}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def _socket_owner(local_port: int, remote_port: int) -> int | None:
    """The pid holding the 127.0.0.1 TCP socket from `local_port` to `remote_port` (the external server's peer).
    Both ports: another socket may have the same local port towards elsewhere (one in TIME_WAIT has no owner)."""
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if (int(fields[1].split(":")[1], 16), int(fields[2].split(":")[1], 16)) == (local_port, remote_port):
            inode = fields[9]
            break
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") == target for fd in os.listdir(f"/proc/{pid}/fd")):
                return int(pid)
        except OSError:
            continue
    return None


def _children(pid: int) -> list[int]:
    out = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(entry))
    return out


def _envoy_under(pid: int) -> int:
    """The Envoy a kuma-dp process runs."""
    def find() -> int | None:
        todo = _children(pid)
        while todo:
            child = todo.pop()
            try:
                # kuma-dp also runs `envoy --version` first: the proxy is the one with a config
                if (os.path.basename(os.readlink(f"/proc/{child}/exe")) == "envoy"
                        and b"--config-path" in Path(f"/proc/{child}/cmdline").read_bytes()):
                    return child
            except OSError:
                continue
            todo += _children(child)
        return None
    return eventually(find)


def _egress_kuma_dp(work_dir: Path) -> int:
    return eventually(lambda: int((work_dir / "egress" / "kuma-dp.pid").read_text()))


MES_CLIENT = """type: Dataplane
mesh: default
name: {{ name }}
networking:
  address: 127.0.0.1
  inbound:
  - port: {{ port }}
    servicePort: {{ servicePort }}
    tags: {kuma.io/service: app}
  outbound:
  - port: {{ outPort }}
    backendRef: {kind: MeshExternalService, name: ext-http}
"""


@pytest.fixture(params=["sotw", "delta"])
def setup(request, tmp_path: Path):
    egress_port = free_port()
    mesh = Mesh(tmp_path, {"KUMA_EGRESS_ADDRESS": "127.0.0.1", "KUMA_EGRESS_PORT": str(egress_port),
                           "KUMA_EGRESS_NAME": "egress-1",
                           "KUMA_EXPERIMENTAL_DELTA_XDS": str(request.param == "delta").lower()})
    mesh.cp.args = ("--egress-enabled",)      # as a user runs it
    mesh.cp.start()
    yield mesh
    mesh.close()
    pid_file = tmp_path / "cp" / "egress" / "kuma-dp.pid"
    if pid_file.exists():   # a failed test must not leave the egress running
        try:
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
        except OSError:
            pass


def _externals(tmp: Path) -> tuple[int, int, bytes]:
    """A plain HTTP server and an HTTPS one (its CA returned); both record their callers in _External.callers."""
    http_port, https_port = free_port(), free_port()
    serve_in_thread(ThreadingHTTPServer(("127.0.0.1", http_port), _External))
    key, cert = self_signed_certificate("server", "rsa", ["external.test", "127.0.0.1"])
    (tmp / "ext.key").write_bytes(key)
    (tmp / "ext.crt").write_bytes(cert)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp / "ext.crt", tmp / "ext.key")
    https = ThreadingHTTPServer(("127.0.0.1", https_port), _External)
    https.socket = context.wrap_socket(https.socket, server_side=True)
    serve_in_thread(https)
    return http_port, https_port, cert


def _last_caller() -> int | None:
    return _External.callers[-1] if _External.callers else None


def test_external_services_through_the_managed_egress(setup: Mesh, tmp_path: Path) -> None:
    mesh = setup
    http_port, https_port, ca = _externals(tmp_path)
    egress_dp = _egress_kuma_dp(tmp_path / "cp")
    egress_envoy = _envoy_under(egress_dp)
    eventually(lambda: requests.get(f"{mesh.cp.url}/zoneegresses/egress-1").ok)

    api = mesh.cp.url
    assert requests.put(f"{api}/meshes/default", json={
        "type": "Mesh", "name": "default", "mtls": MTLS, "routing": {"zoneEgress": True}}).ok
    assert requests.put(f"{api}/meshes/default/meshtrafficpermissions/allow-all", json=ALLOW_ALL).ok
    assert requests.put(f"{api}/meshes/default/external-services/httpbin", json={
        "type": "ExternalService", "mesh": "default", "name": "httpbin",
        "tags": {"kuma.io/service": "httpbin", "kuma.io/protocol": "http"},
        "networking": {"address": f"localhost:{http_port}"}}).ok
    assert requests.put(f"{api}/meshes/default/external-services/secure", json={
        "type": "ExternalService", "mesh": "default", "name": "secure",
        "tags": {"kuma.io/service": "secure", "kuma.io/protocol": "http"},
        "networking": {"address": f"127.0.0.1:{https_port}", "tls": {
            "enabled": True, "serverName": "external.test",
            "caCert": {"inline": base64.b64encode(ca).decode()}}}}).ok

    out_http, out_https = free_port(), free_port()
    web = mesh.kuma_dp("web-1", mesh.token("web-1"), port=free_port(), servicePort=free_port(), service="web",
                       protocol="http", outPort=out_http, outService="httpbin", out2Port=out_https,
                       out2Service="secure")
    web_envoy = _envoy_under(web.pid)

    # through the egress: HTTP, and HTTPS verified against the ExternalService's CA
    r = eventually(lambda: (r := requests.get(f"http://127.0.0.1:{out_http}/get", timeout=3)).ok and r)
    assert r.json()["host"] == "localhost"           # Host rewritten to the external server's name
    assert _last_caller() == egress_envoy
    eventually(lambda: requests.get(f"http://127.0.0.1:{out_https}/get", timeout=3).ok)
    assert _last_caller() == egress_envoy

    # routing.zoneEgress off: the same request goes straight from the sidecar, no proxy restarted
    assert requests.put(f"{api}/meshes/default", json={
        "type": "Mesh", "name": "default", "mtls": MTLS, "routing": {"zoneEgress": False}}).ok
    eventually(lambda: requests.get(f"http://127.0.0.1:{out_http}/get", timeout=3).ok and _last_caller() == web_envoy)
    eventually(lambda: requests.get(f"http://127.0.0.1:{out_https}/get", timeout=3).ok
                and _last_caller() == web_envoy)
    assert requests.put(f"{api}/meshes/default", json={
        "type": "Mesh", "name": "default", "mtls": MTLS, "routing": {"zoneEgress": True}}).ok
    eventually(lambda: requests.get(f"http://127.0.0.1:{out_http}/get", timeout=3).ok
                and _last_caller() == egress_envoy)
    assert _envoy_under(web.pid) == web_envoy

    # a MeshExternalService, which Kuma reaches only through the egress (an outbound by backendRef)
    assert requests.put(f"{api}/meshes/default/meshexternalservices/ext-http", json={
        "type": "MeshExternalService", "mesh": "default", "name": "ext-http", "spec": {
            "match": {"type": "HostnameGenerator", "port": 80, "protocol": "http"},
            "endpoints": [{"address": "127.0.0.1", "port": http_port}]}}).ok, "MeshExternalService"
    out_mes = free_port()
    mesh.kuma_dp("app-1", mesh.token("app-1"), template=MES_CLIENT, port=free_port(), servicePort=free_port(),
                 outPort=out_mes)
    eventually(lambda: requests.get(f"http://127.0.0.1:{out_mes}/get", timeout=3).ok)
    assert _last_caller() == egress_envoy

    # MeshTrafficPermission on the external service, enforced at the egress
    deny = {"type": "MeshTrafficPermission", "mesh": "default", "name": "deny-web-httpbin", "spec": {
        "targetRef": {"kind": "MeshService", "name": "httpbin"},
        "from": [{"targetRef": {"kind": "MeshService", "name": "web"}, "default": {"action": "Deny"}}]}}
    assert requests.put(f"{api}/meshes/default/meshtrafficpermissions/deny-web-httpbin", json=deny).ok
    eventually(lambda: requests.get(f"http://127.0.0.1:{out_http}/get", timeout=3).status_code == 403)
    assert requests.get(f"http://127.0.0.1:{out_https}/get", timeout=3).ok    # other services unaffected
    assert requests.delete(f"{api}/meshes/default/meshtrafficpermissions/deny-web-httpbin").ok
    eventually(lambda: requests.get(f"http://127.0.0.1:{out_http}/get", timeout=3).ok)

    # the egress's Envoy dies: kuma-cp starts the egress again and traffic resumes
    os.kill(egress_envoy, signal.SIGKILL)
    eventually(lambda: requests.get(f"http://127.0.0.1:{out_http}/get", timeout=3).ok
                and _last_caller() not in (egress_envoy, web_envoy, None), timeout=40)

    # the egress reported its subscription (ZoneEgressInsight) and ACKed what it got
    overview = requests.get(f"{api}/zoneegressoverviews/egress-1").json()
    subs = overview["zoneEgressInsight"]["subscriptions"]
    assert subs and subs[-1]["status"]["total"]["responsesRejected"] == "0"
    assert requests.get(f"{api}/zoneegresses/_overview").json()["total"] == 1


def test_egress_refuses_a_token_of_the_wrong_scope(tmp_path: Path) -> None:
    mesh = Mesh(tmp_path)
    mesh.cp.start()
    try:
        egress = tmp_path / "egress.yaml"
        egress.write_text(f"type: ZoneEgress\nname: egress-2\nnetworking:\n  address: 127.0.0.1\n"
                          f"  port: {free_port()}\n")

        def run_with(token: str) -> tuple[int, str]:
            (tmp_path / "zone.token").write_text(token)
            proc = subprocess.run(
                [*cp_command("dp", "run"), "--proxy-type=egress", f"--cp-address=https://127.0.0.1:{mesh.cp_port}",
                 f"--ca-cert-file={tmp_path / 'cp' / 'kuma-cp.crt'}", f"--dataplane-file={egress}",
                 f"--dataplane-token-file={tmp_path / 'zone.token'}", f"--work-dir={tmp_path / 'egress-run'}"],
                capture_output=True, text=True, timeout=60)
            return proc.returncode, proc.stdout + proc.stderr

        ingress_token = requests.post(f"{mesh.cp.url}/tokens/zone", json={"zone": "default", "scope": ["ingress"]})
        assert ingress_token.ok, ingress_token.text
        code, log = run_with(ingress_token.text)
        assert code != 0 and "scope" in log
        code, log = run_with(mesh.token("egress-2").read_text())     # a dataplane token is no zone token
        assert code != 0
        assert requests.get(f"{mesh.cp.url}/zoneegresses/egress-2").status_code == 404
    finally:
        mesh.close()
