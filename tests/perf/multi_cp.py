"""Several kuma-cp instances on one PostgreSQL, a fake-Envoy fleet spread across them.

    .venv/bin/python tests/perf/multi_cp.py [--proxies 300] [--instances 3] [--delta]

A real PostgreSQL (the pgserver wheel, as the tests start it), `kuma-cp migrate up`, then
`--instances` `kuma-cp run` sharing one DP server certificate. The proxies of `fleet.py` (same
Dataplanes, same fake Envoy) are spread evenly: each proxy's channel lists every instance, its own
first (gRPC pick_first), so when its instance dies it reconnects to a survivor, as it would behind
one address. Measured:

- connect: stream open -> first complete config, per instance (one group of proxies after the
  other); CPU and RSS per instance;
- idle: CPU per instance over `--idle-seconds`;
- changes, each made through one instance (round k through instance k mod N): mTLS on, then three
  MeshTrafficPermission changes; PUT answered -> each proxy's ACK of it, split into the proxies of
  the instance that took the write and those of the others (change propagation through PostgreSQL);
- failover: kill -9 of the leader -> another instance reports `leader 1` (/metrics), and -> every
  proxy of the killed instance holds a complete config again from a survivor.

After the changes and after the failover, a sample of proxies must hold exactly what a survivor's
`GET .../dataplanes/<name>/_config` says (fleet.py's check). Prints a table and one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Iterator

import grpc
import requests

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from appliance.ca.server_cert import ensure_server_cert  # noqa: E402
from tests.perf import _fleet_client as fc  # noqa: E402
from tests.perf.fleet import (MESH, MESH_MTLS, WATCHED, Api, Cp, Fleet, Profiler, _address, _terminate,  # noqa: E402
                              check, dataplane, dist, mtp, push_figures, register, service_count, wait_synced)
from tests.support import PostgresServer  # noqa: E402


# gRPC's pick_first tries the next address when the first has not connected within this delay (Happy
# Eyeballs, 250 ms by default, at most 2 s); under a burst of TLS handshakes that moves many proxies
# off their own instance. The longest delay keeps the spread even; a dead instance still fails fast.
_CONNECTION_ATTEMPT_DELAY = ("grpc.happy_eyeballs_connection_attempt_delay_ms", 2000)


def _spread_worker(conn: Connection, mesh: str, names: list[str], opts: fc.Options) -> None:
    """`_fleet_client.worker_main` whose channels wait longest for their first address."""
    secure_channel = grpc.aio.secure_channel

    def channel(target: str, credentials: Any, options: Any = (), *args: Any, **kwargs: Any) -> Any:
        return secure_channel(target, credentials, [*(options or ()), _CONNECTION_ATTEMPT_DELAY], *args, **kwargs)

    grpc.aio.secure_channel = channel
    fc.worker_main(conn, mesh, names, opts)


@contextmanager
def _spread_workers() -> Iterator[None]:
    """Fleets made inside run `_spread_worker` in their processes."""
    worker_main = fc.worker_main
    fc.worker_main = _spread_worker
    try:
        yield
    finally:
        fc.worker_main = worker_main


class Fleets:
    """Several `Fleet`s (one per instance and fallback order) seen as one, for fleet.py's helpers."""

    def __init__(self, fleets: list[Fleet]) -> None:
        self.fleets = fleets
        self.names = [n for f in fleets for n in f.names]

    def call(self, command: str, *args: Any) -> list[Any]:
        return [part for f in self.fleets for part in f.call(command, *args)]

    merged = Fleet.merged   # it only needs `call`

    def status(self, since: float = 0.0) -> dict:
        parts = [f.status(since) for f in self.fleets]
        total = {k: sum(p[k] for p in parts) for k in parts[0] if k not in ("last_recv", "errors")}
        total["last_recv"] = max(p["last_recv"] for p in parts)
        total["errors"] = {}
        for p in parts:
            for reason, count in p["errors"].items():
                total["errors"][reason] = total["errors"].get(reason, 0) + count
        return total

    def cpu_seconds(self) -> float:
        return sum(f.cpu_seconds() for f in self.fleets)

    def stop(self) -> None:
        for f in self.fleets:
            f.stop()


def metrics(cp: Cp) -> dict[str, float]:
    text = requests.get(f"http://127.0.0.1:{cp.diag_port}/metrics", timeout=2).text
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name.split("{", 1)[0]] = float(value)
    return out


