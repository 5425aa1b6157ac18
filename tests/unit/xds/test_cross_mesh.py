"""Cross-mesh gateways (Kuma 2.14's `crossMesh: true` listeners): the gateway listener that takes mTLS from the
proxies of any mesh, the other mesh's outbound to it, and what a mesh's snapshot reads of the others."""
from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import pytest
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from appliance.ca.builtin import ca_secret_names, new_root_ca
from appliance.core.events import Change
from appliance.core.manager import ResourceManager
from appliance.core.resources.model import Resource
from appliance.model import names
from appliance.model.proxy import (
    CrossMeshGateway, Endpoint, GatewayListener, GenerationError, MeshGateway, Outbound,
)
from appliance.store.sqlite import SQLiteStore
from appliance.model import vips
from appliance.runtime.vips_sync import VipSync
from appliance.store.memory import MemoryStore
from appliance.xds import cross_mesh
from appliance.xds.cache import XdsCache
from appliance.xds.resources import CLUSTER
from appliance.xds.cross_mesh import _clusters
from appliance.xds.generate import generate_sidecar, load_assignment_for
from appliance.xds.generate.consistency import check_consistency
from appliance.xds.snapshot import build_snapshot, proxy_from_dataplane
from tests.unit.xds.golden import assert_golden, resources_yaml
from tests.unit.xds.scenarios import (
    HTTP_ROUTE, IDENTITY, endpoint, policy, routed_snapshot, snapshot, transparent_proxy, transparent_snapshot,
    web_proxy,
)
from tests.unit.xds.test_gateway import API_ROUTE, edge_proxy

GW_CA = b"-----BEGIN CERTIFICATE-----\ngw\n-----END CERTIFICATE-----\n"
OTHER_CA = b"-----BEGIN CERTIFICATE-----\nother\n-----END CERTIFICATE-----\n"
CROSS_EDGE = MeshGateway("edge", ({"kuma.io/service": "edge"},), {}, (
    GatewayListener(8080, "HTTP", "edge.gw.mesh", {"port": "8080"}, cross_mesh=True),
    GatewayListener(8081, "HTTP", "*", {}),
))
EDGE_CLUSTER = "edge-e0a36d3b164d6084_gw"   # Kuma's DestinationClusterName of {service: edge, kuma.io/mesh: gw}


def _tls(socket) -> tls_pb2.DownstreamTlsContext | tls_pb2.UpstreamTlsContext:
    context = tls_pb2.UpstreamTlsContext() if "Upstream" in socket.typed_config.type_url \
        else tls_pb2.DownstreamTlsContext()
    socket.typed_config.Unpack(context)
    return context


def test_a_cross_mesh_listener_takes_mtls_from_any_meshs_proxies() -> None:
    snap = replace(routed_snapshot("STRICT", API_ROUTE), mesh="gw", gateways=(CROSS_EDGE,),
                   all_mesh_ca_pem=GW_CA + OTHER_CA)
    resources = generate_sidecar(snap, replace(edge_proxy(), mesh="gw"), IDENTITY)
    assert check_consistency(resources) == []
    assert_golden("cross-mesh-gateway.yaml", resources_yaml(resources))
    (chain,) = resources[names.LISTENER]["edge:HTTP:8080"].filter_chains
    assert chain.filter_chain_match.transport_protocol == "tls"
    assert list(chain.filter_chain_match.application_protocols) == ["kuma"]
    context = _tls(chain.transport_socket)
    assert context.require_client_certificate.value
    validation = context.common_tls_context.combined_validation_context
    # any mesh's CA, any SPIFFE id: the client keeps its own mesh's identity
    assert validation.validation_context_sds_secret_config.name == "mesh_ca:secret:all"
    assert not validation.default_validation_context.match_typed_subject_alt_names
    assert context.common_tls_context.tls_certificate_sds_secret_configs[0].name == "identity_cert:secret:gw"
    assert resources[names.SECRET]["mesh_ca:secret:all"].validation_context.trusted_ca.inline_bytes == \
        GW_CA + OTHER_CA
    (host,) = resources[names.ROUTE]["edge:HTTP:8080:*"].virtual_hosts
    assert host.domains == ["edge.gw.mesh"] and host.require_tls == host.ALL
    # the plain HTTP listener next to it is untouched
    (plain,) = resources[names.LISTENER]["edge:HTTP:8081"].filter_chains
    assert not plain.HasField("transport_socket") and not plain.filter_chain_match.application_protocols


