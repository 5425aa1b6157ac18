"""The ADS server speaks the xDS protocol: versions, nonces, ACK/NACK, no resend, push on change.

A real grpc.aio server and client on a unix socket and a real SQLite store; generation is a
small stand-in (the real generators have their own tests), so only the protocol is under test.
"""
from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import grpc
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.rpc import status_pb2

from appliance.core.events import ChangeHub
from appliance.core.manager import ResourceManager
from appliance.core.resources.model import Resource
from appliance.store.sqlite import SQLiteStore
from appliance.xds.cache import XdsCache
from appliance.xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE
from appliance.xds.server import AdsServer


def _cla(snapshot, service):
    return endpoint_pb2.ClusterLoadAssignment(cluster_name=service, endpoints=[endpoint_components_pb2.LocalityLbEndpoints(
        lb_endpoints=[endpoint_components_pb2.LbEndpoint()] * len(snapshot.endpoints.get(service, ())))])


def _generate(snapshot, proxy, identity, shared):
    clusters = {s: cluster_pb2.Cluster(name=s, type=cluster_pb2.Cluster.EDS) for s in snapshot.endpoints}
    return {CLUSTER: clusters, ENDPOINT: {s: _cla(snapshot, s) for s in snapshot.endpoints}}


def _dp(name: str, service: str, port: int) -> Resource:
    return Resource("Dataplane", "default", name, {"networking": {"address": "127.0.0.1", "inbound": [
        {"port": port, "tags": {"kuma.io/service": service}}]}})


@pytest.fixture
def env(tmp_path: Path):
    store = SQLiteStore(tmp_path / "kuma.db", ChangeHub())
    manager = ResourceManager(store)
    manager.ensure_mesh("default")
    manager.create(_dp("web-1", "web", 8080))
    yield store, manager
    store.close()


async def _serve(store, auth=lambda node, md: tuple(node.id.split(".", 1)), generate=_generate):
    loop = asyncio.get_running_loop()
    cache = XdsCache(store, generate, loop, _cla)
    server = grpc.aio.server()
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(AdsServer(cache, auth), server)
    name = f"unix-abstract:ads-test-{secrets.token_hex(4)}"
    server.add_insecure_port(name)
    await server.start()
    channel = grpc.aio.insecure_channel(name)
    return server, channel, cache


class Client:
    def __init__(self, channel, delta: bool = False) -> None:
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        self.queue: asyncio.Queue = asyncio.Queue()
        self.call = (stub.DeltaAggregatedResources if delta else stub.StreamAggregatedResources)(self._requests())
        # cancelling a pending read would cancel the whole RPC: read in one task, hand over via a queue
        self.responses: asyncio.Queue = asyncio.Queue()
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        try:
            async for response in self.call:
                await self.responses.put(response)
        except grpc.aio.AioRpcError as e:
            await self.responses.put(e)

    async def _requests(self):
        while True:
            item = await self.queue.get()
            if item is None:
                return
            yield item

    async def send(self, request) -> None:
        await self.queue.put(request)

    async def recv(self, timeout: float = 2.0):
        item = await asyncio.wait_for(self.responses.get(), timeout)
        if isinstance(item, Exception):
            raise item
        return item

    async def nothing(self, wait: float = 0.3) -> bool:
        try:
            await asyncio.wait_for(self.responses.get(), wait)
            return False
        except asyncio.TimeoutError:
            return True


NODE = base_pb2.Node(id="default.web-1")


