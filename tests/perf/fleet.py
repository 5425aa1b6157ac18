"""Fake-Envoy fleet benchmark: N ADS clients, in P processes of their own, against a real `kuma-cp run`.

    make bench          # or: .venv/bin/python tests/perf/fleet.py --proxies 100 [--scenario all] [--delta]

Every proxy is a real Dataplane (1 inbound `svc-<i % S>` with kuma.io/protocol http, S = N/10
services; 3 outbounds: `svc-0`, which every other service calls, and its two next neighbours) and
speaks ADS like Envoy (`_fleet_client.py`). Scenarios (`--scenario`, comma-separated or `all`):

- connect: all N streams open at once; stream open -> first complete config (CDS, EDS, LDS and the
  RDS/SDS they name); then CP CPU and RSS at idle for `--idle-seconds`.
- policy: mTLS on (a certificate per proxy), then three MeshTrafficPermission changes (create an
  allow-all, add a Deny for one service, remove it); PUT answered -> each proxy's ACK of what changed.
- route: a MeshHTTPRoute canary on svc-0 (weighted MeshServiceSubset backends by `version`) changes its
  weights five times; PUT answered -> the ACK of every proxy that calls svc-0 (p50/p99 per change and
  over all changes). Without `--policy-rich` the route is created first (its own row).
- churn: one dataplane of `svc-0` joins or leaves every second; PUT/DELETE answered -> the ACK of
  the new `svc-0` endpoints by every proxy that calls svc-0.
- restart: kill -9 and restart the CP; CP ready -> every proxy reconnected, answered and complete
  (delta: a resumed proxy that lacks nothing gets no answer; its stream's reopening counts).

`--policy-rich` (tests/perf/_rich_mesh.py): 50 services (HTTP, every tenth TCP) in two versions,
5 outbounds per proxy, and 51 policies of every type the API serves, created before the fleet connects.

After each scenario the fleet must be quiet and complete (every name it subscribed was delivered),
and a sample of proxies must hold exactly what `GET .../dataplanes/<name>/_config` says (names and
content). The CP runs with `dpServer.authn.dpProxy.type: none` unless `--auth token`.

Prints a table and one JSON line. CP and fleet share the machine: on 2 cores the fleet's CPU
(reported) is taken from the CP, so the figures are a floor.
"""
from __future__ import annotations

import argparse
import importlib
import json
import math
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

import requests

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.perf import _fleet_client as fc  # noqa: E402
from tests.perf import _rich_mesh as rich  # noqa: E402
from tests.support import free_port  # noqa: E402

MESH = "default"
WATCHED = "svc-0"
_TICK = os.sysconf("SC_CLK_TCK")


# --- the control plane -------------------------------------------------------------------------