def test_a_cross_mesh_listener_in_a_mesh_without_mtls_is_kumas_error() -> None:
    snap = replace(routed_snapshot(None, API_ROUTE), mesh="gw", gateways=(CROSS_EDGE,))
    with pytest.raises(GenerationError, match="mTLS must be enabled for crossMesh-enabled MeshGateways"):
        generate_sidecar(snap, replace(edge_proxy(), mesh="gw"), IDENTITY)


def _consumer(mtls: str | None = "STRICT", **changes) -> tuple:
    target = CrossMeshGateway("gw", "edge", (endpoint("10.0.1.9", 8080, "edge", "edge-1", listener="cross"),), GW_CA)
    snap = snapshot(mtls, mesh="other", cross_mesh={EDGE_CLUSTER: target}, **changes)
    proxy = web_proxy(mesh="other", outbounds=(
        Outbound(port=10001, address="127.0.0.1", service="backend"),
        Outbound(port=20000, address="127.0.0.1", service="edge",
                 tags={"kuma.io/service": "edge", "kuma.io/mesh": "gw"}, mesh="gw")))
    return snap, proxy


def test_an_outbound_to_another_meshs_gateway_uses_its_own_identity_and_that_meshs_ca() -> None:
    assert names.cross_mesh_cluster("edge", "gw") == EDGE_CLUSTER
    assert names.cross_mesh_cluster("api-http", "mesh2") == "api-http-5637c619d2781fec_mesh2"   # Kuma's golden
    snap, proxy = _consumer()
    resources = generate_sidecar(snap, proxy, IDENTITY)
    assert check_consistency(resources) == []
    assert_golden("cross-mesh-outbound.yaml", resources_yaml(resources))
    listener = resources[names.LISTENER]["outbound:127.0.0.1:20000"]
    assert dict(listener.metadata.filter_metadata["io.kuma.tags"]) == {"kuma.io/service": "edge"}
    tcp = tcp_proxy_pb2.TcpProxy()
    listener.filter_chains[0].filters[0].typed_config.Unpack(tcp)
    assert tcp.cluster == EDGE_CLUSTER and tcp.stat_prefix == "edge"
    context = _tls(resources[names.CLUSTER][EDGE_CLUSTER].transport_socket)
    assert context.sni == "edge{mesh=gw}"
    common = context.common_tls_context
    assert common.tls_certificate_sds_secret_configs[0].name == "identity_cert:secret:other"
    assert common.combined_validation_context.validation_context_sds_secret_config.name == "mesh_ca:secret:gw"
    (san,) = common.combined_validation_context.default_validation_context.match_typed_subject_alt_names
    assert san.matcher.exact == "spiffe://gw/edge"
    assert resources[names.SECRET]["mesh_ca:secret:gw"].validation_context.trusted_ca.inline_bytes == GW_CA
    (lb,) = resources[names.ENDPOINT][EDGE_CLUSTER].endpoints[0].lb_endpoints
    assert (lb.endpoint.address.socket_address.address, lb.endpoint.address.socket_address.port_value) == \
        ("10.0.1.9", 8080)
    # this mesh's own outbounds are as before
    assert "backend" in resources[names.CLUSTER] and "outbound:127.0.0.1:10001" in resources[names.LISTENER]


def test_from_a_mesh_without_mtls_the_outbound_is_plaintext_as_kumas() -> None:
    snap, proxy = _consumer(None)
    resources = generate_sidecar(snap, proxy, None)
    assert not resources[names.CLUSTER][EDGE_CLUSTER].HasField("transport_socket")
    assert "mesh_ca:secret:gw" not in resources[names.SECRET]


