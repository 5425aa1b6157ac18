"""CPU per proxy of regenerating the policy-rich mesh's configs after a change, without the DP server:
1,000 proxies (tests/perf/_rich_mesh.py) on a real SQLite store and the real xDS cache, then five changes of
the canary MeshHTTPRoute (`route`) or of the allow-all MeshTrafficPermission (`policy`), each followed by
every proxy's resources; `--digest` prints a hash of every proxy's resources but its secrets after each change
(equal digests: byte-identical configs, e.g. before and after a change of the generator).

    .venv/bin/python tests/perf/generate_rich_bench.py [--proxies 1000] [--observability some|none|all] [--mtls]
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from appliance.api import codec  # noqa: E402
from appliance.core.manager import ResourceManager  # noqa: E402
from appliance.core.resources import registry  # noqa: E402
from appliance.runtime.run import GC_THRESHOLDS  # noqa: E402
from appliance.store.sqlite import SQLiteStore  # noqa: E402
from appliance.xds.cache import XdsCache  # noqa: E402
from appliance.xds.generate import generate_sidecar  # noqa: E402
from appliance.xds.resources import SECRET  # noqa: E402
from tests.perf import _rich_mesh as rich  # noqa: E402

MESH = "default"


def _resource(body: dict):
    return codec.decode(registry.get(body["type"]), body)


def _permission(deny: bool) -> dict:
    spec = {"targetRef": {"kind": "Mesh"}, "from": [{"targetRef": {"kind": "Mesh"}, "default": {"action": "Allow"}}]}
    if deny:
        spec["from"].append({"targetRef": {"kind": "MeshService", "name": "svc-3"}, "default": {"action": "Deny"}})
    return {"type": "MeshTrafficPermission", "mesh": MESH, "name": "allow-all", "spec": spec}


async def _run(store: SQLiteStore, manager: ResourceManager, args: argparse.Namespace) -> None:
    cache = XdsCache(store, generate_sidecar, asyncio.get_running_loop())
    watches = [cache.watch(MESH, f"dp-{i}") for i in range(args.proxies)]
    for watch in watches:
        cache.resources(watch)
    for k, (v1, v2) in enumerate(rich.CANARY_ROUNDS):
        woken = asyncio.Event()
        watches[-1].changed.callback = woken.set
        body = rich.canary_body(MESH, v1, v2) if args.change == "route" else _permission(k % 2 == 0)
        manager.update(_resource(body), store.get(body["type"], MESH, body["name"]).version)
        await asyncio.wait_for(woken.wait(), 10)
        started = time.process_time()
        served = [cache.resources(watch) for watch in watches]
        ms = (time.process_time() - started) * 1000 / len(watches)
        digest = hashlib.sha256()
        if args.digest:
            for watch, resources in zip(watches, served):
                for type_url, items in sorted(resources.items()):
                    if type_url == SECRET:   # certificates and keys differ from run to run
                        continue
                    for name, packed in sorted(items.items()):
                        digest.update(f"{watch.key}{type_url}{name}{packed.version}".encode())
        print(f"{args.change} change {k + 1}: {ms:.3f} ms of CPU per proxy"
              + (f", digest {digest.hexdigest()[:16]}" if args.digest else ""))
        for watch in watches:
            watch.changed.clear()
    cache.close()


def main() -> None:
    gc.set_threshold(*GC_THRESHOLDS)   # as `kuma-cp run`
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--proxies", type=int, default=1000)
    parser.add_argument("--observability", choices=rich.OBSERVABILITY, default="some")
    parser.add_argument("--change", choices=("route", "policy"), default="route")
    parser.add_argument("--digest", action="store_true")
    parser.add_argument("--mtls", action="store_true", help="the mesh with builtin mTLS (certificates issued first)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        store = SQLiteStore(Path(work) / "kuma.db")
        manager = ResourceManager(store)
        manager.ensure_mesh(MESH)
        if args.mtls:
            mesh = store.get("Mesh", "", MESH)
            manager.update(_resource({"type": "Mesh", "name": MESH, "mtls": {
                "enabledBackend": "ca-1", "backends": [{"name": "ca-1", "type": "builtin"}]}}), mesh.version)
        for _, kind, name, spec in rich.policies(args.observability):
            manager.create(_resource({"type": kind, "mesh": MESH, "name": name, "spec": spec}))
        for i in range(args.proxies):
            manager.create(_resource(rich.dataplane(MESH, f"dp-{i}", f"10.0.{i // 256}.{i % 256 + 1}", i)))
        try:
            asyncio.run(_run(store, manager, args))
        finally:
            store.close()


if __name__ == "__main__":
    main()
