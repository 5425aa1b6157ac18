"""The zone egress and the sidecar side of external services: against Kuma 2.14's egress golden, and by behaviour."""
from __future__ import annotations

from dataclasses import replace

import pytest
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from google.protobuf import json_format

from appliance.model import names
from appliance.xds.generate import generate_sidecar
from appliance.xds.generate.consistency import check_consistency
from appliance.xds.generate.egress import EgressProxy, generate_egress
from appliance.model.proxy import (
    ExternalService, ExternalTls, Identity, MeshExternalService, MeshSnapshot, Mtls, Outbound, Policy,
)
from tests.unit.xds.scenarios import web_proxy
from tests.unit.xds.test_kuma_goldens import _assert_same, _kuma

EGRESS_01 = "egress__01.golden.yaml"
IDENTITY = Identity(b"CERT", b"KEY", 0)
EGRESS = EgressProxy("zoneegress-1", "192.168.0.1", 10002)
ALLOW_ALL = Policy("MeshTrafficPermission", "allow-all", {
    "targetRef": {"kind": "Mesh"}, "from": [{"targetRef": {"kind": "Mesh"}, "default": {"action": "Allow"}}]})


def _es(service: str = "externalservice-1", address: str = "kuma.io", port: int = 80, protocol: str = "http",
        tls: ExternalTls | None = None) -> ExternalService:
    return ExternalService(service, service, address, port, protocol,
                           {"kuma.io/service": service, "kuma.io/protocol": protocol}, tls)


def _mesh(name: str = "mesh-1", mtls: bool = True, zone_egress: bool = True, policies: tuple = (ALLOW_ALL,),
          externals: tuple[ExternalService, ...] = (_es(),)) -> MeshSnapshot:
    return MeshSnapshot(
        mesh=name, revision=1, mtls=Mtls("ca-1", "STRICT", b"CA") if mtls else None, endpoints={},
        protocols={e.service: e.protocol for e in externals}, policies={"MeshTrafficPermission": policies},
        external_services={e.service: e for e in externals}, zone_egress=zone_egress,
        egresses=(("192.168.0.1", 10002),) if zone_egress else ())


def _dict(message) -> dict:
    return json_format.MessageToDict(message)


def test_external_service_cluster_and_secrets_match_kuma() -> None:
    resources = generate_egress(EGRESS, [_mesh()], {"mesh-1": IDENTITY})
    _assert_same(resources[names.CLUSTER]["mesh-1:externalservice-1"],
                 _kuma(EGRESS_01, names.CLUSTER, "mesh-1:externalservice-1"))
    for name in ("identity_cert:secret:mesh-1", "mesh_ca:secret:mesh-1"):
        _assert_same(resources[names.SECRET][name], _kuma(EGRESS_01, names.SECRET, name))


def test_external_service_filter_chain_matches_kuma_but_for_the_permission_filter() -> None:
    """Kuma's golden holds a legacy TrafficPermission (network RBAC); with MeshTrafficPermission Kuma puts
    an HTTP RBAC filter in the connection manager instead. The rest of the chain is the same."""
    snapshot = replace(_mesh(), known_internal_cidrs=("127.0.0.1/32",))   # as Kuma's test context
    ours = generate_egress(EGRESS, [snapshot], {"mesh-1": IDENTITY})[names.LISTENER]["inbound:192.168.0.1:10002"]
    kuma = _kuma(EGRESS_01, names.LISTENER, "inbound:192.168.0.1:10002")
    kuma_chain = next(c for c in kuma.filter_chains if c.name == "externalservice-1_mesh-1")
    del kuma_chain.filters[0]   # the legacy network RBAC
    chain = ours.filter_chains[0]
    hcm = http_connection_manager_pb2.HttpConnectionManager()
    chain.filters[0].typed_config.Unpack(hcm)
    assert hcm.http_filters[0].name == names.HTTP_RBAC_FILTER
    del hcm.http_filters[0]
    chain.filters[0].typed_config.Pack(hcm)
    _assert_same(chain, kuma_chain)
    del kuma.filter_chains[:]
    del ours.filter_chains[:]
    _assert_same(ours, kuma)