def test_a_dataplane_outbound_tagged_with_another_mesh_is_a_cross_mesh_outbound() -> None:
    dp = Resource("Dataplane", "other", "web-1", {"networking": {"address": "10.0.0.1", "outbound": [
        {"port": 20000, "tags": {"kuma.io/service": "edge", "kuma.io/mesh": "gw"}},
        {"port": 20001, "tags": {"kuma.io/service": "backend", "kuma.io/mesh": "other"}}]}})
    edge, own = proxy_from_dataplane(dp).outbounds
    assert (edge.service, edge.mesh) == ("edge", "gw") and own.mesh == "other"   # Kuma's: its own crossMesh gateways


MTLS = {"enabledBackend": "ca-1", "backends": [{"name": "ca-1", "type": "builtin"}]}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    store = SQLiteStore(tmp_path / "kuma.db")
    yield store
    store.close()


def _put(store: SQLiteStore, type_: str, mesh: str, name: str, content: dict) -> None:
    store.create(Resource(type_, mesh, name, content))


def _builtin_ca(store: SQLiteStore, mesh: str) -> bytes:
    """What kuma-cp creates for a mesh with a builtin CA: its certificate and key as Secrets of the mesh."""
    cert, key = new_root_ca(mesh, "ca-1", key_size=1024)
    for name, pem in zip(ca_secret_names(mesh, "ca-1"), (cert, key)):
        _put(store, "Secret", mesh, name, {"data": base64.b64encode(pem).decode()})
    return cert


def test_a_snapshot_reads_the_other_meshs_gateway_proxies_and_every_meshs_ca(store) -> None:
    for mesh in ("gw", "other", "plain"):
        _put(store, "Mesh", "", mesh, {"mtls": MTLS} if mesh != "plain" else {})
    gw_ca, other_ca = _builtin_ca(store, "gw"), _builtin_ca(store, "other")
    _put(store, "MeshGateway", "gw", "edge", {
        "selectors": [{"match": {"kuma.io/service": "edge"}}], "tags": {"team": "edge"},
        "conf": {"listeners": [{"port": 8080, "protocol": "HTTP", "hostname": "edge.gw.mesh", "crossMesh": True,
                                "tags": {"port": "8080"}},
                               {"port": 8081, "protocol": "HTTP"}]}})
    _put(store, "Dataplane", "gw", "edge-1", {"networking": {
        "address": "10.0.1.9", "gateway": {"type": "BUILTIN", "tags": {"kuma.io/service": "edge"}}}})
    _put(store, "Dataplane", "gw", "backend-1", {"networking": {
        "address": "10.0.1.2", "inbound": [{"port": 80, "tags": {"kuma.io/service": "backend"}}]}})

    other = build_snapshot(store, "other", 1)
    (target,) = other.cross_mesh.values()
    assert list(other.cross_mesh) == [EDGE_CLUSTER] and (target.mesh, target.service, target.ca_pem) == \
        ("gw", "edge", gw_ca)
    (found,) = target.endpoints
    assert (found.address, found.port, found.tags) == \
        ("10.0.1.9", 8080, {"kuma.io/service": "edge", "team": "edge", "port": "8080"})
    assert other.all_mesh_ca_pem == b"" and other.cross_mesh_sources == ("gw",)   # it serves none itself
    gw = build_snapshot(store, "gw", 1)
    assert gw.all_mesh_ca_pem == gw_ca + other_ca   # "plain" has no mTLS
    assert gw.cross_mesh == other.cross_mesh        # its own sidecars reach its crossMesh listener alike


def _change(type_: str, mesh: str, name: str = "x") -> Change:
    return Change(1, "update", type_, mesh, name, 1)


def test_which_meshes_a_change_concerns_beyond_its_own() -> None:
    # the snapshot of mesh "other" knows that "gw" serves a crossMesh listener (gw's may not be built yet)
    snaps = {"other": snapshot(mesh="other", cross_mesh_sources=("gw",)), "gone": None}
    every = None
    assert cross_mesh.dependent_meshes([_change("MeshGateway", "other")], snaps) is every
    assert cross_mesh.dependent_meshes([_change("Dataplane", "gw")], snaps) is every   # a gateway proxy
    assert cross_mesh.dependent_meshes([_change("Mesh", "", "gw")], snaps) is every    # its CA
    assert cross_mesh.dependent_meshes([_change("Mesh", "", "other")], snaps) == {"gw"}   # a CA gw trusts
    assert cross_mesh.dependent_meshes([_change("Secret", "other")], snaps) == {"gw"}
    assert cross_mesh.dependent_meshes([_change("Dataplane", "other")], snaps) == set()
    assert cross_mesh.dependent_meshes([_change("Secret", "other")], {"other": snapshot(mesh="other")}) == set()


