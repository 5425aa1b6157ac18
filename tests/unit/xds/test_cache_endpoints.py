"""A change that moves only endpoints (a dataplane joins) regenerates no proxy: the services' load assignments
are built and packed once for all the proxies that use them, and only those proxies are woken.

A real SQLite store, the real cache and its change intake on a real event loop; generation is a small
stand-in that counts its calls (each proxy uses the load assignment of one service)."""
from __future__ import annotations

import asyncio
from pathlib import Path

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2

from appliance.core.manager import ResourceManager
from appliance.core.resources.model import Resource
from appliance.store.sqlite import SQLiteStore
from appliance.xds.cache import XdsCache
from appliance.xds.resources import CLUSTER, ENDPOINT

USES = {"web-1": "backend", "web-2": "backend", "other-1": "other"}


def _cla(snapshot, service):
    return endpoint_pb2.ClusterLoadAssignment(cluster_name=service, endpoints=[endpoint_components_pb2.LocalityLbEndpoints(
        lb_endpoints=[endpoint_components_pb2.LbEndpoint()] * len(snapshot.endpoints.get(service, ())))])


def _dp(name: str, service: str, address: str) -> Resource:
    return Resource("Dataplane", "default", name, {"networking": {"address": address, "inbound": [
        {"port": 8080, "tags": {"kuma.io/service": service}}]}})


def test_a_joining_dataplane_wakes_only_the_proxies_of_its_service_and_regenerates_nothing(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "kuma.db")
    manager = ResourceManager(store)
    manager.ensure_mesh("default")
    for i, (name, service) in enumerate((("web-1", "web"), ("web-2", "web"), ("other-1", "other"),
                                         ("backend-1", "backend"))):
        manager.create(_dp(name, service, f"127.0.0.{i + 2}"))
    generated: list[str] = []

    def generate(snapshot, proxy, identity, shared):
        generated.append(proxy.name)
        service = USES[proxy.name]
        return {CLUSTER: {service: cluster_pb2.Cluster(name=service, type=cluster_pb2.Cluster.EDS)},
                ENDPOINT: {service: _cla(snapshot, service)}}

    async def scenario() -> None:
        cache = XdsCache(store, generate, asyncio.get_running_loop(), _cla)
        watches = {name: cache.watch("default", name) for name in USES}
        before = {name: cache.resources(w) for name, w in watches.items()}
        assert sorted(generated) == sorted(USES)
        woken = asyncio.Event()
        watches["web-1"].changed.callback = woken.set

        manager.create(_dp("backend-2", "backend", "127.0.0.20"))
        await asyncio.wait_for(woken.wait(), timeout=5)
        assert watches["web-2"].changed.pending
        assert not watches["other-1"].changed.pending      # its service's endpoints did not move

        after = {name: cache.resources(w) for name, w in watches.items()}
        assert sorted(generated) == sorted(USES)            # nobody regenerated
        web_1, web_2 = after["web-1"][ENDPOINT]["backend"], after["web-2"][ENDPOINT]["backend"]
        assert web_1 is web_2                               # packed once for both
        assert web_1.version != before["web-1"][ENDPOINT]["backend"].version
        assert len(endpoint_pb2.ClusterLoadAssignment.FromString(web_1.any.value).endpoints[0].lb_endpoints) == 2
        assert after["web-1"][CLUSTER] == before["web-1"][CLUSTER]
        assert after["other-1"] == before["other-1"]
        cache.close()

    try:
        asyncio.run(scenario())
    finally:
        store.close()
