"""Outbounds to MeshExternalServices (xds/generate/meshexternalservices.py): a transparent proxy gets one at each
MeshExternalService's VIP, through the zone egress, named as Kuma 2.14 names them, and its DNS answers the
MeshExternalService's hostnames; a Dataplane's own backendRef outbound is the same outbound. The mesh is built
through the store and the leader's round, as a running control plane builds it."""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone

from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from google.protobuf import json_format

from appliance.core.resources.model import Resource
from appliance.model import hostnames, names
from appliance.model.proxy import Inbound, MeshSnapshot, Mtls, Outbound, Proxy, TransparentProxy
from appliance.runtime.meshservice_sync import MeshServiceSync
from appliance.store.memory import MemoryStore
from appliance.xds.generate import generate_sidecar
from appliance.xds.snapshot import build_snapshot, mes_destination
from tests.unit.xds.golden import assert_golden, resources_yaml
from tests.unit.xds.scenarios import CA_PEM, IDENTITY, served_dns_records

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
TP = TransparentProxy(inbound_port=15006, outbound_port=15001, ipv6=False, dns_port=15053)
# the labels the API gives a MeshExternalService created on a zone control plane named zone-1
ZONE_LABELS = {"kuma.io/origin": "zone", "kuma.io/zone": "zone-1", "kuma.io/env": "universal",
               "kuma.io/mesh": "default"}
HTTPBIN = "default_httpbin__zone-1_extsvc_80"          # <mesh>_<name>_<namespace>_<zone>_extsvc_<port>
HTTPBIN_KRI = "kri_extsvc_default_zone-1__httpbin_80"  # kri_extsvc_<mesh>_<zone>_<namespace>_<name>_<port>


def _mes(name: str, port: int, protocol: str, labels: dict[str, str], address: str = "example.com",
         endpoint_port: int = 10000) -> Resource:
    return Resource("MeshExternalService", "default", name, {"spec": {
        "match": {"type": "HostnameGenerator", "port": port, "protocol": protocol},
        "endpoints": [{"address": address, "port": endpoint_port}]}}, labels)


def _snapshot(*services: Resource, mode: str = "Disabled", forbid: bool = False) -> MeshSnapshot:
    store = MemoryStore()
    store.create(Resource("Mesh", "", "default", {"meshServices": {"mode": mode},
                                                  "routing": {"defaultForbidMeshExternalServiceAccess": forbid}}))
    for name, spec in hostnames.DEFAULTS:
        store.create(Resource("HostnameGenerator", "", name, {"spec": spec}, dict(hostnames.DEFAULT_LABELS)))
    store.create(Resource("ZoneEgress", "", "egress-1", {"networking": {"address": "127.0.0.1", "port": 10002}}))
    for service in services:
        store.create(service)
    MeshServiceSync(store, "zone-1").sync(NOW)   # VIPs and hostnames, as the leader gives them
    found = build_snapshot(store, "default", store.revision())
    assert found is not None
    return replace(found, mtls=Mtls("ca-1", "STRICT", CA_PEM))


def _web(tp: TransparentProxy | None = TP, outbounds: tuple[Outbound, ...] = ()) -> Proxy:
    """Kuma's dppForMeshExternalService: web-01 at 192.168.0.2, an HTTP inbound of service web."""
    return Proxy(mesh="default", name="web-01", address="192.168.0.2",
                 inbounds=(Inbound(80, 8080, "192.168.0.2", "127.0.0.1", {"kuma.io/service": "web",
                                                                         "kuma.io/protocol": "http"}, "http"),),
                 outbounds=outbounds, transparent_proxy=tp, features=frozenset({"feature-embedded-dns"}),
                 work_dir="/tmp/web")


def _dict(message) -> dict:
    return json_format.MessageToDict(message)


def _hcm(resources: dict, listener: str) -> hcm_pb2.HttpConnectionManager:
    hcm = hcm_pb2.HttpConnectionManager()
    resources[names.LISTENER][listener].filter_chains[0].filters[0].typed_config.Unpack(hcm)
    return hcm


def test_the_vip_outbound_is_kumas_default_meshexternalservice() -> None:
    """Kuma 2.14.3's golden default-meshexternalservice (meshhttproute plugin testdata): MeshExternalService
    `example` of mesh `default` (no zone or namespace labels), match port 9090 HTTP, endpoint example.com:10000,
    VIP 10.20.20.1 there (ours is the leader's first of 242.0.0.0/8), a zone egress on 127.0.0.1:10002. Kuma's
    test builds the outbound without a section name (`kri_extsvc_default___example_`); AsOutbounds, which
    gives a sidecar its VIP outbound, names the port (`..._9090`)."""
    snapshot = _snapshot(_mes("example", 9090, "http", {"kuma.io/origin": "zone"}))
    resources = generate_sidecar(snapshot, _web(), IDENTITY)
    listener = resources[names.LISTENER]["outbound:242.0.0.0:9090"]
    assert _dict(listener.metadata) == {"filterMetadata": {"io.kuma.tags": {
        "kuma.io/unified-name": "kri_extsvc_default___example_9090"}}}
    hcm = _hcm(resources, "outbound:242.0.0.0:9090")
    assert hcm.stat_prefix == "default_example___extsvc_9090" and hcm.normalize_path.value
    assert _dict(hcm.route_config) == {
        "name": "kri_extsvc_default___example_9090", "validateClusters": False,
        "virtualHosts": [{"domains": ["*"], "name": "default_example___extsvc_9090", "routes": [{
            "match": {"prefix": "/"}, "name": "9Zuf5Tg79OuZcQITwBbQykxAk2u4fRKrwYn3//AL4Yo=",
            "route": {"autoHostRewrite": True, "cluster": "default_example___extsvc_9090", "timeout": "0s"}}]}]}
    cluster = _dict(resources[names.CLUSTER]["default_example___extsvc_9090"])
    assert cluster["type"] == "EDS" and cluster["edsClusterConfig"] == {
        "edsConfig": {"ads": {}, "resourceApiVersion": "V3"}}
    context = cluster["transportSocket"]["typedConfig"]
    assert context["sni"] == "afce62f771ed74b78.example.9090.default.mes"
    validation = context["commonTlsContext"]["combinedValidationContext"]["defaultValidationContext"]
    assert validation == {"matchTypedSubjectAltNames": [{"matcher": {"exact": "spiffe://default/zone-egress"},
                                                         "sanType": "URI"}]}
    assert cluster["typedExtensionProtocolOptions"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"][
        "explicitHttpConfig"] == {"httpProtocolOptions": {}}
    assert _dict(resources[names.ENDPOINT]["default_example___extsvc_9090"]) == {
        "clusterName": "default_example___extsvc_9090", "endpoints": [{"lbEndpoints": [{
            "endpoint": {"address": {"socketAddress": {"address": "127.0.0.1", "portValue": 10002}}},
            "loadBalancingWeight": 1}]}]}
    assert served_dns_records(resources) == {"example.extsvc.mesh.local": ["242.0.0.0"]}