def test_the_route_policy_of_the_gateway_mesh_routes_cross_mesh_traffic() -> None:
    """A MeshHTTPRoute on the gateway applies to its crossMesh listener as to any HTTP one."""
    route = policy(HTTP_ROUTE, "edge-all", {
        "targetRef": {"kind": "MeshGateway", "name": "edge", "tags": {"port": "8080"}},
        "to": [{"targetRef": {"kind": "Mesh"}, "rules": [
            {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
             "default": {"backendRefs": [{"kind": "MeshService", "name": "backend"}]}}]}]})
    snap = replace(routed_snapshot("STRICT", route), mesh="gw", gateways=(CROSS_EDGE,), all_mesh_ca_pem=GW_CA)
    resources = generate_sidecar(snap, replace(edge_proxy(), mesh="gw"), IDENTITY)
    (host,) = resources[names.ROUTE]["edge:HTTP:8080:*"].virtual_hosts
    assert [c.name for r in host.routes for c in r.route.weighted_clusters.clusters] == ["backend"]


GATEWAY_CONTENT = {
    "selectors": [{"match": {"kuma.io/service": "edge"}}], "tags": {"team": "edge"},
    "conf": {"listeners": [{"port": 8080, "protocol": "HTTP", "hostname": "edge.gw.mesh", "crossMesh": True,
                            "tags": {"port": "8080"}},
                           {"port": 8090, "protocol": "HTTP", "hostname": "*", "crossMesh": True},
                           {"port": 8081, "protocol": "HTTP", "hostname": "public.example.com"}]}}


def test_every_mesh_gets_a_name_and_virtual_ip_for_each_cross_mesh_listener() -> None:
    """Kuma's addFromMeshGateway: the hostname (or internal.<gateway>.<mesh>.mesh), on the listener's port."""
    wanted = vips.cross_mesh_gateways([("gw", "edge", GATEWAY_CONTENT)])
    assert wanted == {
        (vips.FQDN, "edge.gw.mesh"): (vips.OutboundEntry(8080, (
            ("kuma.io/mesh", "gw"), ("kuma.io/service", "edge"), ("port", "8080"), ("team", "edge")),
            "mesh-gateway:gw:edge:edge.gw.mesh"),),
        (vips.FQDN, "internal.edge.gw.mesh"): (vips.OutboundEntry(8090, (
            ("kuma.io/mesh", "gw"), ("kuma.io/service", "edge"), ("team", "edge")),
            "mesh-gateway:gw:edge:internal.edge.gw.mesh"),)}
    domains, outbounds = vips.vip_outbounds(vips.allocate({}, wanted))
    assert domains == (vips.VipDomains("240.0.0.0", ("edge.gw.mesh",)),
                       vips.VipDomains("240.0.0.1", ("internal.edge.gw.mesh",)))
    assert [(o.address, o.port, o.service) for o in outbounds] == [("240.0.0.0", 8080, "edge"),
                                                                   ("240.0.0.1", 8090, "edge")]


def test_the_leader_gives_the_listener_a_virtual_ip_in_every_mesh() -> None:
    store = MemoryStore()
    for mesh in ("gw", "other"):
        store.create(Resource("Mesh", "", mesh, {}))
    sync = VipSync(store)
    sync.sync_if_changed()
    store.create(Resource("MeshGateway", "gw", "edge", GATEWAY_CONTENT))
    sync.sync_if_changed()   # a MeshGateway change makes a pass
    for mesh in ("gw", "other"):
        config = json.loads(store.get("Config", "", vips.config_name(mesh)).content["config"])
        assert config["2:edge.gw.mesh"]["outbounds"][0]["TagSet"]["kuma.io/mesh"] == "gw"


