"""`kumactl install/uninstall transparent-proxy` with a real iptables, in network namespaces this test
creates (two "VMs" joined by a veth pair): the rules are Kuma's, they redirect the app's traffic and not
the kuma-dp user's, and uninstall leaves the tables exactly as they were; with a control plane and kuma-dp
--transparent-proxy --dns-enabled, the app's unmodified `curl http://backend.mesh/` reaches the backend.

Needs root, `ip netns` and iptables (`make test-deps`); skips without them unless KUMA_REQUIRE_SYSTEM_TOOLS=1.
"""
from __future__ import annotations

import ipaddress
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import uuid
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Callable, Iterator

import pytest

from tests.e2e.harness import ALLOW_ALL, MTLS
from tests.support import ROOT, cp_command, eventually, system_missing, system_tool, terminate_all

pytestmark = pytest.mark.slow

IP, _ = system_tool("needs iptables and iproute2: `make test-deps` (apt-get install -y iptables iproute2)",
                    "ip", "iptables")
if os.geteuid() != 0:
    system_missing("needs root: creates network namespaces and changes iptables inside them")

PROBE = Path(__file__).parent / "tproxy_probe.py"
DATA = Path(__file__).parent / "testdata"
KUMA_OVERRIDES = ROOT / "tests" / "unit" / "transparentproxy" / "testdata" / "kuma-overrides.ipv4.txt"
APP_IP, REMOTE_IP = "10.77.0.1", "10.77.0.2"
KUMA_DP = pwd.getpwnam("nobody")   # stands for the kuma-dp user: traffic of its UID is not redirected
# Rules someone else has (Kuma's container test adds the same): uninstall must leave them be.
OTHERS_RULES = [
    ["-t", "nat", "-N", "CUSTOM_CHAIN_NAT"], ["-t", "raw", "-N", "CUSTOM_CHAIN_RAW"],
    ["-t", "mangle", "-N", "CUSTOM_CHAIN_MANGLE"], ["-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-j", "CUSTOM_CHAIN_NAT"],
    ["-t", "nat", "-A", "PREROUTING", "-p", "udp", "-j", "CUSTOM_CHAIN_NAT"],
    ["-t", "raw", "-A", "OUTPUT", "-p", "tcp", "--dport", "53", "-j", "CUSTOM_CHAIN_RAW"],
    ["-t", "mangle", "-A", "PREROUTING", "-j", "CUSTOM_CHAIN_MANGLE"],
]


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    if check:
        assert done.returncode == 0, (argv, done.stdout, done.stderr)
    return done