def instance_id(cp: Cp) -> str:
    text = requests.get(f"http://127.0.0.1:{cp.diag_port}/metrics", timeout=2).text
    return text.split('instance_id="', 1)[1].split('"', 1)[0]


def served_by(cps: list[Cp], alive: list[bool]) -> dict[str, int]:
    """Proxy name -> the instance holding its stream, as the DataplaneInsights say. gRPC's pick_first
    tries the next address when the first is slow to connect (Happy Eyeballs), so under a connection
    burst some proxies land on their second choice."""
    ids = {instance_id(cp): k for k, cp in enumerate(cps) if alive[k]}
    api = Api(next(cp for k, cp in enumerate(cps) if alive[k]).url)
    out: dict[str, int] = {}
    offset: int | None = 0
    while offset is not None:
        page = api.call("GET", f"/meshes/{MESH}/dataplanes/_overview?size=1000&offset={offset}").json()
        for item in page["items"]:
            subs = (item.get("dataplaneInsight") or {}).get("subscriptions") or []
            latest = max(subs, key=lambda s: s["connectTime"], default=None)
            if latest and not latest.get("disconnectTime") and latest["controlPlaneInstanceId"] in ids:
                out[item["name"]] = ids[latest["controlPlaneInstanceId"]]
        offset = offset + len(page["items"]) if page.get("next") else None
    return out


def wait_served(cps: list[Cp], alive: list[bool], names: list[str], timeout: float = 30) -> dict[str, int]:
    """`served_by` once every proxy's insight shows a live instance (insights are written in batches)."""
    deadline = time.monotonic() + timeout
    while True:
        owner = served_by(cps, alive)
        if len(owner) == len(names) or time.monotonic() > deadline:
            return owner
        time.sleep(0.5)


def check_where_served(fleets: Fleets, cps: list[Cp], alive: list[bool], sample: list[str]) -> dict:
    """fleet.py's check, each proxy against the instance holding its stream: a proxy's certificate
    is issued by that instance, so another instance's `_config` shows a different one."""
    owner = wait_served(cps, alive, fleets.names)
    by_instance: dict[int, list[str]] = {}
    for name in sample:
        by_instance.setdefault(owner.get(name, -1), []).append(name)
    if -1 in by_instance:
        return {"ok": False, "error": f"no live instance holds the stream of {by_instance[-1]}"}
    parts = [check(fleets, Api(cps[k].url), names) for k, names in sorted(by_instance.items())]
    total = {key: sum(p[key] for p in parts) for key in ("sample", "resources_compared", "names_mismatch_count",
                                                        "content_mismatch_count", "mismatch_after_nack")}
    total.update(synced=parts[0]["synced"], unsynced=parts[0]["unsynced"], ok=all(p["ok"] for p in parts),
                 content_mismatch=[m for p in parts for m in p["content_mismatch"]][:5],
                 names_mismatch=[m for p in parts for m in p["names_mismatch"]][:5])
    return total


def is_leader(cp: Cp) -> bool:
    try:
        return metrics(cp).get("leader") == 1.0
    except requests.RequestException:
        return False


def per_instance(cps: list[Cp], alive: list[bool], cpu0: list[float], wall: float | None = None) -> list[dict]:
    out = []
    for k, cp in enumerate(cps):
        if not alive[k]:
            out.append({"instance": k, "alive": False})
            continue
        cpu = cp.cpu_seconds() - cpu0[k]
        row = {"instance": k, "alive": True, "rss_mb": round(cp.rss_mb(), 1), "cpu_s": round(cpu, 2),
               "streams": int(metrics(cp).get("xds_streams_active", 0))}
        if wall:
            row["cpu_pct"] = round(100 * cpu / wall, 1)
        out.append(row)
    return out


