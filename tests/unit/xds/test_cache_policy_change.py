"""After a policy change, every proxy holds what generating its config from scratch gives: the plugins' matches
that the next revision takes over (those that read none of the changed kinds) never leave a stale setting.

A real SQLite store, the real cache with the real generator on a real event loop; each step compares what
the cache serves with a generation of the same snapshot that shares nothing."""
from __future__ import annotations

import asyncio
from pathlib import Path

from envoy.config.cluster.v3 import cluster_pb2

from appliance.api import codec
from appliance.core.manager import ResourceManager
from appliance.core.resources import registry
from appliance.core.resources.model import Resource
from appliance.store.sqlite import SQLiteStore
from appliance.xds.cache import XdsCache
from appliance.xds.generate import generate_sidecar
from appliance.xds.resources import CLUSTER, LISTENER, pack_all

MESH = "default"


def _dataplane(name: str, service: str, address: str, calls: str | None) -> Resource:
    networking = {"address": address, "inbound": [
        {"port": 8080, "servicePort": 18080, "tags": {"kuma.io/service": service, "kuma.io/protocol": "http"}}]}
    if calls:
        networking["outbound"] = [{"port": 10001, "tags": {"kuma.io/service": calls}}]
    return Resource("Dataplane", MESH, name, {"networking": networking})


def _policy(kind: str, name: str, spec: dict) -> Resource:
    return codec.decode(registry.get(kind), {"type": kind, "mesh": MESH, "name": name, "spec": spec})


def _timeout(connect: str) -> dict:
    return {"targetRef": {"kind": "Mesh"}, "to": [{"targetRef": {"kind": "MeshService", "name": "backend"},
                                                  "default": {"connectionTimeout": connect}}]}


def _route(prefix: str) -> dict:
    return {"targetRef": {"kind": "Mesh"}, "to": [{"targetRef": {"kind": "MeshService", "name": "backend"}, "rules": [
        {"matches": [{"path": {"type": "PathPrefix", "value": prefix}}],
         "default": {"backendRefs": [{"kind": "MeshService", "name": "backend"}]}}]}]}


def test_a_policy_change_gives_every_proxy_what_a_fresh_generation_gives(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "kuma.db")
    manager = ResourceManager(store)
    manager.ensure_mesh(MESH)
    for i, (name, service, calls) in enumerate((("web-1", "web", "backend"), ("web-2", "web", "backend"),
                                                ("backend-1", "backend", None))):
        manager.create(_dataplane(name, service, f"127.0.0.{i + 2}", calls))
    # named to sort after the mesh's default timeout policy, which it then overrides (Kuma: smallest name wins)
    manager.create(_policy("MeshTimeout", "backend-timeout", _timeout("3s")))
    manager.create(_policy("MeshHTTPRoute", "route", _route("/a")))

    async def scenario() -> None:
        cache = XdsCache(store, generate_sidecar, asyncio.get_running_loop())
        watches = [cache.watch(MESH, name) for name in ("web-1", "web-2", "backend-1")]

        def served_like_fresh() -> dict:
            snapshot = cache.snapshot(MESH)
            for watch in watches:
                served = cache.resources(watch)
                fresh = pack_all(generate_sidecar(snapshot, watch.dataplane[1], None, None))
                for type_url, items in fresh.items():
                    for name, packed in items.items():
                        assert served[type_url][name].version == packed.version, (watch.key, type_url, name)
            return cache.resources(watches[0])

        async def change(kind: str, name: str, spec: dict) -> None:
            woken = asyncio.Event()
            watches[0].changed.callback = woken.set
            manager.update(_policy(kind, name, spec), store.get(kind, MESH, name).version)
            await asyncio.wait_for(woken.wait(), timeout=5)
            watches[0].changed.clear()

        served_like_fresh()
        await change("MeshHTTPRoute", "route", _route("/b"))     # the timeouts' matches are taken over
        served_like_fresh()
        await change("MeshTimeout", "backend-timeout", _timeout("7s"))   # ... and now they are not
        served = served_like_fresh()
        backend = cluster_pb2.Cluster.FromString(served[CLUSTER]["backend"].any.value)
        assert backend.connect_timeout.seconds == 7
        cache.close()

    try:
        asyncio.run(scenario())
    finally:
        store.close()


def _fault(status: int) -> dict:
    return {"targetRef": {"kind": "MeshService", "name": "web"}, "from": [
        {"targetRef": {"kind": "Mesh"}, "default": {"http": [{"abort": {"httpStatus": status, "percentage": 50}}]}}]}


def test_an_inbound_only_policy_change_keeps_the_outbounds_and_still_serves_what_a_fresh_generation_gives(
        tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "kuma.db")
    manager = ResourceManager(store)
    manager.ensure_mesh(MESH)
    for i, (name, service, calls) in enumerate((("web-1", "web", "backend"), ("backend-1", "backend", None))):
        manager.create(_dataplane(name, service, f"127.0.0.{i + 2}", calls))
    manager.create(_policy("MeshFaultInjection", "fault", _fault(500)))

    async def scenario() -> None:
        cache = XdsCache(store, generate_sidecar, asyncio.get_running_loop())
        watch = cache.watch(MESH, "web-1")

        async def change(kind: str, name: str, spec: dict) -> dict:
            woken = asyncio.Event()
            watch.changed.callback = woken.set
            manager.update(_policy(kind, name, spec), store.get(kind, MESH, name).version)
            await asyncio.wait_for(woken.wait(), timeout=5)
            watch.changed.clear()
            served = cache.resources(watch)
            fresh = pack_all(generate_sidecar(cache.snapshot(MESH), watch.dataplane[1], None, None))
            assert {t: {n: p.version for n, p in items.items()} for t, items in served.items()} == \
                   {t: {n: p.version for n, p in items.items()} for t, items in fresh.items()}
            return served

        before = cache.resources(watch)
        after = await change("MeshFaultInjection", "fault", _fault(503))
        inbound = next(n for n in after[LISTENER] if n.startswith("inbound:"))
        assert after[LISTENER][inbound].version != before[LISTENER][inbound].version   # the new status
        outbound = next(n for n in after[LISTENER] if n.startswith("outbound:"))
        assert after[LISTENER][outbound] is before[LISTENER][outbound]   # kept, not generated again
        assert after[CLUSTER]["backend"] is before[CLUSTER]["backend"]
        # a MeshTimeout change is not inbound-only: the outbounds are generated anew (and still right)
        manager.create(_policy("MeshTimeout", "backend-timeout", _timeout("3s")))
        later = await change("MeshTimeout", "backend-timeout", _timeout("7s"))
        assert later[CLUSTER]["backend"] is not after[CLUSTER]["backend"]
        cache.close()

    try:
        asyncio.run(scenario())
    finally:
        store.close()
