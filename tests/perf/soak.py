"""Soak: one `kuma-cp run`, a fleet of fake proxies (fleet.py) and a steady stream of API writes for N minutes.

    .venv/bin/python tests/perf/soak.py --proxies 300 --minutes 10 [--delta]     # run by hand, not in CI

The writes, one per second: a dataplane of svc-0 joins or leaves (its endpoints reach most proxies), and
every `--flip-every` seconds the mesh's MeshTrafficPermission flips between allow-all and a Deny for one
service (every proxy's inbound RBAC changes); mTLS is on, so every proxy holds a certificate too.
Every minute: the CP's RSS, open file descriptors, threads and CPU, the fleet's NACKs, reconnects and
errors, and the ERROR lines in the CP's log; growth after the first minute (warm-up) is what a leak looks
like. Each flip is timed from the PUT's answer to the last proxy's ACK of its first listener or route
response since the PUT (p50/p99 over the run; a flip not ACKed by every proxy before the next is counted). At the end the writes stop and every proxy must be in sync, and a sample must hold exactly what
`GET .../_config` says (fleet.check). Prints one line per minute, then one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.perf import _fleet_client as fc  # noqa: E402
from tests.perf.fleet import (MESH, MESH_MTLS, WATCHED, Api, Cp, Fleet, _address, check, dataplane, dist,  # noqa: E402
                              mtp, register, service_count, wait_synced)


def _proc_status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def sample(cp: Cp, fleet: Fleet, t0: float, cpu_before: float, t_before: float, writes: int) -> dict:
    status = fleet.status()
    cpu = cp.cpu_seconds()
    log = (cp.work_dir / "kuma-cp.log").read_text(errors="replace")
    return {"minute": round((time.monotonic() - t0) / 60, 1),
            "rss_mb": round(_proc_status(cp.proc.pid, "VmRSS") / 1024, 1),
            "fds": len(os.listdir(f"/proc/{cp.proc.pid}/fd")),
            "threads": _proc_status(cp.proc.pid, "Threads"),
            "cp_cpu_pct": round(100 * (cpu - cpu_before) / max(1e-9, time.monotonic() - t_before), 1),
            "writes": writes, "synced": status["synced"], "nacks": status["nacks"],
            "reconnects": status["reconnects"], "fleet_errors": sum(status["errors"].values()),
            "log_errors": sum(1 for line in log.splitlines() if " ERROR " in line or "Traceback" in line)}


def flip_reached(fleet: Fleet, started: float, answered: float, n: int) -> tuple[float | None, int]:
    """A MeshTrafficPermission flip changes every proxy's inbound RBAC (LDS, RDS): from the PUT's answer to the
    ACK of the last proxy's first listener or route response since the PUT, and how many have not ACKed one."""
    acks = [t for t in fleet.merged("first_acks", started, [fc.TYPES.index(fc.LDS), fc.TYPES.index(fc.RDS)]).values()
            if t]
    return (max(acks) - answered if acks else None), n - len(acks)


