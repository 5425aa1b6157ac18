"""Several kuma-cp instances on one PostgreSQL: shared state, one leader, outages, connection storms.

Real processes: PostgreSQL (pgserver), `kuma-cp run` instances, kuma-dp with real Envoy, HTTP apps
on 127.0.0.1. The instances share one DP server certificate (dpServer.tlsCertFile), as they would
behind one address, so a kuma-dp trusts every one of them.
"""
from __future__ import annotations

import os
import subprocess
import threading
import time
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import psycopg
import pytest
import requests

from appliance.ca.server_cert import ensure_server_cert
from tests.e2e.harness import ALLOW_ALL, DATAPLANE, MTLS, Echo, serve_in_thread
from tests.support import (ROOT, CpProcess, PostgresServer, cp_command, dataplane_token, eventually, free_port,
                           terminate_all)

pytestmark = pytest.mark.slow


class Cluster:
    """N instances on one fresh database, their proxies and apps, torn down together."""

    def __init__(self, tmp: Path, postgres: PostgresServer, count: int, env: dict[str, str] | None = None) -> None:
        self.tmp = tmp
        self.postgres = postgres
        self.db = postgres.database()
        cert = ensure_server_cert(tmp / "dp-server", ["localhost"], ["127.0.0.1"])
        self.ca_file = cert.cert_path
        self.env = {**postgres.env(self.db), "KUMA_DP_SERVER_TLS_CERT_FILE": str(cert.cert_path),
                    "KUMA_DP_SERVER_TLS_KEY_FILE": str(cert.key_path), **(env or {})}
        migrated = subprocess.run(cp_command("migrate", "up"), env={**os.environ, **self.env}, cwd=ROOT,
                                  capture_output=True, text=True, timeout=60)
        assert migrated.returncode == 0, migrated.stderr
        self.cps: list[CpProcess] = []
        for k in range(count):
            (tmp / f"cp-{k}").mkdir()
            self.cps.append(CpProcess(tmp / f"cp-{k}", self.env))
        self.procs: list[subprocess.Popen] = []

    def start(self) -> "Cluster":
        for cp in self.cps:
            cp.start()
        return self

    def dp_port(self, cp: CpProcess) -> int:
        return int(cp.env["KUMA_DP_SERVER_PORT"])

    def token(self, name: str) -> Path:
        return dataplane_token(self.cps[0].url, name, self.tmp)

    def kuma_dp(self, name: str, cp: CpProcess, **variables: object) -> subprocess.Popen:
        """kuma-dp (and its Envoy) for `name`, bootstrapped by and connected to instance `cp`."""
        dp_file = self.tmp / f"{name}.dataplane.yaml"
        dp_file.write_text(DATAPLANE)
        variables = {"out2Port": free_port(), "out2Service": "nothing", **variables}
        args = [*cp_command("dp", "run"), f"--cp-address=https://127.0.0.1:{self.dp_port(cp)}",
                f"--ca-cert-file={self.ca_file}", f"--dataplane-file={dp_file}", f"--dataplane-var=name={name}",
                f"--work-dir={self.tmp / name}", "--drain-time=1s", f"--dataplane-token-file={self.token(name)}",
                *(f"--dataplane-var={k}={v}" for k, v in variables.items())]
        log = open(self.tmp / f"{name}.log", "ab")
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=os.environ.copy())
        self.procs.append(proc)
        return proc

    def backend_and_web(self, backend_cp: CpProcess, web_cp: CpProcess) -> int:
        """An HTTP app behind `backend` (on one instance), called through `web`'s outbound (on another):
        the port to call."""
        app, out_http = free_port(), free_port()
        serve_in_thread(ThreadingHTTPServer(("127.0.0.1", app), Echo))
        self.kuma_dp("backend-1", backend_cp, port=free_port(), servicePort=app, service="backend",
                     protocol="http", outPort=free_port(), outService="web")
        self.kuma_dp("web-1", web_cp, port=free_port(), servicePort=free_port(), service="web", protocol="http",
                     outPort=out_http, outService="backend")
        return out_http

    def connections(self) -> int:
        """Sessions open on this cluster's database, besides the one asking."""
        s = self.postgres
        with psycopg.connect(host=s.host, port=s.port, user=s.USER, password=s.PASSWORD, dbname="postgres",
                             autocommit=True) as conn:
            return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> "
                                "pg_backend_pid()", (self.db,)).fetchone()[0]

    def close(self) -> None:
        terminate_all(self.procs)
        for cp in self.cps:
            cp.kill()


def metrics(cp: CpProcess) -> dict[str, str]:
    """`GET /metrics` of the diagnostics server: sample (name with labels) -> value."""
    text = requests.get(f"http://127.0.0.1:{cp.diag_port}/metrics", timeout=2).text
    return dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))