def test_state_of_the_world(env) -> None:
    store, manager = env

    async def scenario() -> None:
        server, channel, cache = await _serve(store)
        c = Client(channel)
        await c.send(discovery_pb2.DiscoveryRequest(node=NODE, type_url=CLUSTER))
        first = await c.recv()
        assert first.type_url == CLUSTER and [r.type_url for r in first.resources] == [CLUSTER]
        assert first.version_info and first.nonce
        # ACK: nothing is resent
        await c.send(discovery_pb2.DiscoveryRequest(type_url=CLUSTER, version_info=first.version_info,
                                                    response_nonce=first.nonce))
        await c.send(discovery_pb2.DiscoveryRequest(type_url=ENDPOINT, resource_names=["web"]))
        eds = await c.recv()
        assert eds.type_url == ENDPOINT and len(eds.resources) == 1
        await c.send(discovery_pb2.DiscoveryRequest(type_url=ENDPOINT, resource_names=["web"],
                                                    version_info=eds.version_info, response_nonce=eds.nonce))
        assert await c.nothing()
        # the same request again is Envoy re-subscribing (an updated cluster warms up until it has
        # its endpoints): it is answered although nothing changed
        await c.send(discovery_pb2.DiscoveryRequest(type_url=ENDPOINT, resource_names=["web"],
                                                    version_info=eds.version_info, response_nonce=eds.nonce))
        again = await c.recv()
        assert again.type_url == ENDPOINT and again.version_info == eds.version_info and len(again.resources) == 1
        await c.send(discovery_pb2.DiscoveryRequest(type_url=ENDPOINT, resource_names=["web"],
                                                    version_info=again.version_info, response_nonce=again.nonce))
        assert await c.nothing()
        # a store change reaches the proxy without any polling: a new service -> new cluster
        manager.create(_dp("api-1", "api", 9090))
        pushed = await c.recv()
        assert pushed.type_url == CLUSTER and len(pushed.resources) == 2
        assert pushed.version_info != first.version_info
        # a NACK keeps the previous config and is not answered with the same thing again
        await c.send(discovery_pb2.DiscoveryRequest(type_url=CLUSTER, version_info=first.version_info,
                                                    response_nonce=pushed.nonce,
                                                    error_detail=status_pb2.Status(message="bad cluster")))
        assert await c.nothing()
        # a request carrying an old nonce is stale and ignored
        await c.send(discovery_pb2.DiscoveryRequest(type_url=CLUSTER, response_nonce=first.nonce))
        assert await c.nothing()
        # a change that does not alter this proxy's resources sends nothing
        manager.create(Resource("Mesh", "", "other", {}))
        assert await c.nothing()
        await c.send(None)
        await channel.close()
        await server.stop(None)

    asyncio.run(scenario())


def test_delta_sends_only_what_changed_and_resumes_from_initial_versions(env) -> None:
    store, manager = env

    async def scenario() -> None:
        server, channel, cache = await _serve(store)
        c = Client(channel, delta=True)
        await c.send(discovery_pb2.DeltaDiscoveryRequest(node=NODE, type_url=CLUSTER))
        first = await c.recv()
        assert [r.name for r in first.resources] == ["web"] and not first.removed_resources
        versions = {r.name: r.version for r in first.resources}
        await c.send(discovery_pb2.DeltaDiscoveryRequest(type_url=CLUSTER, response_nonce=first.nonce))
        manager.create(_dp("api-1", "api", 9090))
        pushed = await c.recv()
        assert [r.name for r in pushed.resources] == ["api"]  # only the new one, "web" is not resent
        await c.send(discovery_pb2.DeltaDiscoveryRequest(type_url=CLUSTER, response_nonce=pushed.nonce))
        manager.delete("Dataplane", "default", "api-1")
        removed = await c.recv()
        assert list(removed.removed_resources) == ["api"] and not removed.resources
        await c.send(None)
        # a reconnecting proxy that already has "web" gets nothing for it
        c2 = Client(channel, delta=True)
        await c2.send(discovery_pb2.DeltaDiscoveryRequest(node=NODE, type_url=CLUSTER,
                                                          initial_resource_versions=versions))
        assert await c2.nothing()
        await c2.send(None)
        await channel.close()
        await server.stop(None)

    asyncio.run(scenario())


def test_refused_stream_gets_permission_denied(env) -> None:
    store, _ = env

    def deny(node: object, metadata: dict) -> tuple[str, str]:
        raise PermissionError("authentication failed: no dataplane token")

    async def scenario() -> None:
        server, channel, cache = await _serve(store, deny)
        c = Client(channel)
        await c.send(discovery_pb2.DiscoveryRequest(node=NODE, type_url=CLUSTER))
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await c.recv()
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "no dataplane token" in e.value.details()
        await channel.close()
        await server.stop(None)

    asyncio.run(scenario())