def soak(cp: Cp, api: Api, fleet: Fleet, minutes: float, flip_every: int, services: int, n: int) -> dict[str, Any]:
    rows: list[dict] = []
    write_s: list[float] = []
    flips: list[tuple[float, float]] = []
    flip_last_ack: list[float] = []
    flips_not_reached = 0
    t0 = time.monotonic()
    next_sample, cpu_mark, t_mark = t0 + 60, cp.cpu_seconds(), t0
    k = 0
    while time.monotonic() - t0 < minutes * 60:
        time.sleep(max(0.0, t0 + k - time.monotonic()))
        started = time.monotonic()
        name = f"churn-{k // 2}"
        if k % 2 == 0:
            api.call("PUT", f"/meshes/{MESH}/dataplanes/{name}",
                     dataplane(name, _address(k // 2 % 60000, 11), 0, services, outbounds=False))
        else:
            api.call("DELETE", f"/meshes/{MESH}/dataplanes/{name}")
        if k % flip_every == 0:
            if flips:   # the previous flip had flip_every seconds to reach every proxy
                latency, missing = flip_reached(fleet, *flips[-1], n)
                flips_not_reached += missing > 0
                if latency is not None and not missing:
                    flip_last_ack.append(latency)
            deny = "svc-1" if (k // flip_every) % 2 else None
            flip_started = time.monotonic()
            api.call("PUT", f"/meshes/{MESH}/meshtrafficpermissions/soak-allow", mtp("soak-allow", deny))
            flips.append((flip_started, time.monotonic()))
        write_s.append(time.monotonic() - started)
        k += 1
        if time.monotonic() >= next_sample:
            rows.append(sample(cp, fleet, t0, cpu_mark, t_mark, k))
            print("[soak] " + json.dumps(rows[-1]), flush=True)
            next_sample, cpu_mark, t_mark = next_sample + 60, cp.cpu_seconds(), time.monotonic()
    return {"rows": rows, "writes": k, "write_ms": dist(write_s),
            "flip_to_last_ack_ms": dist(flip_last_ack), "flips": len(flips),
            "flips_not_reached_within_flip_every": flips_not_reached}


def growth(rows: list[dict], key: str) -> float | None:
    """From the end of the first minute (warm-up) to the last sample."""
    return round(rows[-1][key] - rows[0][key], 1) if len(rows) >= 2 else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proxies", type=int, default=300)
    parser.add_argument("--processes", type=int, default=2, help="fleet processes (each its own event loop)")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--flip-every", type=int, default=5, help="seconds between MeshTrafficPermission flips")
    parser.add_argument("--delta", action="store_true", help="delta xDS instead of state of the world")
    parser.add_argument("--sample", type=int, default=20, help="proxies checked against the CP's _config at the end")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    n, services = args.proxies, service_count(args.proxies)
    names = [f"dp-{i}" for i in range(n)]
    checked = names[:: max(1, n // args.sample)][: args.sample]
    results: dict[str, Any] = {"benchmark": "soak", "proxies": n, "minutes": args.minutes,
                               "xds": "delta" if args.delta else "sotw"}
    with tempfile.TemporaryDirectory(prefix="kuma-soak-") as tmp:
        work = Path(tmp)
        cp = Cp(work, {"KUMA_DP_SERVER_AUTHN_DP_PROXY_TYPE": "none"})
        fleet = None
        try:
            cp.start()
            api = Api(cp.url)
            register(api, [dataplane(nm, _address(i), i % services, services) for i, nm in enumerate(names)])
            api.call("PUT", f"/meshes/{MESH}", MESH_MTLS)
            opts = fc.Options(target=f"127.0.0.1:{cp.dp_port}", ca_pem=(work / "kuma-cp.crt").read_bytes(),
                              delta=args.delta, watch_cluster=WATCHED, keep_raw=frozenset(checked))
            fleet = Fleet(names, args.processes, opts)
            t0 = time.monotonic()
            fleet.call("start")
            connected = wait_synced(fleet, 60 + n * 0.1, t0, updated=n)
            results["connect_s"] = round(time.monotonic() - t0, 1)
            if connected["timed_out"]:
                raise RuntimeError(f"the fleet never got in sync: {connected}")
            results.update(soak(cp, api, fleet, args.minutes, args.flip_every, services, n))
            t_end = time.monotonic()
            final = wait_synced(fleet, 60 + n * 0.1, t_end)
            results["resync_after_writes_s"] = round(time.monotonic() - t_end, 1)
            results["final"] = {"timed_out": final["timed_out"], "nacks": final["nacks"],
                                "reconnects": final["reconnects"], "errors": final["errors"]}
            results["check"] = check(fleet, api, checked)
            rows = results["rows"]
            results["growth_after_warmup"] = {key: growth(rows, key) for key in ("rss_mb", "fds", "threads")}
        finally:
            if fleet is not None:
                fleet.stop()
            cp.stop()
            errors = [line for line in cp.log_tail(2000).splitlines() if " ERROR " in line or "Traceback" in line]
            results["log_errors"] = len(errors)
            if errors:
                print("[soak] errors in the kuma-cp log:\n" + "\n".join(errors[-20:]), file=sys.stderr)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