def test_a_transparent_proxy_reaches_each_listener_by_its_virtual_ip() -> None:
    """Each virtual IP is an outbound to the cluster of its tags (Kuma's name): the gateway's endpoints with them."""
    endpoints = [Endpoint("10.0.1.9", 8080, {"kuma.io/service": "edge", "port": "8080", "team": "edge"}, "edge-1"),
                 Endpoint("10.0.1.9", 8090, {"kuma.io/service": "edge", "team": "edge"}, "edge-1")]
    domains, outbounds = vips.vip_outbounds(vips.allocate({}, vips.cross_mesh_gateways([("gw", "edge",
                                                                                          GATEWAY_CONTENT)])))
    clusters = dict(_clusters("gw", "edge", endpoints, GW_CA, outbounds))
    snap = replace(transparent_snapshot(), mesh="other", cross_mesh=clusters, vip_domains=domains,
                   vip_outbounds=outbounds)
    resources = generate_sidecar(snap, transparent_proxy(mesh="other"), IDENTITY)
    assert check_consistency(resources) == []
    by_port = {}
    for port in (8080, 8090):
        listener = resources[names.LISTENER][f"outbound:240.0.0.{port - 8080 and 1}:{port}"]
        assert not listener.bind_to_port.value
        tcp = tcp_proxy_pb2.TcpProxy()
        listener.filter_chains[0].filters[0].typed_config.Unpack(tcp)
        assert _tls(resources[names.CLUSTER][tcp.cluster].transport_socket).sni == "edge{mesh=gw}"
        lbs = resources[names.ENDPOINT][tcp.cluster].endpoints[0].lb_endpoints
        by_port[port] = (tcp.cluster, sorted(lb.endpoint.address.socket_address.port_value for lb in lbs))
    assert by_port[8080] == (names.cross_mesh_cluster("edge", "gw", {"port": "8080", "team": "edge"}), [8080])
    # as Kuma's: tags that do not tell the listeners apart pick them all
    assert by_port[8090] == (names.cross_mesh_cluster("edge", "gw", {"team": "edge"}), [8080, 8090])
    # the endpoint-only path of the server builds load assignments by cluster name alone
    assert load_assignment_for(snap, by_port[8090][0]) == resources[names.ENDPOINT][by_port[8090][0]]


def test_a_gateway_proxy_joining_its_mesh_reaches_the_other_meshs_sidecars(tmp_path: Path) -> None:
    """The real cache and its change intake: a sidecar of mesh `other` is regenerated when the first gateway
    proxy of mesh `gw` registers, though no proxy of `gw` is watched yet."""
    store = SQLiteStore(tmp_path / "kuma.db")
    manager = ResourceManager(store)
    for mesh in ("gw", "other"):
        manager.ensure_mesh(mesh)
    manager.create(Resource("MeshGateway", "gw", "edge", GATEWAY_CONTENT))
    manager.create(Resource("Dataplane", "other", "client-1", {"networking": {"address": "127.0.0.2", "inbound": [
        {"port": 8080, "tags": {"kuma.io/service": "client"}}], "outbound": [
        {"port": 20000, "tags": {"kuma.io/service": "edge", "kuma.io/mesh": "gw"}}]}}))
    seen: list[tuple[str, ...]] = []

    def generate(snapshot, proxy, identity, shared):
        seen.append(tuple(e.address for g in snapshot.cross_mesh.values() for e in g.endpoints))
        return {CLUSTER: {}}

    async def scenario() -> None:
        cache = XdsCache(store, generate, asyncio.get_running_loop(), load_assignment_for)
        watch = cache.watch("other", "client-1")
        cache.resources(watch)
        assert seen == [()]
        woken = asyncio.Event()
        watch.changed.callback = woken.set
        manager.create(Resource("Dataplane", "gw", "edge-1", {"networking": {
            "address": "127.0.0.9", "gateway": {"type": "BUILTIN", "tags": {"kuma.io/service": "edge"}}}}))
        await asyncio.wait_for(woken.wait(), timeout=5)
        cache.resources(watch)
        assert seen[-1] == ("127.0.0.9", "127.0.0.9")   # its two crossMesh listeners
        cache.close()

    try:
        asyncio.run(scenario())
    finally:
        store.close()