def leader(cp: CpProcess) -> bool:
    return float(metrics(cp)["leader"]) == 1.0


def instance_id(cp: CpProcess) -> str:
    info = next(k for k in metrics(cp) if k.startswith("cp_info{"))
    return info.split('instance_id="', 1)[1].split('"', 1)[0]


def ready(cp: CpProcess) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{cp.diag_port}/ready", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def latest_subscription(cp: CpProcess, name: str) -> dict:
    """The proxy's newest xDS subscription as the API shows it ({} before it registered or connected)."""
    r = requests.get(f"{cp.url}/meshes/default/dataplanes/{name}/_overview", timeout=5)
    if r.status_code == 404:
        return {}
    subs = r.json()["dataplaneInsight"]["subscriptions"]
    return max(subs, key=lambda s: s["connectTime"], default={})


class LeaderWatch:
    """Samples `leader` on every running instance until stopped: the most leaders seen at once."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.most = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            count = 0
            for cp in self.cluster.cps:
                if cp.proc is None or cp.proc.poll() is not None:
                    continue
                try:
                    count += leader(cp)
                except (requests.RequestException, KeyError):
                    pass
            self.most = max(self.most, count)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.most


@pytest.fixture
def cluster(request, tmp_path: Path, postgres_server: PostgresServer) -> Iterator[Cluster]:
    count, env = getattr(request, "param", (2, None))
    c = Cluster(tmp_path, postgres_server, count, env)
    try:
        yield c
    finally:
        c.close()


def test_a_write_on_one_instance_reaches_an_envoy_on_another(cluster: Cluster) -> None:
    a, b = cluster.start().cps
    assert [leader(a), leader(b)].count(True) == 1

    # the API of either instance serves what the other wrote
    other = {"type": "Mesh", "name": "other"}
    assert requests.put(f"{a.url}/meshes/other", json=other).status_code == 201
    assert requests.get(f"{b.url}/meshes/other").json()["name"] == "other"
    # and B has seen the change itself (it reached B's change log reader, not just its API)
    written = float(metrics(a)["store_revision"])
    eventually(lambda: float(metrics(b)["store_revision"]) >= written)

    out_http = cluster.backend_and_web(backend_cp=a, web_cp=b)
    eventually(lambda: requests.get(f"http://127.0.0.1:{out_http}/", timeout=2).ok, timeout=30)
    # the insight says which instance holds the proxy's stream (written in batches: soon, not at once)
    eventually(lambda: latest_subscription(a, "web-1").get("controlPlaneInstanceId") == instance_id(b))

    # mTLS on through A: B's proxies deny (no permission yet); a permission PUT on A lets traffic in
    r = requests.put(f"{a.url}/meshes/default", json={"type": "Mesh", "name": "default", "mtls": MTLS})
    assert r.status_code == 200, r.text
    eventually(lambda: requests.get(f"http://127.0.0.1:{out_http}/", timeout=2).status_code == 403)
    assert requests.put(f"{a.url}/meshes/default/meshtrafficpermissions/allow-all", json=ALLOW_ALL).status_code == 201
    eventually(lambda: requests.get(f"http://127.0.0.1:{out_http}/", timeout=2).ok)

    # the leader's virtual IPs are every instance's: a transparent proxy gets the same outbounds from both
    tp = {"type": "Dataplane", "mesh": "default", "name": "tp-1", "networking": {
        "address": "127.0.0.1", "inbound": [{"port": free_port(), "servicePort": free_port(),
                                             "tags": {"kuma.io/service": "tp"}}],
        "transparentProxying": {"redirectPortInbound": 15006, "redirectPortOutbound": 15001}}}
    assert requests.put(f"{b.url}/meshes/default/dataplanes/tp-1", json=tp).status_code == 201

    def vip_listeners(cp: CpProcess) -> list[str]:
        listeners = requests.get(f"{cp.url}/meshes/default/dataplanes/tp-1/_config").json()["xds"]["Listener"]
        return sorted(item["name"] for item in listeners if item["name"].startswith("outbound:240."))
    # backend, tp and web, each at its address on port 80
    eventually(lambda: len(vip_listeners(a)) == 3 and vip_listeners(b) == vip_listeners(a), timeout=15)
    assert vip_listeners(a)[0] == "outbound:240.0.0.0:80"


def test_kill_9_of_the_leader_hands_leadership_and_its_jobs_to_another(cluster: Cluster) -> None:
    cluster.start()
    watch = LeaderWatch(cluster)
    first = next(cp for cp in cluster.cps if leader(cp))
    second = next(cp for cp in cluster.cps if cp is not first)
    # a proxy on the leader: when the leader dies, nobody holds its stream any more
    cluster.kuma_dp("lonely-1", first, port=free_port(), servicePort=free_port(), service="lonely",
                    protocol="http", outPort=free_port(), outService="web")
    eventually(lambda: latest_subscription(second, "lonely-1").get("controlPlaneInstanceId") == instance_id(first),
                timeout=30)
    assert not latest_subscription(second, "lonely-1").get("disconnectTime")

    first.kill()
    killed = time.monotonic()
    eventually(lambda: leader(second), timeout=10)
    took = time.monotonic() - killed
    # the new leader's subscription finalizer closes the dead instance's stream: the proxy shows offline
    eventually(lambda: latest_subscription(second, "lonely-1").get("disconnectTime"), timeout=20)

    first.start()   # back, and a follower: leadership does not move back
    time.sleep(2)
    assert leader(second) and not leader(first)
    assert watch.stop() == 1, "two instances were leader at the same time"
    print(f"leadership taken over {took:.1f} s after kill -9")


# Kuma's reconnect backoff (10 s doubling to 60 s) would make this test wait a minute after the outage
@pytest.mark.parametrize("cluster", [(2, {"KUMA_STORE_POSTGRES_MIN_RECONNECT_INTERVAL": "1s",
                                          "KUMA_STORE_POSTGRES_MAX_RECONNECT_INTERVAL": "2s"})], indirect=True)
def test_postgres_outage_keeps_traffic_and_the_instances_recover_alone(cluster: Cluster) -> None:
    a, b = cluster.start().cps
    before = {"type": "Mesh", "name": "before-outage"}
    assert requests.put(f"{a.url}/meshes/before-outage", json=before).status_code == 201
    out_http = cluster.backend_and_web(backend_cp=a, web_cp=b)
    eventually(lambda: requests.get(f"http://127.0.0.1:{out_http}/", timeout=2).ok, timeout=30)

    cluster.postgres.stop()
    try:
        down = time.monotonic()
        eventually(lambda: not ready(a) and not ready(b), timeout=15)
        # a leader that loses the database gives leadership up: nobody leads during the outage
        eventually(lambda: not leader(a) and not leader(b), timeout=5)
        failed = 0
        while time.monotonic() - down < 30:
            try:
                failed += not requests.get(f"http://127.0.0.1:{out_http}/", timeout=2).ok
            except requests.RequestException:
                failed += 1
            time.sleep(0.5)
        assert failed == 0, f"{failed} requests failed while PostgreSQL was down"
        assert a.proc.poll() is None and b.proc.poll() is None
    finally:
        cluster.postgres.start()

    back = time.monotonic()
    eventually(lambda: ready(a) and ready(b), timeout=60)
    print(f"ready again {time.monotonic() - back:.1f} s after PostgreSQL came back")
    eventually(lambda: [leader(a), leader(b)].count(True) == 1, timeout=15)
    assert requests.get(f"{b.url}/meshes/before-outage").status_code == 200
    # changes flow again, from A to B's proxies: mTLS on denies (no permission)
    r = requests.put(f"{a.url}/meshes/default", json={"type": "Mesh", "name": "default", "mtls": MTLS})
    assert r.status_code == 200, r.text
    eventually(lambda: requests.get(f"http://127.0.0.1:{out_http}/", timeout=2).status_code == 403, timeout=30)


POOL = 4


@pytest.mark.parametrize("cluster", [(3, {"KUMA_STORE_POSTGRES_MAX_OPEN_CONNECTIONS": str(POOL)})],
                         indirect=True)
def test_a_connection_storm_stays_within_the_pool_bounds(cluster: Cluster) -> None:
    cluster.start()
    # per instance: the pool, plus the change listener's and the leader election's own connections
    bound = len(cluster.cps) * (POOL + 2)
    most = 0
    stop = threading.Event()

    def load(cp: CpProcess) -> None:
        session = requests.Session()
        while not stop.is_set():
            try:
                session.get(f"{cp.url}/meshes/default/dataplanes", timeout=5)
            except requests.RequestException:
                time.sleep(0.05)

    loaders = [threading.Thread(target=load, args=(cp,), daemon=True) for cp in cluster.cps for _ in range(8)]
    for t in loaders:
        t.start()
    try:
        for cp in cluster.cps:
            cp.stop()
        starters = [threading.Thread(target=cp.start, daemon=True) for cp in cluster.cps]
        for t in starters:
            t.start()
        while any(t.is_alive() for t in starters):
            most = max(most, cluster.connections())
            time.sleep(0.05)
        deadline = time.monotonic() + 5   # and under load once all are up
        while time.monotonic() < deadline:
            most = max(most, cluster.connections())
            time.sleep(0.05)
    finally:
        stop.set()
        for t in loaders:
            t.join()
    assert all(ready(cp) for cp in cluster.cps)
    assert [leader(cp) for cp in cluster.cps].count(True) == 1
    assert 0 < most <= bound, f"{most} connections, more than {bound}"
    print(f"at most {most} connections (bound {bound})")