def test_permissions_on_the_egress_follow_mesh_traffic_permission() -> None:
    deny_web = Policy("MeshTrafficPermission", "deny-web", {
        "targetRef": {"kind": "MeshService", "name": "externalservice-1"},
        "from": [{"targetRef": {"kind": "MeshService", "name": "web"}, "default": {"action": "Deny"}}]})

    def principals(policies: tuple) -> list:
        listener = generate_egress(EGRESS, [_mesh(policies=policies)], {})[names.LISTENER]["inbound:192.168.0.1:10002"]
        hcm = http_connection_manager_pb2.HttpConnectionManager()
        listener.filter_chains[0].filters[0].typed_config.Unpack(hcm)
        rbac = _dict(hcm.http_filters[0])["typedConfig"]["rules"]
        return [p for policy in rbac.get("policies", {}).values() for p in policy["principals"]]

    assert principals(()) == []                                        # nobody: closed by default
    assert principals((ALLOW_ALL,)) == [{"any": True}]
    assert principals((ALLOW_ALL, deny_web)) == [
        {"notId": {"authenticated": {"principalName": {"exact": "spiffe://mesh-1/web"}}}}]


def test_tcp_external_service_gets_a_tcp_proxy_and_network_rbac() -> None:
    resources = generate_egress(EGRESS, [_mesh(externals=(_es("db", "10.0.0.9", 5432, "tcp"),))], {})
    chain = resources[names.LISTENER]["inbound:192.168.0.1:10002"].filter_chains[0]
    assert [f.name for f in chain.filters] == [names.NETWORK_RBAC_FILTER, names.TCP_PROXY_FILTER]
    assert resources[names.CLUSTER]["mesh-1:db"].type == resources[names.CLUSTER]["mesh-1:db"].STATIC


def test_one_egress_serves_every_mesh_with_mtls_and_no_other() -> None:
    snapshots = [_mesh("mesh-1"), _mesh("mesh-2"), _mesh("plain", mtls=False)]
    resources = generate_egress(EGRESS, snapshots, {"mesh-1": IDENTITY, "mesh-2": IDENTITY})
    listener = resources[names.LISTENER]["inbound:192.168.0.1:10002"]
    assert [c.filter_chain_match.server_names[0] for c in listener.filter_chains] == [
        "externalservice-1{mesh=mesh-1}", "externalservice-1{mesh=mesh-2}"]
    assert sorted(resources[names.CLUSTER]) == ["mesh-1:externalservice-1", "mesh-2:externalservice-1"]
    assert check_consistency(resources) == []


def test_no_external_service_means_no_listener() -> None:
    resources = generate_egress(EGRESS, [_mesh(externals=())], {"mesh-1": IDENTITY})
    assert resources[names.LISTENER] == {}


def test_upstream_tls_as_the_external_service_asks() -> None:
    es = _es("secure", "127.0.0.1", 8443, "http", ExternalTls(ca_cert=b"MYCA", server_name="api.example"))
    cluster = generate_egress(EGRESS, [_mesh(externals=(es,))], {})[names.CLUSTER]["mesh-1:secure"]
    match = cluster.transport_socket_matches[0]
    context = tls_pb2.UpstreamTlsContext()
    match.transport_socket.typed_config.Unpack(context)
    assert context.sni == "api.example"
    assert context.common_tls_context.validation_context.trusted_ca.inline_bytes == b"MYCA"
    assert {m.matcher.exact for m in context.common_tls_context.validation_context.match_typed_subject_alt_names} \
        == {"api.example"}
    # the match selects the endpoint by the tags it carries
    endpoint_tags = cluster.load_assignment.endpoints[0].lb_endpoints[0].metadata.filter_metadata[
        "envoy.transport_socket_match"]
    assert _dict(match.match) == _dict(endpoint_tags)
    assert _dict(match.match)["kuma.io/external-service-name"] == "secure"


# --- the sidecar side -------------------------------------------------------------------------------------

def _sidecar(snapshot: MeshSnapshot):
    proxy = replace(web_proxy(mesh="mesh-1"), outbounds=(Outbound(10002, "127.0.0.1", "externalservice-1"),))
    return generate_sidecar(snapshot, proxy, IDENTITY)


def test_sidecar_goes_through_the_egress_with_mtls_when_the_mesh_says_so() -> None:
    resources = _sidecar(_mesh(zone_egress=True))
    cluster = resources[names.CLUSTER]["externalservice-1"]
    assert cluster.type == cluster.EDS
    context = tls_pb2.UpstreamTlsContext()
    cluster.transport_socket.typed_config.Unpack(context)
    assert context.sni == "externalservice-1{mesh=mesh-1}"
    sans = context.common_tls_context.combined_validation_context.default_validation_context
    assert sans.match_typed_subject_alt_names[0].matcher.exact == "spiffe://mesh-1/zone-egress"
    cla = resources[names.ENDPOINT]["externalservice-1"]
    socket = cla.endpoints[0].lb_endpoints[0].endpoint.address.socket_address
    assert (socket.address, socket.port_value) == ("192.168.0.1", 10002)
    assert check_consistency(resources) == []