def _clusters_by_policy_count(snapshot, proxy, identity, shared):
    """EDS clusters whose content (not their endpoints) depends on the policies, as a real cluster's TLS or
    timeouts do: a MeshTrafficPermission change updates every cluster and no assignment."""
    timeout = 1 + len(snapshot.policies.get("MeshTrafficPermission", ()))
    clusters = {s: cluster_pb2.Cluster(name=s, type=cluster_pb2.Cluster.EDS) for s in snapshot.endpoints}
    for cluster in clusters.values():
        cluster.connect_timeout.seconds = timeout
    return {CLUSTER: clusters, ENDPOINT: {s: _cla(snapshot, s) for s in snapshot.endpoints}}


def test_delta_resends_the_load_assignment_of_an_updated_cluster(env) -> None:
    """Envoy replaces an updated cluster by a new one that warms until its ClusterLoadAssignment arrives, and
    in delta it does not subscribe again to a name it has: the assignment must follow the cluster, although
    unchanged, or the proxy's config freezes for initial_fetch_timeout (15 s; seen as a delayed RBAC update
    and a stray 403 in tests/e2e/test_dataplane.py)."""
    store, manager = env

    async def scenario() -> None:
        server, channel, cache = await _serve(store, generate=_clusters_by_policy_count)
        c = Client(channel, delta=True)
        await c.send(discovery_pb2.DeltaDiscoveryRequest(node=NODE, type_url=CLUSTER))
        cds = await c.recv()
        await c.send(discovery_pb2.DeltaDiscoveryRequest(type_url=ENDPOINT, resource_names_subscribe=["web"]))
        eds = await c.recv()
        assert eds.type_url == ENDPOINT and [r.name for r in eds.resources] == ["web"]
        await c.send(discovery_pb2.DeltaDiscoveryRequest(type_url=CLUSTER, response_nonce=cds.nonce))
        await c.send(discovery_pb2.DeltaDiscoveryRequest(type_url=ENDPOINT, response_nonce=eds.nonce))
        assert await c.nothing()

        manager.create(Resource("MeshTrafficPermission", "default", "allow-all", {
            "targetRef": {"kind": "Mesh"}, "from": [{"targetRef": {"kind": "Mesh"}, "default": {"action": "Allow"}}]}))
        updated = await c.recv()
        assert updated.type_url == CLUSTER and [r.name for r in updated.resources] == ["web"]
        again = await c.recv()
        assert again.type_url == ENDPOINT and [r.name for r in again.resources] == ["web"]
        assert again.resources[0].version == eds.resources[0].version   # the same assignment, sent again
        await c.send(discovery_pb2.DeltaDiscoveryRequest(type_url=CLUSTER, response_nonce=updated.nonce))
        await c.send(discovery_pb2.DeltaDiscoveryRequest(type_url=ENDPOINT, response_nonce=again.nonce))
        assert await c.nothing()
        await c.send(None)
        await channel.close()
        await server.stop(None)

    asyncio.run(scenario())


def test_a_reconnecting_proxy_gets_the_assignments_of_clusters_that_changed_while_it_was_away(env) -> None:
    """A proxy reconnects (control plane restarted) after a change: its CDS request, with the old cluster
    versions, is answered with the new clusters before it subscribes to EDS again; the version its EDS request
    reports is that of the old cluster's assignment. The assignment must still come, or the new clusters warm
    for initial_fetch_timeout (15 s; seen in tests/e2e/test_dataplane.py's outage test in delta mode)."""
    store, manager = env

    async def scenario() -> None:
        server, channel, cache = await _serve(store, generate=_clusters_by_policy_count)
        try:
            c = Client(channel, delta=True)
            await c.send(discovery_pb2.DeltaDiscoveryRequest(node=NODE, type_url=CLUSTER))
            cds = await c.recv()
            await c.send(discovery_pb2.DeltaDiscoveryRequest(type_url=ENDPOINT, resource_names_subscribe=["web"]))
            eds = await c.recv()
            had = ({r.name: r.version for r in cds.resources}, {r.name: r.version for r in eds.resources})
            await c.send(None)

            manager.create(Resource("MeshTrafficPermission", "default", "allow-all", {
                "targetRef": {"kind": "Mesh"}, "from": [{"targetRef": {"kind": "Mesh"}, "default": {"action": "Allow"}}]}))
            c2 = Client(channel, delta=True)
            await c2.send(discovery_pb2.DeltaDiscoveryRequest(node=NODE, type_url=CLUSTER, initial_resource_versions=had[0]))
            updated = await c2.recv()
            assert [r.name for r in updated.resources] == ["web"] and updated.resources[0].version != had[0]["web"]
            await c2.send(discovery_pb2.DeltaDiscoveryRequest(type_url=ENDPOINT, resource_names_subscribe=["web"],
                                                              initial_resource_versions=had[1]))
            again = await c2.recv()
            assert again.type_url == ENDPOINT and [r.name for r in again.resources] == ["web"]
            await c2.send(None)
        finally:   # a failure here must not hang the run on the open streams
            await channel.close()
            await server.stop(None)

    asyncio.run(scenario())