class Bench:
    def __init__(self, args: argparse.Namespace, cps: list[Cp], fleets: Fleets, postgres: PostgresServer,
                 db: str) -> None:
        self.args, self.cps, self.fleets = args, cps, fleets
        self.owner: dict[str, int] = {}      # proxy -> the instance holding its stream
        self.postgres, self.db = postgres, db
        self.n = len(fleets.names)
        self.alive = [True] * len(cps)
        self.timeout = 60 + self.n * 0.1

    def cpu(self) -> list[float]:
        return [cp.cpu_seconds() if self.alive[k] else 0.0 for k, cp in enumerate(self.cps)]

    def connect(self) -> dict:
        """One group of proxies after the other (each group's first choice is one instance): a burst of
        every proxy at once would send many to their second choice (see _CONNECTION_ATTEMPT_DELAY)."""
        cpu0 = self.cpu()
        t0 = time.monotonic()
        for fleet in self.fleets.fleets:
            started = time.monotonic()
            fleet.call("start")
            wait_synced(fleet, self.timeout, started, updated=len(fleet.names), quiet=0.0)
        status = wait_synced(self.fleets, self.timeout, t0, updated=self.n)
        data = self.fleets.merged("connect")
        self.owner = wait_served(self.cps, self.alive, self.fleets.names)
        out: dict[str, Any] = {"timed_out": status["timed_out"], "errors": status["errors"]}
        done = [c for _, c, _ in data.values() if c]
        out["all_complete_s"] = round(max(done) - t0, 3) if done else None
        out["first_config_ms"] = dist([c - o for o, c, _ in data.values() if c])
        out["by_instance"] = [dict(first_config_ms=dist([c - o for nm, (o, c, _) in data.items()
                                                         if c and self.owner.get(nm) == k]), **row)
                              for k, row in enumerate(per_instance(self.cps, self.alive, cpu0))]
        return out

    def idle(self) -> dict:
        cpu0, t0 = self.cpu(), time.monotonic()
        time.sleep(self.args.idle_seconds)
        return {"seconds": self.args.idle_seconds,
                "by_instance": per_instance(self.cps, self.alive, cpu0, time.monotonic() - t0)}

    def change(self, via: int, what: str, path: str, body: dict) -> dict:
        api = Api(self.cps[via].url)
        cpu0 = self.cpu()
        t0 = time.monotonic()
        api.call("PUT", path, body)
        t1 = time.monotonic()
        status = wait_synced(self.fleets, self.timeout, t0, updated=self.n)
        events = self.fleets.merged("events", t0)
        out = {"change": what, "via_instance": via, "put_ms": round((t1 - t0) * 1000, 1),
               "timed_out": status["timed_out"], "all": push_figures(events, t1, t0, self.n)["ack_ms"]}
        same = {nm: ev for nm, ev in events.items() if self.owner.get(nm) == via}
        other = {nm: ev for nm, ev in events.items() if self.owner.get(nm) != via}
        out["same_instance"] = push_figures(same, t1, t0, len(same))["ack_ms"]
        out["other_instances"] = push_figures(other, t1, t0, len(other))["ack_ms"]
        out["by_instance"] = per_instance(self.cps, self.alive, cpu0)
        return out

    def changes(self) -> list[dict]:
        n = len(self.cps)
        rounds = [self.change(0, "mTLS on", f"/meshes/{MESH}", MESH_MTLS)]
        for k, (what, deny) in enumerate([("create allow-all", None), ("add Deny from svc-1", "svc-1"),
                                          ("remove the Deny", None)], 1):
            rounds.append(self.change(k % n, what, f"/meshes/{MESH}/meshtrafficpermissions/fleet-allow",
                                      mtp("fleet-allow", deny)))
        return rounds

    def failover(self) -> dict:
        leader = next((k for k, cp in enumerate(self.cps) if is_leader(cp)), None)
        if leader is None:
            return {"error": "no instance reports leader 1"}
        self.owner = served_by(self.cps, self.alive)
        moved = [nm for nm in self.fleets.names if self.owner.get(nm) == leader]
        survivors = [k for k in range(len(self.cps)) if k != leader]
        t_kill = time.monotonic()
        self.cps[leader].kill()
        self.alive[leader] = False
        new_leader, t_leader = None, None
        while time.monotonic() - t_kill < 60:
            new_leader = next((k for k in survivors if is_leader(self.cps[k])), None)
            if new_leader is not None:
                t_leader = time.monotonic()
                break
            time.sleep(0.02)
        status = wait_synced(self.fleets, self.timeout, t_kill)
        streams = self.fleets.merged("streams")
        resynced = [streams[nm][3] - t_kill for nm in moved if streams[nm][3] >= t_kill]
        return {"killed_instance": leader, "new_leader": new_leader,
                "leader_takeover_s": round(t_leader - t_kill, 3) if t_leader else None,
                "proxies_moved": len(moved), "resynced_ms": dist(resynced),
                "all_resynced_s": round(max(resynced), 3) if resynced else None,
                "not_resynced": len(moved) - len(resynced), "timed_out": status["timed_out"],
                "by_instance": per_instance(self.cps, self.alive, [0.0] * len(self.cps))}

    def connections(self) -> int:
        return int(self.postgres.sql(f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{self.db}'"))


def print_table(results: dict) -> None:
    def f(v: Any) -> str:
        return "-" if v is None else str(v)

    print(f"{'phase':<22} {'metric':<30} {'p50':>8} {'p99':>8} {'max':>8}  note")

    def row(phase: str, metric: str, d: dict | None, note: str = "") -> None:
        d = d or {}
        print(f"{phase:<22} {metric:<30} {f(d.get('p50')):>8} {f(d.get('p99')):>8} {f(d.get('max')):>8}  {note}")

    c = results.get("connect")
    if c:
        row("connect", "open -> first config ms", c["first_config_ms"], f"all complete in {c['all_complete_s']} s")
        for i in c["by_instance"]:
            row(f"  instance {i['instance']}", "open -> first config ms", i["first_config_ms"],
                f"{i['streams']} streams, RSS {i['rss_mb']} MB, CPU {i['cpu_s']} s")
    for i in results.get("idle", {}).get("by_instance", []):
        row(f"idle instance {i['instance']}", f"over {results['idle']['seconds']} s", None,
            f"CPU {i['cpu_pct']} % of a core, RSS {i['rss_mb']} MB")
    for r in results.get("changes", []):
        row(f"{r['change']} (via {r['via_instance']})", "PUT -> last ACK ms, all", r["all"],
            f"PUT {r['put_ms']} ms" + (", TIMED OUT" if r["timed_out"] else ""))
        row("", "  same instance", r["same_instance"])
        row("", "  other instances", r["other_instances"])
    fo = results.get("failover")
    if fo and "error" not in fo:
        row("failover", "kill -9 -> leader 1 elsewhere", None,
            f"{fo['leader_takeover_s']} s (instance {fo['killed_instance']} -> {fo['new_leader']})")
        row("failover", "kill -9 -> proxy resynced ms", fo["resynced_ms"],
            f"{fo['proxies_moved']} proxies moved, all in {fo['all_resynced_s']} s, "
            f"not resynced {fo['not_resynced']}")
        for i in fo["by_instance"]:
            if i["alive"]:
                row(f"  instance {i['instance']}", "after failover", None,
                    f"{i['streams']} streams, RSS {i['rss_mb']} MB, CPU total {i['cpu_s']} s")
    elif fo:
        print(f"failover: {fo['error']}")
    for name, chk in results.get("checks", {}).items():
        if "error" in chk:
            print(f"check {name}: FAILED: {chk['error']}")
            continue
        print(f"check {name}: {'ok' if chk['ok'] else 'FAILED'}: synced {chk['synced']}, sample {chk['sample']} "
              f"({chk['resources_compared']} resources), names mismatch {chk['names_mismatch_count']}, "
              f"content mismatch {chk['content_mismatch_count']}")
    if "db_connections" in results:
        print(f"PostgreSQL sessions on the database at the end: {results['db_connections']}")


def _progress(what: str, result: Any) -> Any:
    print(f"[multi_cp] {what}: {json.dumps(result)}", file=sys.stderr, flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proxies", type=int, default=300)
    parser.add_argument("--instances", type=int, default=3)
    parser.add_argument("--delta", action="store_true", help="delta xDS instead of state of the world")
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--max-open-connections", type=int, default=50, help="store.postgres.maxOpenConnections")
    parser.add_argument("--cp-log-level", default="warning")
    parser.add_argument("--sample", type=int, default=20, help="proxies checked against a survivor's _config")
    parser.add_argument("--work-dir", help="kept afterwards (default: a temporary one, removed)")
    parser.add_argument("--py-spy", metavar="PATH", help="a py-spy binary: profile instance 1 during the changes")
    args = parser.parse_args()
    if args.instances < 2:
        parser.error("--instances must be at least 2 (one is killed)")
    signal.signal(signal.SIGTERM, _terminate)

    n, k_count = args.proxies, args.instances
    services = service_count(n)
    names = [f"dp-{i}" for i in range(n)]
    sample = names[:: max(1, n // args.sample)][: args.sample]
    results: dict[str, Any] = {"checks": {}}
    postgres = PostgresServer()
    cps: list[Cp] = []
    fleets: Fleets | None = None
    with tempfile.TemporaryDirectory(prefix="kuma-multi-cp-") as tmp:
        work = Path(args.work_dir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        try:
            db = postgres.database()
            cert = ensure_server_cert(work / "dp-server", ["localhost"], ["127.0.0.1"])
            env = {**postgres.env(db), "KUMA_DP_SERVER_AUTHN_DP_PROXY_TYPE": "none",
                   "KUMA_DP_SERVER_TLS_CERT_FILE": str(cert.cert_path), "KUMA_DP_SERVER_TLS_KEY_FILE": str(cert.key_path),
                   "KUMA_STORE_POSTGRES_MAX_OPEN_CONNECTIONS": str(args.max_open_connections),
                   **({"KUMA_EXPERIMENTAL_DELTA_XDS": "true"} if args.delta else {})}
            subprocess.run([sys.executable, "-m", "appliance", "migrate", "up"], env={**os.environ, **env},
                           cwd=ROOT, check=True, capture_output=True)
            for k in range(k_count):
                (work / f"cp-{k}").mkdir(exist_ok=True)
                cps.append(Cp(work / f"cp-{k}", env, args.cp_log_level))
            results["cp_start_s"] = [round(cp.start(), 3) for cp in cps]
            bodies = [dataplane(nm, _address(i), i % services, services) for i, nm in enumerate(names)]
            results["register_s"] = round(register(Api(cps[0].url), bodies), 3)

            # proxy i connects to instance i mod K first; its fallbacks alternate so that a dead
            # instance's proxies spread over the survivors
            groups: dict[tuple[int, int], list[str]] = {}
            for i, nm in enumerate(names):
                groups.setdefault((i % k_count, (i // k_count) % 2), []).append(nm)
            fleet_list = []
            for (k, turn), members in sorted(groups.items()):
                order = [(k + d) % k_count for d in range(k_count)]
                order = order[:1] + (order[1:] if turn == 0 else order[:0:-1])
                target = "ipv4:" + ",".join(f"127.0.0.1:{cps[j].dp_port}" for j in order)
                opts = fc.Options(target=target, ca_pem=cert.ca_pem, delta=args.delta, watch_cluster=WATCHED,
                                  keep_raw=frozenset(sample))
                with _spread_workers():
                    fleet_list.append(Fleet(members, 1, opts))
            fleets = Fleets(fleet_list)
            bench = Bench(args, cps, fleets, postgres, db)
            results["connect"] = _progress("connect", bench.connect())
            if results["connect"]["timed_out"]:
                results["aborted"] = "the fleet never got in sync after connecting"
            else:
                results["idle"] = _progress("idle", bench.idle())
                profiler = Profiler(args.py_spy, work / "profiles")
                with profiler.phase("changes", cps[1].proc.pid):
                    results["changes"] = _progress("changes", bench.changes())
                if args.py_spy:
                    results["profile"] = {k: v[:15] for k, v in profiler.report().items()}
                results["checks"]["changes"] = _progress("check", check_where_served(fleets, cps, bench.alive,
                                                                                     sample))
                results["failover"] = _progress("failover", bench.failover())
                results["checks"]["failover"] = _progress("check", check_where_served(fleets, cps, bench.alive,
                                                                                      sample))
                results["db_connections"] = bench.connections()
        finally:
            if fleets is not None:
                fleets.stop()
            for cp in cps:
                cp.stop()
                log = [line for line in cp.log_tail(200).splitlines() if "waitress.queue" not in line]
                if log:
                    print(f"[multi_cp] {cp.work_dir.name} log (last 20 lines):\n" + "\n".join(log[-20:]),
                          file=sys.stderr)
            postgres.close()
    print(f"multi_cp: {n} proxies on {k_count} instances, one PostgreSQL, {services} services, "
          f"{'delta' if args.delta else 'state of the world'} xDS")
    print_table(results)
    print(json.dumps({"benchmark": "multi_cp", "proxies": n, "instances": k_count,
                      "xds": "delta" if args.delta else "sotw", "results": results}))


if __name__ == "__main__":
    main()