def test_sidecar_goes_direct_without_zone_egress() -> None:
    resources = _sidecar(_mesh(zone_egress=False))
    cluster = resources[names.CLUSTER]["externalservice-1"]
    assert cluster.type == cluster.STRICT_DNS
    socket = cluster.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address
    assert (socket.address, socket.port_value) == ("kuma.io", 80)
    assert "externalservice-1" not in resources[names.ENDPOINT]     # a DNS name may not travel by EDS
    hcm = http_connection_manager_pb2.HttpConnectionManager()
    listener = resources[names.LISTENER]["outbound:127.0.0.1:10002"]
    listener.filter_chains[0].filters[0].typed_config.Unpack(hcm)
    assert hcm.route_config.virtual_hosts[0].routes[0].route.auto_host_rewrite.value is True
    assert check_consistency(resources) == []


@pytest.mark.parametrize("zone_egress", [True, False])
def test_the_routing_flag_changes_clusters_and_endpoints_but_not_listeners(zone_egress: bool) -> None:
    """Flipping routing.zoneEgress re-routes without draining the outbound listener."""
    a, b = _sidecar(_mesh(zone_egress=zone_egress)), _sidecar(_mesh(zone_egress=not zone_egress))
    assert a[names.LISTENER] == b[names.LISTENER]


# --- MeshExternalService ----------------------------------------------------------------------------------

MES_1 = MeshExternalService("meshexternalservice-1", "mesh-1_meshexternalservice-1___extsvc_9090",
                            "a45e197ed7825551b.meshexternalservice-1.9090.mesh-1.mes", "http",
                            (("127.0.0.1", 8080), ("example.com", 1234)), None)


def _with_mes(snapshot: MeshSnapshot) -> MeshSnapshot:
    return replace(snapshot, mesh_external_services={MES_1.destination: MES_1}, known_internal_cidrs=("127.0.0.1/32",))


def test_mesh_external_service_cluster_and_chain_match_kuma() -> None:
    resources = generate_egress(EGRESS, [_with_mes(_mesh(externals=()))], {"mesh-1": IDENTITY})
    name = MES_1.destination
    _assert_same(resources[names.CLUSTER][name], _kuma(EGRESS_01, names.CLUSTER, name))
    ours = resources[names.LISTENER]["inbound:192.168.0.1:10002"].filter_chains[0]
    kuma = next(c for c in _kuma(EGRESS_01, names.LISTENER, "inbound:192.168.0.1:10002").filter_chains
                if c.name == name)
    _assert_same(ours, kuma)


def test_mesh_external_service_sni_and_name_from_the_store_shape() -> None:
    from appliance.xds.snapshot import mes_destination, mes_sni
    assert mes_sni("mesh-1", "meshexternalservice-1", 9090) == MES_1.sni
    assert mes_destination("mesh-1", "meshexternalservice-1", 9090) == MES_1.destination


def test_mesh_external_service_access_can_be_forbidden_by_default() -> None:
    snapshot = replace(_with_mes(_mesh(externals=())), forbid_mesh_external_service_access=True)
    chain = generate_egress(EGRESS, [snapshot], {})[names.LISTENER]["inbound:192.168.0.1:10002"].filter_chains[0]
    hcm = http_connection_manager_pb2.HttpConnectionManager()
    chain.filters[0].typed_config.Unpack(hcm)
    assert "policies" not in _dict(hcm.http_filters[0])["typedConfig"]["rules"]


def test_sidecar_reaches_a_mesh_external_service_through_the_egress() -> None:
    proxy = replace(web_proxy(mesh="mesh-1"), outbounds=(Outbound(10005, "127.0.0.1", MES_1.destination),))
    resources = generate_sidecar(_with_mes(_mesh(externals=())), proxy, IDENTITY)
    cluster = resources[names.CLUSTER][MES_1.destination]
    context = tls_pb2.UpstreamTlsContext()
    cluster.transport_socket.typed_config.Unpack(context)
    assert context.sni == MES_1.sni
    socket = resources[names.ENDPOINT][MES_1.destination].endpoints[0].lb_endpoints[0].endpoint.address.socket_address
    assert (socket.address, socket.port_value) == ("192.168.0.1", 10002)
    assert check_consistency(resources) == []