def test_sotw_listeners_wait_for_the_clusters_they_use(env) -> None:
    """In SotW Envoy asks for a new cluster's endpoints only once it has the cluster, and ACKs the cluster set
    only when its new clusters are warm. A listener sent sooner routes to a cluster that is not there yet: a
    503 for every request until the endpoints arrive (seen in tests/e2e/test_routing.py under load). So a
    changed listener follows the cluster set's ACK, or its NACK (Envoy keeps its clusters; the rest goes)."""
    store, manager = env

    def generate(snapshot, proxy, identity, shared):
        resources = _generate(snapshot, proxy, identity, shared)
        # one listener whose content names every cluster, as an outbound's routes do
        listener = listener_pb2.Listener(name="out", stat_prefix="+".join(sorted(snapshot.endpoints)))
        resources[LISTENER] = {"out": listener}
        return resources

    async def ack(c: Client, response, names=()) -> None:
        await c.send(discovery_pb2.DiscoveryRequest(type_url=response.type_url, version_info=response.version_info,
                                                    response_nonce=response.nonce, resource_names=names))

    async def scenario() -> None:
        server, channel, cache = await _serve(store, generate=generate)
        c = Client(channel)
        await c.send(discovery_pb2.DiscoveryRequest(node=NODE, type_url=CLUSTER))
        await ack(c, await c.recv())
        await c.send(discovery_pb2.DiscoveryRequest(type_url=ENDPOINT, resource_names=["web"]))
        await ack(c, await c.recv(), ["web"])
        await c.send(discovery_pb2.DiscoveryRequest(type_url=LISTENER))
        await ack(c, await c.recv())
        assert await c.nothing()

        for refuse in (False, True):
            service = "api" if not refuse else "db"
            manager.create(_dp(f"{service}-1", service, 9090))
            cds = await c.recv()
            assert cds.type_url == CLUSTER and service in {cluster_pb2.Cluster.FromString(r.value).name
                                                           for r in cds.resources}
            assert await c.nothing()    # the listener using the new cluster waits
            # Envoy warms the new cluster: it asks for its endpoints, which are answered at once
            names = ["api", "web"] if not refuse else ["api", "db", "web"]
            await c.send(discovery_pb2.DiscoveryRequest(type_url=ENDPOINT, resource_names=names))
            eds = await c.recv()
            assert eds.type_url == ENDPOINT and len(eds.resources) == len(names)
            await ack(c, eds, names)
            assert await c.nothing()
            if not refuse:
                await ack(c, cds)
            else:
                await c.send(discovery_pb2.DiscoveryRequest(type_url=CLUSTER, response_nonce=cds.nonce,
                                                            error_detail=status_pb2.Status(message="bad cluster")))
            lds = await c.recv()
            assert lds.type_url == LISTENER
            assert service in listener_pb2.Listener.FromString(lds.resources[0].value).stat_prefix
            await ack(c, lds)
            assert await c.nothing()
        await c.send(None)
        await channel.close()
        await server.stop(None)

    asyncio.run(scenario())


