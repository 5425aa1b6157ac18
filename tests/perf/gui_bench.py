"""GUI benchmark: the time the control plane takes to answer the mesh page (/gui/meshes/default) with
1,000 dataplanes in the store, each with an insight (some online, some offline), and a few policies.

    .venv/bin/python tests/perf/gui_bench.py [--dataplanes 1000] [--requests 30]

The page is what the GUI's script fetches every 2 s while it is open, so its time is the GUI's cost on the
control plane. The app is the real one (falcon on waitress, SQLite file) in this process; the client is one
keep-alive HTTP connection. Prints a table and one JSON line. Target: p50 under 300 ms.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from appliance.core.resources import registry  # noqa: E402
from appliance.core.resources.model import Resource  # noqa: E402
from appliance.store import WriteOp  # noqa: E402
from tests.perf.api_bench import dataplane  # noqa: E402
from tests.support import live_api  # noqa: E402

TARGET_MS = 300.0


def _insight(i: int) -> dict:
    sub = {"id": f"sub-{i}", "controlPlaneInstanceId": "bench-0000", "connectTime": "2026-01-01T00:00:00Z",
           "status": {"total": {"responsesSent": "4", "responsesAcknowledged": "4", "responsesRejected": "0"}},
           "version": {"kumaDp": {"version": "0.1.0"}, "envoy": {"version": "1.40.0"}}}
    if i % 10 == 0:   # one in ten is offline
        sub["disconnectTime"] = "2026-01-01T01:00:00Z"
    return {"subscriptions": [sub], "mTLS": {"certificateExpirationTime": "2026-01-02T00:00:00Z"}}


def populate(api, n: int) -> None:
    manager = api.manager
    ops = []
    for i in range(n):
        body = dataplane(i)
        res = Resource("Dataplane", "default", body["name"], {"networking": body["networking"]})
        res.labels = manager.compute_labels(registry.get("Dataplane"), res)
        ops.append(WriteOp("create", res))
        ops.append(WriteOp("create", Resource("DataplaneInsight", "default", body["name"], _insight(i),
                                              {"kuma.io/mesh": "default"})))
    for start in range(0, len(ops), 2000):
        manager.store.write(ops[start:start + 2000])
    for i in range(10):
        r = api.put(f"/meshes/default/meshtimeouts/svc-{i}", {
            "type": "MeshTimeout", "mesh": "default", "name": f"svc-{i}",
            "spec": {"targetRef": {"kind": "MeshService", "name": f"svc-{i}"},
                     "to": [{"targetRef": {"kind": "Mesh"}, "default": {"idleTimeout": f"{i + 1}s"}}]}})
        assert r.status_code == 201, r.text


def measure(api, path: str, count: int, headers: dict[str, str] | None = None) -> list[float]:
    times = []
    session = requests.Session()
    for _ in range(count + 2):
        t0 = time.perf_counter()
        r = session.get(api.url + path, headers=headers or {})
        times.append((time.perf_counter() - t0) * 1000)
        assert r.status_code == 200, r.text[:500]
    return times[2:]   # the first requests warm caches (templates, imports)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataplanes", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, live_api(Path(tmp), defaults=True) as api:
        populate(api, args.dataplanes)
        page = api.get("/gui/meshes/default").text
        assert page.count("/gui/meshes/default/dataplanes/dp-") == args.dataplanes
        results = {}
        for label, path in [("mesh page", "/gui/meshes/default"), ("overview", "/gui"),
                            ("proxy page", "/gui/meshes/default/dataplanes/dp-7")]:
            times = measure(api, path, args.requests)
            results[label] = {"p50_ms": round(statistics.median(times), 1),
                              "p95_ms": round(sorted(times)[int(len(times) * 0.95) - 1], 1),
                              "max_ms": round(max(times), 1), "bytes": len(api.get(path).content)}
    print(f"GUI with {args.dataplanes} dataplanes ({args.requests} requests each)")
    print(f"{'page':<12} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'bytes':>9}")
    for label, r in results.items():
        print(f"{label:<12} {r['p50_ms']:>8} {r['p95_ms']:>8} {r['max_ms']:>8} {r['bytes']:>9}")
    ok = results["mesh page"]["p50_ms"] < TARGET_MS
    print(f"mesh page p50 {'within' if ok else 'OVER'} the {TARGET_MS:.0f} ms target")
    print(json.dumps({"bench": "gui", "dataplanes": args.dataplanes, **{k.replace(' ', '_'): v
                                                                        for k, v in results.items()},
                      "target_ms": TARGET_MS, "within_target": ok}))


if __name__ == "__main__":
    main()