def test_golden_transparent_proxy_with_meshexternalservices() -> None:
    """As the API writes them (zone labels): an HTTP and a TCP one, each at its VIP, with its hostname."""
    snapshot = _snapshot(_mes("httpbin", 80, "http", ZONE_LABELS),
                         _mes("tcpbin", 4242, "tcp", ZONE_LABELS, "tcpbin.com", 4242))
    resources = generate_sidecar(snapshot, _web(), IDENTITY)
    assert_golden("meshexternalservice-outbounds.yaml", resources_yaml(resources))
    assert {n for n in resources[names.LISTENER] if n.startswith("outbound:242.")} == {
        "outbound:242.0.0.0:80", "outbound:242.0.0.1:4242"}
    assert _hcm(resources, "outbound:242.0.0.0:80").route_config.name == HTTPBIN_KRI
    assert {HTTPBIN, "default_tcpbin__zone-1_extsvc_4242"} <= set(resources[names.CLUSTER])
    assert served_dns_records(resources) == {"httpbin.extsvc.mesh.local": ["242.0.0.0"],
                                   "tcpbin.extsvc.mesh.local": ["242.0.0.1"]}


def test_a_dataplanes_backend_ref_is_the_same_outbound() -> None:
    snapshot = _snapshot(_mes("httpbin", 80, "http", ZONE_LABELS))
    listed = _web(None, (Outbound(10004, "127.0.0.1", mes_destination("default", "httpbin", 0)),
                         Outbound(10005, "127.0.0.1", mes_destination("default", "httpbin", 80))))
    resources = generate_sidecar(snapshot, listed, IDENTITY)
    for listener in ("outbound:127.0.0.1:10004", "outbound:127.0.0.1:10005"):
        hcm = _hcm(resources, listener)
        assert hcm.route_config.virtual_hosts[0].routes[0].route.cluster == HTTPBIN
        assert hcm.route_config.name == HTTPBIN_KRI
    assert HTTPBIN in resources[names.CLUSTER] and HTTPBIN in resources[names.ENDPOINT]
    assert not [n for n in resources[names.CLUSTER] if "___extsvc" in n]


def _vip_listeners(snapshot: MeshSnapshot, tp: TransparentProxy) -> set[str]:
    return {n for n in generate_sidecar(snapshot, _web(tp), IDENTITY)[names.LISTENER] if n.startswith("outbound:242.")}


def test_which_transparent_proxies_get_them_follows_kumas_resolve_vip_outbounds() -> None:
    services = (_mes("httpbin", 80, "http", ZONE_LABELS), _mes("tcpbin", 4242, "tcp", {**ZONE_LABELS, "team": "x"}))
    everywhere = _snapshot(*services, mode="Everywhere")
    assert _vip_listeners(everywhere, TP) == {"outbound:242.0.0.0:80", "outbound:242.0.0.1:4242"}
    # reachableBackends: by name (a port does not narrow a MeshExternalService's one port) or by labels
    by_name = replace(TP, reachable_backends=(("MeshExternalService", "httpbin", 1234, ()),))
    assert _vip_listeners(everywhere, by_name) == {"outbound:242.0.0.0:80"}
    by_labels = replace(TP, reachable_backends=(("MeshExternalService", "", 0, (("team", "x"),)),))
    assert _vip_listeners(everywhere, by_labels) == {"outbound:242.0.0.1:4242"}
    assert _vip_listeners(everywhere, replace(TP, reachable_backends=(("MeshService", "httpbin", 0, ()),))) == set()
    # reachableServices without reachableBackends, or mode ReachableBackends without them: none
    assert _vip_listeners(everywhere, replace(TP, reachable_services=("backend",))) == set()
    assert _vip_listeners(_snapshot(*services, mode="ReachableBackends"), TP) == set()
    assert _vip_listeners(_snapshot(*services, mode="ReachableBackends"), by_name) == {"outbound:242.0.0.0:80"}


def test_a_meshexternalservice_without_a_vip_gets_no_outbound() -> None:
    snapshot = _snapshot(_mes("httpbin", 80, "http", ZONE_LABELS))
    [mes] = {m.destination: m for m in snapshot.mesh_external_services.values()}.values()
    without = replace(snapshot, mesh_external_services={k: replace(mes, vip="")
                                                        for k in snapshot.mesh_external_services})
    resources = generate_sidecar(without, _web(), IDENTITY)
    assert not [n for n in resources[names.LISTENER] if n.startswith("outbound:242.")]
    assert served_dns_records(resources) == {}