def test_the_cache_kuma_cp_runs_is_what_the_ads_server_asks_for() -> None:
    """AdsServer depends on ConfigSource only; XdsCache must keep offering it, with the same parameters."""
    import inspect

    from appliance.xds.server import ConfigSource
    for name in ("watch", "unwatch", "prepare", "resources"):
        wanted, offered = inspect.signature(getattr(ConfigSource, name)), inspect.signature(getattr(XdsCache, name))
        assert list(wanted.parameters) == list(offered.parameters), name
        assert inspect.iscoroutinefunction(getattr(ConfigSource, name)) == \
            inspect.iscoroutinefunction(getattr(XdsCache, name)), name


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
@pytest.mark.parametrize("carrier", [LISTENER, ROUTE], ids=["listener", "route"])
def test_a_cluster_goes_only_once_the_proxy_accepted_what_stopped_using_it(env, delta: bool, carrier: str) -> None:
    """A route removed: its cluster may go only once Envoy ACKed the listener (or RDS route configuration) that
    no longer names it. Any other change in the mesh while that listener is on its way must not remove the
    cluster early, or a request routed by the old listener finds no cluster: a 503 with an empty body (seen in
    tests/e2e/test_routing.py right after a MeshHTTPRoute was deleted)."""
    store, manager = env
    manager.create(_dp("api-1", "api", 9090))

    def generate(snapshot, proxy, identity, shared):
        resources = _generate(snapshot, proxy, identity, shared)
        named = "+".join(sorted(snapshot.endpoints))   # the carrier's content names every cluster
        if carrier == LISTENER:
            resources[LISTENER] = {"out": listener_pb2.Listener(name="out", stat_prefix=named)}
        else:
            resources[LISTENER] = {"out": listener_pb2.Listener(name="out")}
            resources[ROUTE] = {"out": route_pb2.RouteConfiguration(
                name="out", virtual_hosts=[route_components_pb2.VirtualHost(name=named)])}
        return resources

    def names_in(response) -> set[str]:
        if delta:
            return {r.name for r in response.resources}
        return {cluster_pb2.Cluster.FromString(r.value).name for r in response.resources}

    async def request(c: Client, t: str, names=(), previous=None) -> None:
        if delta:
            subscribe = list(names) if previous is None else []
            await c.send(discovery_pb2.DeltaDiscoveryRequest(
                node=NODE, type_url=t, resource_names_subscribe=subscribe,
                response_nonce=previous.nonce if previous is not None else ""))
        else:
            await c.send(discovery_pb2.DiscoveryRequest(
                node=NODE, type_url=t, resource_names=names, version_info=previous.version_info if previous else "",
                response_nonce=previous.nonce if previous is not None else ""))

    async def scenario() -> None:
        server, channel, cache = await _serve(store, generate=generate)
        try:
            c = Client(channel, delta=delta)
            subscriptions = [(CLUSTER, ()), (ENDPOINT, ("api", "web")), (LISTENER, ())]
            if carrier == ROUTE:
                subscriptions.append((ROUTE, ("out",)))
            for t, names in subscriptions:
                await request(c, t, names)
                await request(c, t, names, previous=await c.recv())
            assert await c.nothing()

            manager.delete("Dataplane", "default", "api-1")
            carried = await c.recv()
            while carried.type_url == ENDPOINT:    # the gone service's assignment: accepted
                await request(c, ENDPOINT, ("api", "web"), previous=carried)
                carried = await c.recv()
            assert carried.type_url == carrier
            assert await c.nothing()           # the cluster stays while the new config is on its way
            # something else changes in the mesh before the proxy answers
            manager.create(Resource("MeshTrafficPermission", "default", "allow-all", {
                "targetRef": {"kind": "Mesh"}, "from": [{"targetRef": {"kind": "Mesh"}, "default": {"action": "Allow"}}]}))
            assert await c.nothing()           # still there: the proxy has not accepted the new config yet
            await request(c, carrier, ("out",) if carrier == ROUTE else (), previous=carried)
            cds = await c.recv()
            assert cds.type_url == CLUSTER
            if delta:
                assert list(cds.removed_resources) == ["api"]
            else:
                assert names_in(cds) == {"web"}
        finally:   # a failure here must not hang the run on the open streams
            await c.send(None)
            await channel.close()
            await server.stop(None)

    asyncio.run(scenario())
