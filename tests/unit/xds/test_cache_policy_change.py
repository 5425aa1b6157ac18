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


def _route_weights(v1: int, v2: int) -> dict:
    return {"targetRef": {"kind": "Mesh"}, "to": [{"targetRef": {"kind": "MeshService", "name": "backend"}, "rules": [
        {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}], "default": {"backendRefs": [
            {"kind": "MeshServiceSubset", "name": "backend", "tags": {"version": "v1"}, "weight": v1},
            {"kind": "MeshServiceSubset", "name": "backend", "tags": {"version": "v2"}, "weight": v2}]}}]}]}


def _inbound_timeout(idle: str) -> dict:
    return {"targetRef": {"kind": "MeshService", "name": "web"},
            "from": [{"targetRef": {"kind": "Mesh"}, "default": {"idleTimeout": idle}}]}


def _route_timeout(request: str) -> dict:
    return {"targetRef": {"kind": "Mesh"}, "to": [{"targetRef": {"kind": "MeshHTTPRoute", "name": "canary"},
                                                  "default": {"http": {"requestTimeout": request}}}]}


def _patch(stat_prefix: str) -> dict:
    return {"targetRef": {"kind": "MeshService", "name": "web"}, "default": {"appendModifications": [
        {"networkFilter": {"operation": "Patch", "match": {"name": "envoy.filters.network.http_connection_manager",
                                                          "origin": "inbound"},
                           "value": f"name: envoy.filters.network.http_connection_manager\ntypedConfig:\n"
                                    f"  '@type': type.googleapis.com/envoy.extensions.filters.network."
                                    f"http_connection_manager.v3.HttpConnectionManager\n"
                                    f"  statPrefix: {stat_prefix}\n"}}]}}


def test_a_route_change_rebuilds_the_routed_outbound_alone_and_every_step_serves_what_a_fresh_generation_gives(
        tmp_path: Path) -> None:
    """A MeshHTTPRoute change leaves the proxy's own resources (inbound listener, local cluster) and the outbounds
    it does not route as they were, taken over from the previous revision; whatever else changes (an inbound
    timeout, a timeout of the route, a MeshProxyPatch of the inbound, which is applied on fresh own resources
    and removed again) is served as a generation from scratch gives it."""
    store = SQLiteStore(tmp_path / "kuma.db")
    manager = ResourceManager(store)
    manager.ensure_mesh(MESH)
    web = _dataplane("web-1", "web", "127.0.0.2", "backend")
    web.content["networking"]["outbound"].append({"port": 10002, "tags": {"kuma.io/service": "other"}})
    manager.create(web)
    for i, (name, service, version) in enumerate((("backend-1", "backend", "v1"), ("backend-2", "backend", "v2"),
                                                  ("other-1", "other", "v1"))):
        dataplane = _dataplane(name, service, f"127.0.1.{i + 2}", None)
        dataplane.content["networking"]["inbound"][0]["tags"]["version"] = version
        manager.create(dataplane)
    manager.create(_policy("MeshHTTPRoute", "canary", _route_weights(90, 10)))
    manager.create(_policy("MeshTimeout", "web-inbound", _inbound_timeout("30s")))

    async def scenario() -> None:
        cache = XdsCache(store, generate_sidecar, asyncio.get_running_loop())
        watch = cache.watch(MESH, "web-1")

        def served_like_fresh() -> dict:
            served = cache.resources(watch)
            fresh = pack_all(generate_sidecar(cache.snapshot(MESH), watch.dataplane[1], None, None))
            assert {t: {n: p.version for n, p in items.items()} for t, items in served.items()} == \
                   {t: {n: p.version for n, p in items.items()} for t, items in fresh.items()}
            return served

        async def change(kind: str, name: str, spec: dict | None) -> dict:
            woken = asyncio.Event()
            watch.changed.callback = woken.set
            if spec is None:
                manager.delete(kind, MESH, name)
            elif store.get(kind, MESH, name) is None:
                manager.create(_policy(kind, name, spec))
            else:
                manager.update(_policy(kind, name, spec), store.get(kind, MESH, name).version)
            await asyncio.wait_for(woken.wait(), timeout=5)
            watch.changed.clear()
            return served_like_fresh()

        def inbound(served: dict) -> str:
            return next(n for n in served[LISTENER] if n.startswith("inbound:"))

        before = served_like_fresh()
        after = await change("MeshHTTPRoute", "canary", _route_weights(50, 50))
        assert after[LISTENER]["outbound:127.0.0.1:10001"].version != before[LISTENER]["outbound:127.0.0.1:10001"].version
        # taken over, not generated (nor packed) again
        assert after[LISTENER]["outbound:127.0.0.1:10002"] is before[LISTENER]["outbound:127.0.0.1:10002"]
        assert after[CLUSTER]["other"] is before[CLUSTER]["other"]
        assert after[LISTENER][inbound(after)] is before[LISTENER][inbound(after)]
        assert after[CLUSTER]["localhost:18080"] is before[CLUSTER]["localhost:18080"]

        # the inbound's own timeout changes: its local cluster is generated again, the outbounds are not
        later = await change("MeshTimeout", "web-inbound", _inbound_timeout("45s"))
        assert later[CLUSTER]["localhost:18080"].version != after[CLUSTER]["localhost:18080"].version
        assert later[LISTENER]["outbound:127.0.0.1:10001"] is after[LISTENER]["outbound:127.0.0.1:10001"]
        # a timeout of the route itself: the routed outbound changes
        timed = await change("MeshTimeout", "canary-timeout", _route_timeout("3s"))
        assert timed[LISTENER]["outbound:127.0.0.1:10001"].version != later[LISTENER]["outbound:127.0.0.1:10001"].version
        rerouted = await change("MeshHTTPRoute", "canary", _route_weights(10, 90))
        assert rerouted[LISTENER]["outbound:127.0.0.1:10001"].version != timed[LISTENER]["outbound:127.0.0.1:10001"].version
        # a MeshProxyPatch of the inbound's HTTP connection manager, then none again
        patched = await change("MeshProxyPatch", "web-patch", _patch("patched"))
        assert patched[LISTENER][inbound(patched)].version != rerouted[LISTENER][inbound(rerouted)].version
        unpatched = await change("MeshProxyPatch", "web-patch", None)
        assert unpatched[LISTENER][inbound(unpatched)].version == rerouted[LISTENER][inbound(rerouted)].version
        cache.close()

    try:
        asyncio.run(scenario())
    finally:
        store.close()