class Namespaces:
    def __init__(self, tmp: Path, backend: str = "nft") -> None:
        tag = f"{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.app, self.remote = f"kuma-tp-app-{tag}", f"kuma-tp-remote-{tag}"
        self.processes: list[subprocess.Popen[str]] = []
        self.backend = backend
        # a host whose `iptables` is this backend (Debian's alternatives, without changing the real host's)
        self.bin = tmp / "bin"
        self.bin.mkdir()
        for cmd in ("iptables", "ip6tables"):
            (self.bin / cmd).symlink_to(self.tool(cmd))

    def tool(self, cmd: str) -> str:
        """`iptables-save` -> the path of `iptables-legacy-save` (or -nft-) for this backend."""
        family, _, rest = cmd.partition("-")
        name = "-".join(p for p in (family, self.backend, rest) if p)
        path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
        if path is None:
            system_missing(f"needs {name} (Debian's iptables package has both backends)")
        return path

    def exec(self, ns: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh(IP, "netns", "exec", ns, *argv, check=check)

    def kumactl(self, *args: str) -> subprocess.CompletedProcess[str]:
        path = f"{self.bin}:{os.environ.get('PATH', '')}"
        return self.exec(self.app, "env", f"PATH={path}", *cp_command("ctl", *args), check=False)

    def saved(self) -> dict[str, str]:
        """iptables-save and ip6tables-save of the app's namespace, without the timestamp comments and the
        packet counters that traffic moves."""
        return {cmd: re.sub(r" \[\d+:\d+\]", "", "".join(line for line in self.exec(self.app, self.tool(cmd)).stdout
                                                         .splitlines(keepends=True) if not line.startswith("#")))
                for cmd in ("iptables-save", "ip6tables-save")}

    def serve(self, ns: str, addr: str, port: int, name: str, udp_as: int | None = None) -> None:
        """A TCP server answering with `name` (or, with `udp_as`, a UDP one running as that UID)."""
        args = ["serve", addr, str(port), name] if udp_as is None else ["serve-udp", addr, str(port), name, str(udp_as)]
        self.probe(ns, *args)

    def probe(self, ns: str, *args: str) -> None:
        """A server of tproxy_probe.py, started and listening."""
        proc = subprocess.Popen([IP, "netns", "exec", ns, sys.executable, str(PROBE), *args],
                                stdout=subprocess.PIPE, text=True)
        self.processes.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready", f"{args} did not start"

    def call(self, uid: int | None = None, inbound_port: int | None = None) -> str:
        """From the app's namespace to the remote app, as `uid` (or root), or from the remote namespace to
        the app's `inbound_port`: who answered, and the address the caller dialled."""
        if inbound_port is not None:
            ns, argv = self.remote, ["connect", APP_IP, str(inbound_port)]
        else:
            ns, argv = self.app, ["connect", REMOTE_IP, "8080"] + ([str(uid)] if uid is not None else [])
        return self.exec(ns, sys.executable, str(PROBE), *argv).stdout.strip()


@pytest.fixture(params=["nft", "legacy"])
def vms(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Namespaces]:
    """Two namespaces, on a host whose iptables is the nf_tables or the legacy backend."""
    ns = Namespaces(tmp_path, request.param)
    created: list[str] = []
    try:
        for name in (ns.app, ns.remote):
            if sh(IP, "netns", "add", name, check=False).returncode != 0:
                system_missing("the kernel refuses network namespaces here (ip netns add failed)")
            created.append(name)
            ns.exec(name, IP, "link", "set", "lo", "up")
        ns.exec(ns.app, IP, "link", "add", "vm0", "type", "veth", "peer", "name", "vm0", "netns", ns.remote)
        for name, addr in ((ns.app, APP_IP), (ns.remote, REMOTE_IP)):
            ns.exec(name, IP, "addr", "add", f"{addr}/24", "dev", "vm0")
            ns.exec(name, IP, "link", "set", "vm0", "up")
        yield ns
    finally:
        for proc in ns.processes:
            proc.kill()
            proc.wait(timeout=10)
        for name in created:
            sh(IP, "netns", "del", name, check=False)


def test_install_redirects_the_apps_traffic_not_kuma_dps_and_uninstall_restores_the_tables(vms: Namespaces) -> None:
    for cmd in ("iptables", "ip6tables"):
        for rule in OTHERS_RULES:
            vms.exec(vms.app, vms.tool(cmd), *rule)
    before = vms.saved()
    vms.serve(vms.app, "0.0.0.0", 15001, "outbound-listener")   # where Envoy's outbound listener would be
    vms.serve(vms.app, "0.0.0.0", 15006, "inbound-listener")    # and its inbound one
    vms.serve(vms.app, "0.0.0.0", 22, "sshd")
    vms.serve(vms.remote, REMOTE_IP, 8080, "remote-app")
    assert vms.call() == "remote-app 10.77.0.2:8080"

    # Kuma's "should generate defaults with overrides" (app/kumactl/cmd/install/testdata/
    # install-transparent-proxy.overrides.golden.txt); its test drops the comments as done here
    dry = vms.kumactl("install", "transparent-proxy", "--dry-run", "--ip-family-mode", "ipv4", "--kuma-dp-user", "0",
                      "--redirect-outbound-port", "12345", "--redirect-inbound-port", "12346",
                      "--exclude-outbound-ports", "2000,2001", "--exclude-inbound-ports", "1000,1001")
    assert dry.returncode == 0, dry.stderr
    assert re.sub(r'-m comment --comment ".*?" ', "", dry.stdout) == KUMA_OVERRIDES.read_text()
    assert vms.saved() == before   # a dry run changes nothing

    done = vms.kumactl("install", "transparent-proxy", "--kuma-dp-user", KUMA_DP.pw_name, "--exclude-inbound-ports",
                       "22")
    assert done.returncode == 0, done.stderr
    assert "transparent proxy setup completed successfully" in done.stdout
    assert f"({vms.backend} backend)" in done.stdout
    installed = vms.saved()
    for cmd in ("iptables-save", "ip6tables-save"):
        assert ":KUMA_MESH_OUTBOUND -" in installed[cmd] and "-j CUSTOM_CHAIN_NAT" in installed[cmd]
        assert ('-A OUTPUT -p tcp -m comment --comment "kuma/mesh/transparent/proxy/redirect outbound TCP traffic to '
                'our custom chain for processing" -j KUMA_MESH_OUTBOUND') in installed[cmd]
        assert "-j REDIRECT --to-ports 15001" in installed[cmd] and "-j REDIRECT --to-ports 15006" in installed[cmd]

    assert vms.call() == "outbound-listener 10.77.0.2:8080"           # the app's call went to "Envoy"
    assert vms.call(uid=KUMA_DP.pw_uid) == "remote-app 10.77.0.2:8080"  # kuma-dp's own call went out
    assert vms.call(inbound_port=8080) == "inbound-listener 10.77.0.1:8080"  # a caller of the app met "Envoy"
    assert vms.call(inbound_port=22) == "sshd 10.77.0.1:22"                  # an excluded port did not

    again = vms.kumactl("install", "transparent-proxy", "--kuma-dp-user", KUMA_DP.pw_name, "--exclude-inbound-ports",
                        "22")
    assert again.returncode == 0 and vms.saved() == installed          # installing twice: the same rules once

    gone = vms.kumactl("uninstall", "transparent-proxy")
    assert gone.returncode == 0, gone.stderr
    assert vms.saved() == before
    assert vms.call() == "remote-app 10.77.0.2:8080"


def test_redirect_dns_sends_the_apps_queries_to_kuma_dps_dns_port(vms: Namespaces, tmp_path: Path) -> None:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(f"nameserver {REMOTE_IP}\n")
    (tmp_path / "tp.yaml").write_text(f"redirect:\n  dns:\n    resolvConfigPath: {resolv}\n")
    vms.serve(vms.remote, REMOTE_IP, 53, "remote-dns", udp_as=0)
    # kuma-dp's DNS proxy, on 127.0.0.1 as Kuma's: REDIRECT sends to 127.0.0.1, replies must come from there
    vms.serve(vms.app, "127.0.0.1", 15053, "kuma-dp-dns", udp_as=KUMA_DP.pw_uid)

    def query(uid: int | None = None) -> str:
        argv = ["query", REMOTE_IP, "53"] + ([str(uid)] if uid is not None else [])
        return vms.exec(vms.app, sys.executable, str(PROBE), *argv).stdout.strip()

    assert query() == "remote-dns 10.77.0.2:53"
    done = vms.kumactl("install", "transparent-proxy", "--kuma-dp-user", KUMA_DP.pw_name, "--redirect-dns",
                       "--config", str(tmp_path / "tp.yaml"), "--ip-family-mode", "ipv4")
    assert done.returncode == 0, done.stderr
    assert "-d 10.77.0.2 -p udp --dport 53 -j REDIRECT --to-ports 15053" in done.stdout
    # the app asked its resolver and kuma-dp answered, from the resolver's address (conntrack zones keep the
    # two legs apart); kuma-dp's own upstream query reached the resolver
    assert query() == "kuma-dp-dns 10.77.0.2:53"
    assert query(uid=KUMA_DP.pw_uid) == "remote-dns 10.77.0.2:53"
    assert vms.kumactl("uninstall", "transparent-proxy").returncode == 0
    assert query() == "remote-dns 10.77.0.2:53"


def _tables(saved: str) -> dict[str, str]:
    """iptables-save text by table (the order of tables in it depends on which was listed first)."""
    return {block.split("\n", 1)[0]: block for block in re.findall(r"(?ms)^\*\w+\n.*?^COMMIT\n", saved)}


def test_the_kernel_holds_kumas_rules_for_many_flags(vms: Namespaces) -> None:
    if "fe80:" not in vms.exec(vms.app, IP, "-6", "addr", "show", "dev", "vm0").stdout:
        pytest.skip("IPv6 is disabled in this kernel: no link-local address on the veth")
    flags = ["--redirect-all-dns-traffic", "--vnet", "docker0:172.17.0.0/16", "--vnet", "br+:172.18.0.0/16",
             "--vnet", "iface:::1/64", "--exclude-outbound-ports-for-uids", "53,3000-5000:106-108",
             "--exclude-outbound-ips", "10.0.0.1,192.168.0.0/24,fe80::1", "--exclude-outbound-ips", "fd00::/8",
             "--exclude-outbound-ports", "1,22,333", "--exclude-inbound-ports", "4444,55555",
             "--exclude-inbound-ips", "192.168.0.1,172.32.16.8/16,fe80::/10",
             "--exclude-inbound-ips", "a81b:a033:6399:73c7:72b6:aa8c:6f22:7098"]
    done = vms.kumactl("install", "transparent-proxy", "--kuma-dp-user", KUMA_DP.pw_name, *flags)
    assert done.returncode == 0, done.stderr
    saved = vms.saved()
    # Kuma's goldens (test/transparentproxy/testdata/debian-12-with-multiple-flags.ip{,6}tables-nft.golden at
    # v2.14.3) after `kumactl install transparent-proxy --kuma-dp-user kuma-dp` (UID 5678) and these flags
    for cmd in ("iptables", "ip6tables"):
        expected = (DATA / f"tproxy-multiple-flags.{cmd}-save.txt").read_text()
        expected = expected.replace("ifPlaceholder", "lo").replace("5678", str(KUMA_DP.pw_uid))
        want = _tables(expected)   # the legacy backend may also list tables we do not touch
        assert {name: _tables(saved[f"{cmd}-save"]).get(name) for name in want} == want, cmd


DATAPLANE = """type: Dataplane
mesh: default
name: {{ name }}
networking:
  address: {{ address }}
  inbound:
  - port: {{ port }}
    servicePort: {{ servicePort }}
    tags:
      kuma.io/service: {{ name }}
      kuma.io/protocol: http
"""
OUTSIDE_IP = "10.77.0.99"   # what the host's resolver says outside.example is
EXTERNAL_PORT = 18090       # the external server of the MeshExternalService, on the backend VM's 127.0.0.1


@contextmanager
def _resolver_of(ns: str, nameserver: str) -> Iterator[None]:
    """`ip netns exec` mounts /etc/netns/<ns>/resolv.conf over /etc/resolv.conf: the namespace's resolver."""
    etc = Path("/etc/netns") / ns
    etc.mkdir(parents=True)
    (etc / "resolv.conf").write_text(f"nameserver {nameserver}\n")
    try:
        yield
    finally:
        shutil.rmtree(etc)
        with suppress(OSError):
            etc.parent.rmdir()      # /etc/netns, when nothing else is in it


@pytest.mark.parametrize("vms", ["nft"], indirect=True)
def test_kuma_dp_answers_the_apps_dns_and_its_envoy_carries_the_unmodified_call(vms: Namespaces,
                                                                                tmp_path: Path) -> None:
    """The web "VM" (rules installed, kuma-dp --transparent-proxy --dns-enabled) and the backend's, the control
    plane beside the backend. kuma-dp runs as root, the user the rules exclude; the app as nobody."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(ns: str, name: str, *argv: str) -> None:
        log = open(tmp_path / f"{name}.log", "ab")
        procs.append(subprocess.Popen([IP, "netns", "exec", ns, *argv], stdout=log, stderr=subprocess.STDOUT,
                                      cwd=ROOT, env={**os.environ, "KUMA_GENERAL_WORK_DIR": str(tmp_path / "cp"),
                                                     "KUMA_DP_SERVER_AUTHN_DP_PROXY_TYPE": "none"}))

    def kuma_dp(ns: str, name: str, address: str, port: int, *flags: str) -> None:
        (tmp_path / f"{name}.yaml").write_text(DATAPLANE)
        start(ns, name, *cp_command("dp", "run", f"--cp-address=https://{REMOTE_IP}:5678", "--drain-time=1s",
                                    f"--ca-cert-file={tmp_path / 'cp' / 'kuma-cp.crt'}",
                                    f"--work-dir={tmp_path / name}",
                                    f"--dataplane-file={tmp_path / name}.yaml", f"--dataplane-var=name={name}",
                                    f"--dataplane-var=address={address}", f"--dataplane-var=port={port + 10000}",
                                    f"--dataplane-var=servicePort={port}", *flags))

    def api(method: str, path: str, body: dict) -> None:
        vms.exec(vms.remote, "curl", "-sSf", "-X", method, "-H", "Content-Type: application/json",
                 "--data", json.dumps(body), f"http://127.0.0.1:5681{path}")

    def app(*argv: str) -> str:
        return vms.exec(vms.app, "runuser", "-u", "nobody", "--", *argv, check=False).stdout.strip()

    with _resolver_of(vms.app, REMOTE_IP):
        try:
            vms.probe(vms.remote, "serve-dns", REMOTE_IP, "53", "outside.example", OUTSIDE_IP)
            vms.probe(vms.remote, "serve-http", REMOTE_IP, "8080", "backend")   # where its inbound sends
            (tmp_path / "cp").mkdir()
            vms.probe(vms.remote, "serve-http", "127.0.0.1", str(EXTERNAL_PORT), "external")   # only the egress sees it
            # with the zone egress it runs itself, on the address the sidecars reach
            start(vms.remote, "kuma-cp", "env", "KUMA_EGRESS_ENABLED=true", f"KUMA_EGRESS_ADDRESS={REMOTE_IP}",
                  *cp_command("run"))
            eventually(lambda: vms.exec(vms.remote, "curl", "-sf", "http://127.0.0.1:5680/ready", check=False)
                       .returncode == 0, lambda: (tmp_path / "kuma-cp.log").read_text())
            api("PUT", "/meshes/default", {"type": "Mesh", "name": "default", "mtls": MTLS})
            api("PUT", "/meshes/default/meshtrafficpermissions/allow-all", ALLOW_ALL)
            # a VM has a default route: without one, a connect() to a virtual IP fails before iptables see it
            vms.exec(vms.app, IP, "route", "add", "default", "via", REMOTE_IP)
            done = vms.kumactl("install", "transparent-proxy", "--kuma-dp-user", "root", "--redirect-dns",
                               "--ip-family-mode", "ipv4")
            assert done.returncode == 0, done.stderr
            kuma_dp(vms.remote, "backend", REMOTE_IP, 8080)
            kuma_dp(vms.app, "web", APP_IP, 8000, "--transparent-proxy", "--dns-enabled")

            # a name outside the mesh: kuma-dp forwards the app's query to the host's resolver
            eventually(lambda: app("getent", "ahostsv4", "outside.example").startswith(OUTSIDE_IP),
                       lambda: (tmp_path / "web.log").read_text())
            # the mesh's name: the virtual IP from the control plane's table, in Kuma's range (dnsServer.CIDR)
            vip = eventually(lambda: app("getent", "ahostsv4", "backend.mesh").partition(" ")[0],
                             lambda: (tmp_path / "web.log").read_text())
            assert ipaddress.ip_address(vip) in ipaddress.ip_network("240.0.0.0/4"), vip
            said = eventually(lambda: app("curl", "-sf", "--max-time", "5", "http://backend.mesh/"),
                              lambda: (tmp_path / "web.log").read_text())
            assert said.startswith("backend xfcc=") and "spiffe://default/web" in said   # over mTLS, from web
            _meshservice_outbounds(api, app, lambda: (tmp_path / "web.log").read_text())
            _meshexternalservice_outbounds(api, app, lambda: (tmp_path / "web.log").read_text())
        finally:
            terminate_all(procs)


def _meshservice_outbounds(api: Callable[[str, str, dict], None], app: Callable[..., str],
                           log: Callable[[], str]) -> None:
    """With meshServices.mode Exclusive the app reaches the backend by its MeshService's hostname from Kuma's
    default HostnameGenerator, on the MeshService's port (the backend's inbound port), and no longer by
    `backend.mesh`; a MeshHTTPRoute on the MeshService changes what the app gets."""
    api("PUT", "/meshes/default", {"type": "Mesh", "name": "default", "mtls": MTLS,
                                   "meshServices": {"mode": "Exclusive"}})
    vip = eventually(lambda: app("getent", "ahostsv4", "backend.svc.mesh.local").partition(" ")[0], log)
    assert ipaddress.ip_address(vip) in ipaddress.ip_network("241.0.0.0/8"), vip
    url = "http://backend.svc.mesh.local:18080"
    said = eventually(lambda: app("curl", "-sf", "--max-time", "5", f"{url}/"), log)
    assert said.startswith("backend xfcc=") and "spiffe://default/web" in said   # over mTLS, from web
    eventually(lambda: app("getent", "ahostsv4", "backend.mesh") == "", log)     # Exclusive: no kuma.io/service VIPs

    def status(path: str) -> str:
        return app("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5", f"{url}{path}")
    route = {"type": "MeshHTTPRoute", "mesh": "default", "name": "moved", "spec": {
        "targetRef": {"kind": "Mesh"},
        "to": [{"targetRef": {"kind": "MeshService", "name": "backend", "sectionName": "18080"}, "rules": [{
            "matches": [{"path": {"type": "PathPrefix", "value": "/old"}}],
            "default": {"filters": [{"type": "RequestRedirect",
                                     "requestRedirect": {"statusCode": 301, "hostname": "elsewhere.example"}}]}}]}]}}
    api("PUT", "/meshes/default/meshhttproutes/moved", route)
    eventually(lambda: status("/old") == "301", log)
    assert status("/") == "200"


def _meshexternalservice_outbounds(api: Callable[[str, str, dict], None], app: Callable[..., str],
                                   log: Callable[[], str]) -> None:
    """A MeshExternalService gets a VIP and a hostname from Kuma's default HostnameGenerator: the app's call to
    that name reaches the external server through the zone egress (the server listens on the backend VM's
    127.0.0.1, where only the egress can connect); the Mesh's defaultForbidMeshExternalServiceAccess closes it."""
    api("PUT", "/meshes/default/meshexternalservices/httpbin", {
        "type": "MeshExternalService", "mesh": "default", "name": "httpbin", "spec": {
            "match": {"type": "HostnameGenerator", "port": 80, "protocol": "http"},
            "endpoints": [{"address": "127.0.0.1", "port": EXTERNAL_PORT}]}})
    vip = eventually(lambda: app("getent", "ahostsv4", "httpbin.extsvc.mesh.local").partition(" ")[0], log)
    assert ipaddress.ip_address(vip) in ipaddress.ip_network("242.0.0.0/8"), vip
    url = "http://httpbin.extsvc.mesh.local/"
    assert eventually(lambda: app("curl", "-sf", "--max-time", "5", url), log) == "external xfcc="

    def status() -> str:
        return app("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5", url)
    api("PUT", "/meshes/default", {"type": "Mesh", "name": "default", "mtls": MTLS,
                                   "meshServices": {"mode": "Exclusive"},
                                   "routing": {"defaultForbidMeshExternalServiceAccess": True}})
    eventually(lambda: status() == "403", log)