class Cp:
    def __init__(self, work_dir: Path, env: dict[str, str], log_level: str = "warning") -> None:
        self.work_dir = work_dir
        self.log_level = log_level
        self.api_port, self.diag_port, self.dp_port = free_port(), free_port(), free_port()
        self.env = {**os.environ, "KUMA_GENERAL_WORK_DIR": str(work_dir),
                    "KUMA_API_SERVER_HTTP_PORT": str(self.api_port),
                    "KUMA_DIAGNOSTICS_SERVER_PORT": str(self.diag_port), "KUMA_MONITORING_ASSIGNMENT_SERVER_PORT": str(free_port()),
                    "KUMA_DP_SERVER_PORT": str(self.dp_port), "KUMA_API_SERVER_HTTPS_PORT": str(free_port()), **env}
        self.url = f"http://127.0.0.1:{self.api_port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> float:
        t0 = time.monotonic()
        log = open(self.work_dir / "kuma-cp.log", "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "appliance", "run", "--log-level", self.log_level],
                                     env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"kuma-cp exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if requests.get(f"http://127.0.0.1:{self.diag_port}/ready", timeout=1).status_code == 200:
                    return time.monotonic() - t0
            except requests.RequestException:
                pass
            time.sleep(0.02)
        raise RuntimeError(f"kuma-cp not ready in {timeout}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        path = self.work_dir / "kuma-cp.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def cpu_seconds(self) -> float:
        return _cpu_seconds(self.proc.pid)

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK   # utime + stime, all threads


class Api:
    """Thread-safe: one requests.Session per thread."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._local = threading.local()

    def _session(self) -> requests.Session:
        if not hasattr(self._local, "s"):
            self._local.s = requests.Session()
        return self._local.s

    def call(self, method: str, path: str, body: Any = None, ok: Iterable[int] = (200, 201)) -> requests.Response:
        r = self._session().request(method, self.url + path, json=body, timeout=60)
        if r.status_code not in ok:
            raise RuntimeError(f"{method} {path}: {r.status_code} {r.text[:500]}")
        return r


class Profiler:
    """`--py-spy PATH`: sample the CP with py-spy during each phase (collapsed stacks, one file per phase)."""

    def __init__(self, binary: str | None, out_dir: Path) -> None:
        self.binary, self.out_dir = binary, out_dir
        self.files: dict[str, Path] = {}
        if binary:
            out_dir.mkdir(parents=True, exist_ok=True)

    @contextmanager
    def phase(self, name: str, pid: int) -> Iterator[None]:
        if not self.binary:
            yield
            return
        path = self.out_dir / f"cp-{name}.txt"
        proc = subprocess.Popen([self.binary, "record", "--pid", str(pid), "--rate", "100", "--format", "raw",
                                 "--threads", "--nonblocking", "--output", str(path)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            yield
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            self.files[name] = path

    def report(self) -> dict[str, list[tuple[str, float]]]:
        """Per phase, the functions on most samples (inclusive %), printed to stderr and returned."""
        out = {}
        for name, path in self.files.items():
            if not path.exists():
                continue
            out[name] = top_frames(path)
            print(f"[fleet] CP profile of {name} ({path}), share of samples:", file=sys.stderr)
            for frame, share in out[name]:
                print(f"    {share:5.1f} %  {frame}", file=sys.stderr)
        return out


def top_frames(path: Path, count: int = 25) -> list[tuple[str, float]]:
    """The functions (and threads) on most sampled stacks of a py-spy raw file; py-spy leaves idle out."""
    inclusive: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        total += int(n)
        seen = set()
        for frame in stack.split(";"):
            name, _, where = frame.partition(" (")
            key = frame if name == "thread" else f"{name} ({where.rsplit(':', 1)[0]})" if where else name
            if key not in seen:
                seen.add(key)
                inclusive[key] = inclusive.get(key, 0) + int(n)
    ranked = sorted(inclusive.items(), key=lambda kv: -kv[1])[:count]
    return [(frame, round(100 * n / total, 1)) for frame, n in ranked] if total else []


# --- the workload ------------------------------------------------------------------------------

def service_count(n: int) -> int:
    return max(4, n // 10)


def outbound_services(own: int, services: int) -> list[int]:
    if own == 0:
        return [1, 2, 3]
    neighbours = [k % services for k in range(own + 1, own + 4) if k % services not in (0, own)]
    return [0] + neighbours[:2]


def _address(i: int, net: int = 10) -> str:
    i += 1
    return f"{net}.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}"


def dataplane(name: str, address: str, own: int, services: int, outbounds: bool = True) -> dict:
    networking: dict[str, Any] = {
        "address": address,
        "inbound": [{"port": 8080, "servicePort": 18080,
                     "tags": {"kuma.io/service": f"svc-{own}", "kuma.io/protocol": "http"}}]}
    if outbounds:
        networking["outbound"] = [{"port": 10001 + j, "tags": {"kuma.io/service": f"svc-{s}"}}
                                  for j, s in enumerate(outbound_services(own, services))]
    return {"type": "Dataplane", "mesh": MESH, "name": name, "networking": networking}


def create_policies(api: Api, observability: str) -> dict:
    """The policy-rich mesh's policies, each a new one (201); the API's warnings (stored only, deprecations)."""
    t0 = time.monotonic()
    stored_only: dict[str, int] = {}
    by_type: dict[str, int] = {}
    for path, kind, name, spec in rich.policies(observability):
        body = {"type": kind, "mesh": MESH, "name": name, "spec": spec}
        answer = api.call("PUT", f"/meshes/{MESH}/{path}/{name}", body, ok=(201,)).json()
        by_type[kind] = by_type.get(kind, 0) + 1
        for warning in answer.get("warnings") or ():
            stored_only[warning] = stored_only.get(warning, 0) + 1
    return {"policies": sum(by_type.values()), "by_type": by_type, "warnings": stored_only,
            "seconds": round(time.monotonic() - t0, 3)}


def register(api: Api, bodies: list[dict]) -> float:
    t0 = time.monotonic()
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(lambda b: api.call("PUT", f"/meshes/{MESH}/dataplanes/{b['name']}", b), bodies))
    return time.monotonic() - t0


def mtp(name: str, deny_service: str | None) -> dict:
    rules: list[dict] = [{"targetRef": {"kind": "Mesh"}, "default": {"action": "Allow"}}]
    if deny_service:
        rules.append({"targetRef": {"kind": "MeshSubset", "tags": {"kuma.io/service": deny_service}},
                      "default": {"action": "Deny"}})
    return {"type": "MeshTrafficPermission", "mesh": MESH, "name": name,
            "spec": {"targetRef": {"kind": "Mesh"}, "from": rules}}


MESH_MTLS = {"type": "Mesh", "name": MESH,
             "mtls": {"enabledBackend": "ca-1", "backends": [{"name": "ca-1", "type": "builtin"}]}}


# --- the fleet ---------------------------------------------------------------------------------

class Fleet:
    def __init__(self, names: list[str], processes: int, opts: fc.Options) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.names = names
        self.conns, self.procs = [], []
        for k in range(processes):
            share = names[k::processes]
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=fc.worker_main, args=(child, MESH, share, opts), daemon=True)
            proc.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(proc)
        for conn in self.conns:
            if conn.recv() != "ready":
                raise RuntimeError("a fleet process did not start")

    def call(self, command: str, *args: Any) -> list[Any]:
        for conn in self.conns:
            conn.send((command, *args))
        return [conn.recv() for conn in self.conns]

    def merged(self, command: str, *args: Any) -> dict:
        out: dict = {}
        for part in self.call(command, *args):
            out.update(part)
        return out

    def status(self, since: float = 0.0) -> dict:
        parts = self.call("status", since)
        total = {k: sum(p[k] for p in parts) for k in ("clients", "connected", "complete", "synced",
                                                         "responded_since", "updated_since", "responses", "nacks",
                                                         "reconnects")}
        total["last_recv"] = max(p["last_recv"] for p in parts)
        errors: dict[str, int] = {}
        for p in parts:
            for k, v in p["errors"].items():
                errors[k] = errors.get(k, 0) + v
        total["errors"] = errors
        return total

    def cpu_seconds(self) -> float:
        return sum(_cpu_seconds(p.pid) for p in self.procs)

    def stop(self) -> None:
        try:
            self.call("stop")
        except (BrokenPipeError, EOFError, OSError):
            pass
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()


QUIET = 1.0   # seconds without any response that count as "the CP is done" (--quiet)


def wait_synced(fleet: Fleet, timeout: float, start: float, updated: int = 0, new_streams: bool = False,
                quiet: float | None = None) -> dict:
    """Until every proxy is synced, at least `updated` proxies got a response since `start` (all of them
    on a new stream with `new_streams`), and no response came for `quiet` seconds, counted from `start`
    at the earliest (a CP that has not begun to push is not a quiet one)."""
    n = len(fleet.names)
    quiet = QUIET if quiet is None else quiet
    deadline = time.monotonic() + timeout
    last_responses = -1
    while True:
        s = fleet.status(start)
        now = time.monotonic()
        ready = (s["synced"] == n and s["updated_since"] >= updated
                 and (not new_streams or s["responded_since"] == n))
        if ready and now - max(s["last_recv"], start) >= quiet and s["responses"] == last_responses:
            s["timed_out"] = False
            return s
        if now > deadline:
            s["timed_out"] = True
            return s
        last_responses = s["responses"]
        time.sleep(0.25)


# --- figures -----------------------------------------------------------------------------------

def dist(values: list[float], scale: float = 1000.0) -> dict:
    """min/p50/p99/max in ms (by default) of a list of seconds."""
    if not values:
        return {"n": 0, "min": None, "p50": None, "p99": None, "max": None}
    v = sorted(values)
    return {"n": len(v), "min": round(v[0] * scale, 1), "p50": round(statistics.median(v) * scale, 1),
            "p99": round(v[min(len(v) - 1, int(len(v) * 0.99))] * scale, 1), "max": round(v[-1] * scale, 1)}


def push_figures(events: dict[str, list[tuple]], t_done: float, t_start: float, n: int,
                 collect: list[float] | None = None) -> dict:
    """Per proxy: the ACK of the last response received since the change started (its convergence);
    these latencies also go to `collect`."""
    latencies, from_start, per_proxy_bytes, types, nacked = [], [], [], {}, 0
    for name, evs in events.items():
        if not evs:
            continue
        last = max(evs, key=lambda e: e[2])
        latencies.append(last[2] - t_done)
        from_start.append(last[2] - t_start)
        per_proxy_bytes.append(sum(e[3] for e in evs))
        nacked += sum(1 for e in evs if e[4])
        for e in evs:
            key = fc.SHORT[e[0]]
            types[key] = types.get(key, 0) + 1
    if collect is not None:
        collect.extend(latencies)
    return {"ack_ms": dist(latencies), "from_put_start_ms": dist(from_start), "proxies_updated": len(latencies),
            "proxies_not_updated": n - len(latencies), "responses_by_type": types, "nacked": nacked,
            "bytes_per_proxy": round(statistics.mean(per_proxy_bytes)) if per_proxy_bytes else 0}


# --- checks ------------------------------------------------------------------------------------

def _first_difference(held: Any, expected: Any, path: str = "") -> str:
    """Where the proxy's copy of a resource first differs from the control plane's `_config`, for a report."""
    if isinstance(held, dict) and isinstance(expected, dict):
        for key in sorted(set(held) | set(expected)):
            if held.get(key) != expected.get(key):
                return _first_difference(held.get(key), expected.get(key), f"{path}.{key}")
    if isinstance(held, list) and isinstance(expected, list) and len(held) == len(expected):
        for i, (a, b) in enumerate(zip(held, expected)):
            if a != b:
                return _first_difference(a, b, f"{path}[{i}]")
    return f"{path}: proxy {json.dumps(held)[:200]} / control plane {json.dumps(expected)[:200]}"


_KIND = {"Listener": "LDS", "Cluster": "CDS", "ClusterLoadAssignment": "EDS", "RouteConfiguration": "RDS",
         "Secret": "SDS"}


def check(fleet: Fleet, api: Api, sample: list[str]) -> dict:
    """Nothing lost or stuck: every proxy synced; the sample holds what the CP's `_config` says."""
    from google.protobuf import json_format
    importlib.import_module("appliance.xds.generate")   # registers every message type the CP packs into Any
    classes = {"CDS": fc.cluster_pb2.Cluster, "EDS": fc.endpoint_pb2.ClusterLoadAssignment,
               "LDS": fc.listener_pb2.Listener, "RDS": fc.route_pb2.RouteConfiguration, "SDS": fc.secret_pb2.Secret}
    resources: dict = {}
    unsynced: dict = {}
    for part in fleet.call("final"):
        resources.update(part["resources"])
        unsynced.update(part["unsynced"])
    names_mismatch, content_mismatch, explained_by_nack, compared = [], [], [], 0
    for name in sample:
        cfg = api.call("GET", f"/meshes/{MESH}/dataplanes/{name}/_config").json()["xds"]
        mine = resources.get(name)
        if mine is None:
            continue
        for kind, short in _KIND.items():
            expected = {(item.get("name") or item.get("clusterName")): item for item in cfg.get(kind, [])}
            got = mine["received"][short]
            if set(expected) != set(got):
                entry = {"proxy": name, "type": short, "cp_only": sorted(set(expected) - set(got)),
                         "proxy_only": sorted(set(got) - set(expected))}
                (explained_by_nack if short in mine["nacked_last"] else names_mismatch).append(entry)
                continue
            if short == "SDS":
                continue   # the view holds placeholders for certificates and keys (xds/placeholders.py): names only
            for rname, item in expected.items():
                compared += 1
                body = {k: v for k, v in item.items() if k != "@type"}
                message = classes[short].FromString(got[rname])
                held = json_format.MessageToDict(message)
                if held != body:
                    content_mismatch.append({"proxy": name, "type": short, "resource": rname,
                                             "differs": _first_difference(held, body)})
    return {"synced": len(fleet.names) - len(unsynced), "unsynced": len(unsynced),
            "unsynced_examples": dict(list(unsynced.items())[:3]), "sample": len(sample),
            "resources_compared": compared, "names_mismatch": names_mismatch[:5],
            "names_mismatch_count": len(names_mismatch), "content_mismatch": content_mismatch[:5],
            "content_mismatch_count": len(content_mismatch), "mismatch_after_nack": len(explained_by_nack),
            "ok": not unsynced and not names_mismatch and not content_mismatch}


# --- scenarios ---------------------------------------------------------------------------------

class Bench:
    def __init__(self, args: argparse.Namespace, cp: Cp, api: Api, fleet: Fleet, profiler: Profiler,
                 services: int) -> None:
        self.args, self.cp, self.api, self.fleet, self.profiler = args, cp, api, fleet, profiler
        self.services = services
        self.n = len(fleet.names)
        self.timeout = 60 + self.n * 0.1
        self.mtls = False

    def connect(self) -> dict:
        cpu0, fleet0 = self.cp.cpu_seconds(), self.fleet.cpu_seconds()
        with self.profiler.phase("connect", self.cp.proc.pid):
            t0 = time.monotonic()
            self.fleet.call("start")
            status = wait_synced(self.fleet, self.timeout, t0, updated=self.n)
        data = self.fleet.merged("connect")
        firsts = [c - o for o, c, _ in data.values() if c]
        done = [c for _, c, _ in data.values() if c]
        out = {"first_config_ms": dist(firsts), "all_complete_s": round(max(done) - t0, 3) if done else None,
               "incomplete": self.n - len(firsts),
               "bytes_per_proxy": round(statistics.mean(b for _, c, b in data.values() if c)) if firsts else 0,
               "cp_cpu_s": round(self.cp.cpu_seconds() - cpu0, 2),
               "fleet_cpu_s": round(self.fleet.cpu_seconds() - fleet0, 2),
               "cp_rss_mb": round(self.cp.rss_mb(), 1), "timed_out": status["timed_out"], "errors": status["errors"],
               "reconnects": status["reconnects"]}
        if status["timed_out"]:
            out["status"] = status
        return out

    def idle(self) -> dict:
        seconds = self.args.idle_seconds
        before = self.fleet.status()
        cpu0, t0 = self.cp.cpu_seconds(), time.monotonic()
        time.sleep(seconds)
        cpu = self.cp.cpu_seconds() - cpu0
        wall = time.monotonic() - t0
        after = self.fleet.status()
        return {"seconds": seconds, "cp_cpu_pct": round(100 * cpu / wall, 2), "cp_rss_mb": round(self.cp.rss_mb(), 1),
                "responses_during_idle": after["responses"] - before["responses"]}

    def _change(self, phase: str, method: str, path: str, body: Any, updated: int,
                collect: list[float] | None = None) -> dict:
        """A change that must reach `updated` proxies (each gets at least one response)."""
        with self.profiler.phase(phase, self.cp.proc.pid):
            t0 = time.monotonic()
            cpu0, fleet0 = self.cp.cpu_seconds(), self.fleet.cpu_seconds()
            self.api.call(method, path, body)
            t1 = time.monotonic()
            status = wait_synced(self.fleet, self.timeout, t0, updated=updated)
        events = self.fleet.merged("events", t0)
        out = push_figures(events, t1, t0, self.n, collect)
        out.update(put_ms=round((t1 - t0) * 1000, 1), cp_cpu_s=round(self.cp.cpu_seconds() - cpu0, 2),
                   fleet_cpu_s=round(self.fleet.cpu_seconds() - fleet0, 2), timed_out=status["timed_out"])
        return out

    def policy(self) -> dict:
        out: dict[str, Any] = {}
        out["mtls_on"] = self._change("mtls-on", "PUT", f"/meshes/{MESH}", MESH_MTLS, self.n)
        out["mtls_on"]["cp_rss_mb"] = round(self.cp.rss_mb(), 1)
        self.mtls = True
        rounds = [("create allow-all", None), ("add Deny from svc-1", "svc-1"), ("remove the Deny", None)]
        out["rounds"] = []
        for k, (what, deny) in enumerate(rounds, 1):
            r = self._change(f"policy-{k}", "PUT", f"/meshes/{MESH}/meshtrafficpermissions/fleet-allow",
                             mtp("fleet-allow", deny), self.n)
            r["change"] = what
            out["rounds"].append(r)
        out["cp_rss_mb"] = round(self.cp.rss_mb(), 1)
        return out

    def route(self) -> dict:
        """The canary MeshHTTPRoute on svc-0 changes its weights: every proxy calling svc-0 must ACK it."""
        path = f"/meshes/{MESH}/meshhttproutes/{rich.CANARY}"
        callers = sum(1 for i in range(self.n) if i % self.services != 0)
        out: dict[str, Any] = {"callers": callers}
        if not self.args.policy_rich:
            out["create"] = self._change("route-create", "PUT", path, rich.canary_body(MESH, 90, 10), callers)
        pooled: list[float] = []
        out["rounds"] = []
        for k, (v1, v2) in enumerate(rich.CANARY_ROUNDS, 1):
            r = self._change(f"route-{k}", "PUT", path, rich.canary_body(MESH, v1, v2), callers, pooled)
            r["change"] = f"weights v1/v2 {v1}/{v2}"
            out["rounds"].append(r)
        out["ack_ms"] = dist(pooled)   # every ACK of every change
        out["last_ack_ms"] = dist([r["ack_ms"]["max"] / 1000 for r in out["rounds"] if r["ack_ms"]["max"] is not None])
        out["cp_rss_mb"] = round(self.cp.rss_mb(), 1)
        return out

    def _churn(self, seconds: int, services: int, base: int, changes: list) -> tuple[float, float, float]:
        cpu0, fleet0, t_begin = self.cp.cpu_seconds(), self.fleet.cpu_seconds(), time.monotonic()
        for k in range(seconds):
            time.sleep(max(0.0, t_begin + k - time.monotonic()))
            name = f"churn-{k // 2}"
            t0 = time.monotonic()
            if k % 2 == 0:
                self.api.call("PUT", f"/meshes/{MESH}/dataplanes/{name}",
                              dataplane(name, _address(k // 2, 11), 0, services, outbounds=False))
                expected = base + 1
            else:
                self.api.call("DELETE", f"/meshes/{MESH}/dataplanes/{name}")
                expected = base
            changes.append((t0, time.monotonic(), expected))
        time.sleep(max(0.0, t_begin + seconds - time.monotonic()))
        wall = time.monotonic() - t_begin
        return (t_begin, 100 * (self.cp.cpu_seconds() - cpu0) / wall,
                100 * (self.fleet.cpu_seconds() - fleet0) / wall)

    def churn(self) -> dict:
        """A dataplane of svc-0 joins (even seconds) or leaves (odd): every proxy calling svc-0 must see it."""
        services = self.services
        base = sum(1 for i in range(self.n) if i % services == 0)
        affected = [nm for i, nm in enumerate(self.fleet.names) if i % services != 0]
        changes: list[tuple[float, float, int]] = []   # (start, answered, svc-0 endpoints after it)
        with self.profiler.phase("churn", self.cp.proc.pid):
            t_begin, cpu_pct, fleet_cpu_pct = self._churn(self.args.churn_seconds, services, base, changes)
        status = wait_synced(self.fleet, self.timeout, changes[-1][0] if changes else t_begin)
        events = self.fleet.merged("events", t_begin)
        eds = fc.TYPES.index(fc.EDS)
        latencies, last_per_change, missed, nacked = [], [], 0, 0
        for k, (t0, t1, expected) in enumerate(changes):
            # the same endpoint count comes back two changes later: a later match is not this change's
            until = changes[k + 2][0] if k + 2 < len(changes) else float("inf")
            worst = 0.0
            for name in affected:
                hit = next((e for e in events[name] if e[0] == eds and e[1] >= t0 and e[5] == expected), None)
                if hit is None or hit[1] >= until:
                    missed += 1   # never held this state: coalesced with the next change (or lost: see the check)
                    continue
                if hit[4]:
                    nacked += 1   # delivered, refused by the fake Envoy: no ACK to time
                    continue
                latencies.append(hit[2] - t1)
                worst = max(worst, hit[2] - t1)
            last_per_change.append(worst)
        bytes_total = sum(e[3] for evs in events.values() for e in evs)
        eds_sizes = [e[7] for evs in events.values() for e in evs if e[0] == eds]
        types: dict[str, int] = {}
        for evs in events.values():
            for e in evs:
                types[fc.SHORT[e[0]]] = types.get(fc.SHORT[e[0]], 0) + 1
        return {"changes": len(changes), "affected_proxies": len(affected), "eds_ack_ms": dist(latencies),
                "last_proxy_ms": dist(last_per_change), "not_seen": missed, "nacked": nacked,
                "responses_by_type": types,
                # resources per EDS response: all the proxy's load assignments (SotW) or the changed one (delta)
                "eds_resources_per_response": {"mean": round(statistics.mean(eds_sizes), 2) if eds_sizes else None,
                                               "max": max(eds_sizes, default=None)},
                "put_ms": dist([t1 - t0 for t0, t1, _ in changes]), "cp_cpu_pct": round(cpu_pct, 1),
                "fleet_cpu_pct": round(fleet_cpu_pct, 1),
                "bytes_per_proxy_per_change": round(bytes_total / max(1, self.n) / max(1, len(changes))),
                "cp_rss_mb": round(self.cp.rss_mb(), 1), "timed_out": status["timed_out"]}

    def restart(self) -> dict:
        t_kill = time.monotonic()
        self.cp.kill()
        startup = self.cp.start()
        t_ready = time.monotonic()
        cpu0, fleet0 = self.cp.cpu_seconds(), self.fleet.cpu_seconds()
        # delta may legitimately send nothing to a resumed proxy (the CP keeps issued certificates across
        # restarts): then the stream's reopening is its resync, and only "synced" counts
        need_answer = not self.args.delta
        with self.profiler.phase("restart", self.cp.proc.pid):
            status = wait_synced(self.fleet, self.timeout, t_kill, new_streams=need_answer)
        streams = self.fleet.merged("streams")
        events = self.fleet.merged("events", t_kill)
        reconnect = [first - t_ready for _, _, first, _ in streams.values() if first >= t_kill]
        synced = [(s if s >= t_kill else opened) - t_ready for _, opened, _, s in streams.values()
                  if s >= t_kill or (self.args.delta and opened >= t_kill)]
        return {"cp_start_s": round(startup, 3), "first_response_ms": dist(reconnect), "synced_ms": dist(synced),
                "all_synced_after_kill_s": round(max(synced) + t_ready - t_kill, 3) if synced else None,
                "not_resynced": self.n - len(synced), "cp_cpu_s": round(self.cp.cpu_seconds() - cpu0, 2),
                "fleet_cpu_s": round(self.fleet.cpu_seconds() - fleet0, 2),
                "bytes_per_proxy": round(sum(e[3] for evs in events.values() for e in evs) / self.n),
                "cp_rss_mb": round(self.cp.rss_mb(), 1), "timed_out": status["timed_out"],
                "errors_seen": status["errors"]}


# --- report ------------------------------------------------------------------------------------

def rows(results: dict) -> list[tuple]:
    out = []

    def add(scenario: str, metric: str, d: dict | None, note: str = "") -> None:
        d = d or {}
        out.append((scenario, metric, d.get("p50"), d.get("p99"), d.get("max"), note))

    if "connect" in results:
        c = results["connect"]
        add("connect", "open -> first config ms", c["first_config_ms"],
            f"all in {c['all_complete_s']} s, {c['bytes_per_proxy']} B/proxy, CP CPU {c['cp_cpu_s']} s, "
            f"fleet CPU {c['fleet_cpu_s']} s, incomplete {c['incomplete']}")
    if "idle" in results:
        i = results["idle"]
        out.append(("idle", f"CP over {i['seconds']} s", None, None, None,
                    f"CPU {i['cp_cpu_pct']} % of a core, RSS {i['cp_rss_mb']} MB, "
                    f"responses {i['responses_during_idle']}"))
    if "policy" in results:
        p = results["policy"]
        m = p["mtls_on"]
        add("mtls on", "PUT -> last ACK ms", m["ack_ms"],
            f"{m['bytes_per_proxy']} B/proxy, updated {m['proxies_updated']}, CP CPU {m['cp_cpu_s']} s, "
            f"fleet CPU {m['fleet_cpu_s']} s, RSS {m['cp_rss_mb']} MB")
        for k, r in enumerate(p["rounds"], 1):
            add(f"policy {k}", "PUT -> ACK ms", r["ack_ms"],
                f"{r['change']}: {r['bytes_per_proxy']} B/proxy, updated {r['proxies_updated']}, "
                f"{r['responses_by_type']}, PUT {r['put_ms']} ms, CP CPU {r['cp_cpu_s']} s, fleet CPU {r['fleet_cpu_s']} s")
    if "route" in results:
        r = results["route"]
        if "create" in r:
            c = r["create"]
            add("route new", "PUT -> last ACK ms", c["ack_ms"],
                f"{c['bytes_per_proxy']} B/proxy, updated {c['proxies_updated']}, {c['responses_by_type']}, "
                f"CP CPU {c['cp_cpu_s']} s")
        for k, c in enumerate(r["rounds"], 1):
            add(f"route {k}", "PUT -> ACK ms", c["ack_ms"],
                f"{c['change']}: {c['bytes_per_proxy']} B/proxy, updated {c['proxies_updated']}/{r['callers']}, "
                f"{c['responses_by_type']}, PUT {c['put_ms']} ms, CP CPU {c['cp_cpu_s']} s, "
                f"fleet CPU {c['fleet_cpu_s']} s")
        add("route", "all ACKs ms", r["ack_ms"], f"{len(r['rounds'])} changes, RSS {r['cp_rss_mb']} MB")
        add("route", "last ACK per change ms", r["last_ack_ms"])
    if "churn" in results:
        c = results["churn"]
        add("churn", "PUT -> EDS ACK ms", c["eds_ack_ms"],
            f"{c['changes']} changes x {c['affected_proxies']} proxies, not seen {c['not_seen']}, "
            f"NACKed {c['nacked']}, CP CPU {c['cp_cpu_pct']} %, fleet CPU {c['fleet_cpu_pct']} %, "
            f"{c['bytes_per_proxy_per_change']} B/proxy/change, "
            f"{c['responses_by_type']}, resources per EDS response {c['eds_resources_per_response']}")
        add("churn", "PUT -> last proxy ms", c["last_proxy_ms"], f"PUT p50 {c['put_ms']['p50']} ms")
    if "restart" in results:
        r = results["restart"]
        add("restart", "CP ready -> synced ms", r["synced_ms"],
            f"CP start {r['cp_start_s']} s, all synced {r['all_synced_after_kill_s']} s after kill -9, "
            f"not resynced {r['not_resynced']}, CP CPU {r['cp_cpu_s']} s, fleet CPU {r['fleet_cpu_s']} s")
    for name, c in results.get("checks", {}).items():
        out.append(("check", name, None, None, None,
                    f"{'ok' if c['ok'] else 'FAILED'}: synced {c['synced']}, sample {c['sample']} "
                    f"({c['resources_compared']} resources), names mismatch {c['names_mismatch_count']}, "
                    f"content mismatch {c['content_mismatch_count']}, after NACK {c['mismatch_after_nack']}"))
    return out


def print_table(results: dict) -> None:
    print(f"{'scenario':<10} {'metric':<26} {'p50':>8} {'p99':>8} {'max':>8}  note")
    for scenario, metric, p50, p99, mx, note in rows(results):
        f = lambda v: "-" if v is None else str(v)  # noqa: E731
        print(f"{scenario:<10} {metric:<26} {f(p50):>8} {f(p99):>8} {f(mx):>8}  {note}")
    if "aborted" in results:
        print(f"ABORTED: {results['aborted']}; fleet status {results['connect'].get('status')}")


def _progress(what: str, result: dict) -> dict:
    print(f"[fleet] {what}: {json.dumps(result)}", file=sys.stderr, flush=True)
    return result


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")   # so that `finally` stops the fleet and the CP


# --- main --------------------------------------------------------------------------------------

SCENARIOS = ("connect", "policy", "route", "churn", "restart")


def main() -> None:
    global QUIET
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proxies", type=int, default=100)
    parser.add_argument("--processes", type=int, default=2, help="fleet processes (each its own event loop)")
    parser.add_argument("--scenario", default="connect,policy", help="all, or a comma list of " + ", ".join(SCENARIOS))
    parser.add_argument("--delta", action="store_true", help="delta xDS instead of state of the world")
    parser.add_argument("--nack-every", type=int, default=0, help="NACK every K-th response after the first config")
    parser.add_argument("--auth", choices=("none", "token"), default="none", help="dataplane tokens on the ADS stream")
    parser.add_argument("--policy-rich", action="store_true",
                        help="50 services in two versions, 5 outbounds per proxy, 51 policies of every type")
    parser.add_argument("--observability", choices=rich.OBSERVABILITY, default="some",
                        help="with --policy-rich: the access logs, metrics and traces of the mesh (see _rich_mesh)")
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--churn-seconds", type=int, default=20)
    parser.add_argument("--py-spy", metavar="PATH", help="a py-spy binary: profile the CP in every phase")
    parser.add_argument("--profile-dir", help="where the profiles go (default: a new temporary directory)")
    parser.add_argument("--cp-log-level", default="warning")
    parser.add_argument("--work-dir", help="the CP's work dir, kept afterwards (default: a temporary one, removed)")
    parser.add_argument("--quiet", type=float, default=QUIET, help="seconds without responses that end a phase")
    parser.add_argument("--sample", type=int, default=20, help="proxies checked against the CP's _config")
    args = parser.parse_args()
    scenarios = SCENARIOS if args.scenario == "all" else tuple(s.strip() for s in args.scenario.split(","))
    unknown = set(scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario {', '.join(sorted(unknown))}; choose from all, {', '.join(SCENARIOS)}")

    signal.signal(signal.SIGTERM, _terminate)
    QUIET = args.quiet
    n = args.proxies
    services = rich.SERVICES if args.policy_rich else service_count(n)
    names = [f"dp-{i}" for i in range(n)]
    # a stride prime to the number of services, so that the sample spans services (not only svc-0's proxies)
    stride = max(1, n // args.sample)
    while math.gcd(stride, services) != 1:
        stride += 1
    sample = names[::stride][: args.sample]
    # the machine's load average (1, 5, 15 min) at the start and the end: the figures depend on it
    results: dict[str, Any] = {"checks": {}, "load_start": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="kuma-fleet-") as tmp:
        work = Path(args.work_dir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        env = {"KUMA_DP_SERVER_AUTHN_DP_PROXY_TYPE": "none"} if args.auth == "none" else {}
        cp = Cp(work, env, args.cp_log_level)
        fleet = None
        profiler = Profiler(args.py_spy, Path(args.profile_dir or tempfile.mkdtemp(prefix="fleet-profile-"))
                            if args.py_spy else work)
        try:
            results["cp_start_s"] = round(cp.start(), 3)
            api = Api(cp.url)
            if args.policy_rich:
                results["policies"] = _progress("policies", create_policies(api, args.observability))
                bodies = [rich.dataplane(MESH, nm, _address(i), i) for i, nm in enumerate(names)]
            else:
                bodies = [dataplane(nm, _address(i), i % services, services) for i, nm in enumerate(names)]
            results["register_s"] = round(register(api, bodies), 3)
            tokens = {}
            if args.auth == "token":
                with ThreadPoolExecutor(32) as pool:
                    got = pool.map(lambda nm: api.call("POST", "/tokens/dataplane", {"name": nm, "mesh": MESH}).text,
                                   names)
                    tokens = dict(zip(names, got))
            opts = fc.Options(target=f"127.0.0.1:{cp.dp_port}", ca_pem=(work / "kuma-cp.crt").read_bytes(),
                              delta=args.delta, nack_every=args.nack_every, watch_cluster=WATCHED, tokens=tokens,
                              keep_raw=frozenset(sample))
            fleet = Fleet(names, args.processes, opts)
            bench = Bench(args, cp, api, fleet, profiler, services)
            results["connect"] = _progress("connect", bench.connect())
            if results["connect"]["timed_out"]:
                results["aborted"] = "the fleet never got in sync after connecting: no further scenario"
            else:
                results["idle"] = _progress("idle", bench.idle())
                results["checks"]["connect"] = _progress("check", check(fleet, api, sample))
                for scenario in SCENARIOS[1:]:
                    if scenario in scenarios:
                        results[scenario] = _progress(scenario, getattr(bench, scenario)())
                        results["checks"][scenario] = _progress("check", check(fleet, api, sample))
        finally:
            if fleet is not None:
                fleet.stop()
            cp.stop()
            # the CP's own account (warnings and errors at the default level); waitress's queue notes are noise
            log = [line for line in cp.log_tail(400).splitlines() if "waitress.queue" not in line]
            if log:
                print("[fleet] kuma-cp log (last 40 lines):\n" + "\n".join(log[-40:]), file=sys.stderr)
            if args.py_spy:
                results["profile"] = {k: v[:12] for k, v in profiler.report().items()}
    print(f"fleet: {n} proxies in {args.processes} processes, {services} services, "
          f"{'delta' if args.delta else 'state of the world'} xDS, dataplane auth {args.auth}"
          + (f", NACK every {args.nack_every}" if args.nack_every else "")
          + (f", policy-rich ({results['policies']['policies']} policies)" if "policies" in results else "")
          + f"; load average {results['load_start']} at the start, {os.getloadavg()} at the end")
    print_table(results)
    print(json.dumps({"benchmark": "fleet", "proxies": n, "processes": args.processes, "services": services,
                      "xds": "delta" if args.delta else "sotw", "auth": args.auth,
                      "policy_rich": args.policy_rich, "observability": args.observability, "load_end": os.getloadavg(), "nack_every": args.nack_every,
                      "scenarios": list(scenarios), "results": results}))


if __name__ == "__main__":
    main()
