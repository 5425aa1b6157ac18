"""Transparent proxying through the control plane, with real iptables, Envoy and kuma-dp: a sidecar whose
Dataplane has `transparentProxying` and no outbounds, in a network namespace where our kumactl installed
the redirect rules, reaches the backend service at its virtual IP on port 80, over mTLS. Traffic to an
address outside the mesh passes through Envoy unchanged, until the Mesh turns passthrough off.

The namespace ("the VM") is joined to the host by a veth pair: the control plane and the backend (its app
and its proxy) stay on the host. Needs root, `ip netns` and iptables (`make test-deps`).
"""
from __future__ import annotations

import os
import pwd
import subprocess
import sys
import uuid
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest
import requests

from tests.e2e.harness import ALLOW_ALL, MTLS, Echo, Mesh, serve_in_thread
from tests.support import ROOT, cp_command, eventually, free_port, system_missing, system_tool

pytestmark = pytest.mark.slow

IP, _ = system_tool("needs iptables and iproute2: `make test-deps` (apt-get install -y iptables iproute2)",
                    "ip", "iptables")
if os.geteuid() != 0:
    system_missing("needs root: creates a network namespace and changes iptables inside it")

PROBE = Path(__file__).parent / "tproxy_probe.py"
HOST_IP, VM_IP = "10.79.0.1", "10.79.0.2"
APP_USER = pwd.getpwnam("nobody")   # the app; kuma-dp and Envoy run as root, whose traffic is not redirected
BACKEND_VIP = "240.0.0.0"           # the lowest address of dnsServer.CIDR, to the first service by name

BACKEND = """type: Dataplane
mesh: default
name: backend-1
networking:
  address: {host}
  inbound:
  - port: {port}
    servicePort: {app}
    serviceAddress: 127.0.0.1
    tags:
      kuma.io/service: backend
      kuma.io/protocol: http
"""
WEB = """type: Dataplane
mesh: default
name: web-1
networking:
  address: {vm}
  inbound:
  - port: {port}
    servicePort: {app}
    tags:
      kuma.io/service: web
      kuma.io/protocol: http
  transparentProxying:
    redirectPortInbound: 15006
    redirectPortOutbound: 15001
    ipFamilyMode: IPv4
"""


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert not check or done.returncode == 0, (argv, done.stdout, done.stderr)
    return done


class Vm:
    """A network namespace joined to the host by a veth pair, with a default route through the host."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.ns, self.host_if = f"kuma-tpcp-{tag}", f"tpcp{tag}"
        self.procs: list[subprocess.Popen[str]] = []

    def create(self) -> None:
        if sh(IP, "netns", "add", self.ns, check=False).returncode != 0:
            system_missing("the kernel refuses network namespaces here (ip netns add failed)")
        self.exec(IP, "link", "set", "lo", "up")
        sh(IP, "link", "add", self.host_if, "type", "veth", "peer", "name", "vm0", "netns", self.ns)
        sh(IP, "addr", "add", f"{HOST_IP}/24", "dev", self.host_if)
        sh(IP, "link", "set", self.host_if, "up")
        self.exec(IP, "addr", "add", f"{VM_IP}/24", "dev", "vm0")
        self.exec(IP, "link", "set", "vm0", "up")
        self.exec(IP, "route", "add", "default", "via", HOST_IP)

    def exec(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh(IP, "netns", "exec", self.ns, *argv, check=check)

    def start(self, *probe_args: str, ns: bool = True) -> None:
        prefix = [IP, "netns", "exec", self.ns] if ns else []
        proc = subprocess.Popen([*prefix, sys.executable, str(PROBE), *probe_args], stdout=subprocess.PIPE, text=True)
        self.procs.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready", probe_args

    def app_call(self, command: str, address: str, port: int) -> str:
        """What the unmodified app (not root: its traffic is redirected) gets from `address:port`."""
        done = self.exec(sys.executable, str(PROBE), command, address, str(port), str(APP_USER.pw_uid), check=False)
        return done.stdout.strip() if done.returncode == 0 else "refused"

    def delete(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait(timeout=10)
        sh(IP, "netns", "del", self.ns, check=False)   # the veth pair goes with it


@pytest.fixture(scope="module")
def vm() -> Iterator[Vm]:
    found = Vm()
    try:
        found.create()
        yield found
    finally:
        found.delete()


@pytest.fixture(scope="module")
def mesh(vm: Vm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    tmp = tmp_path_factory.mktemp("tpcp")
    mesh = Mesh(tmp)
    mesh.cp.start()
    try:
        url = mesh.cp.url
        assert requests.put(f"{url}/meshes/default", json={"type": "Mesh", "name": "default", "mtls": MTLS}).ok
        assert requests.put(f"{url}/meshes/default/meshtrafficpermissions/allow-all", json=ALLOW_ALL).ok
        app = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
        serve_in_thread(app)
        mesh.kuma_dp("backend-1", mesh.token("backend-1"),
                     template=BACKEND.format(host=HOST_IP, port=free_port(), app=app.server_address[1]))
        # the VM reaches the control plane's DP server at 127.0.0.1, the address its certificate names
        vm.start("forward", "127.0.0.1", str(mesh.cp_port), HOST_IP, str(mesh.cp_port))
        installed = vm.exec(*cp_command("ctl", "install", "transparent-proxy", "--kuma-dp-user", "0",
                                      "--ip-family-mode", "ipv4"), check=False)
        assert installed.returncode == 0, installed.stderr
        mesh.kuma_dp("web-1", mesh.token("web-1"), template=WEB.format(vm=VM_IP, port=free_port(), app=free_port()),
                     prefix=(IP, "netns", "exec", vm.ns))
        yield mesh
    finally:
        mesh.close()


def test_the_app_reaches_a_service_at_its_virtual_ip_and_outside_addresses_pass_through(vm: Vm, mesh: Mesh) -> None:
    def backend() -> str | None:
        answer = vm.app_call("http-get", BACKEND_VIP, 80)
        return answer if answer.startswith("200 ") else None
    answer = eventually(backend, lambda: f"backend at {BACKEND_VIP}:80 not reached\n{mesh.log_tail('web-1')}",
                        timeout=30)
    # it went through both proxies: the backend's Envoy gave the app the caller's identity (mTLS)
    assert "spiffe://default/web" in answer

    outside = free_port()
    vm.start("serve", HOST_IP, str(outside), "outside", ns=False)
    assert vm.app_call("connect", HOST_IP, outside).startswith("outside ")
    mesh_now = requests.get(f"{mesh.cp.url}/meshes/default").json()
    off = {**mesh_now, "networking": {"outbound": {"passthrough": False}}}
    assert requests.put(f"{mesh.cp.url}/meshes/default", json=off).ok
    eventually(lambda: vm.app_call("connect", HOST_IP, outside) in ("", "refused"),
               "a connection outside the mesh still passes with passthrough off", timeout=15)
    # the mesh is still reachable
    assert vm.app_call("http-get", BACKEND_VIP, 80).startswith("200 ")
