"""A builtin gateway proxy's resources: Kuma's names and shapes for HTTP listeners, routes from the MeshHTTPRoutes
that target its MeshGateway, mesh-mTLS clusters to the backends, and 404 where no route matches."""
from __future__ import annotations

from dataclasses import replace

from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from appliance.model import names
from appliance.model.proxy import GatewayCertificate, GatewayListener, MeshGateway, Proxy
from appliance.policies._gateway import select_gateway
from appliance.policies.meshhttproute.gateway import contains
from appliance.xds.generate import generate_sidecar
from appliance.xds.generate.consistency import check_consistency
from tests.unit.xds.golden import assert_golden, resources_yaml
from tests.unit.xds.scenarios import HTTP_ROUTE, IDENTITY, TCP_ROUTE, policy, routed_snapshot, subset

SHOP_CERT = GatewayCertificate("cert.rsa:secret:shop-cert", b"-----BEGIN CERTIFICATE-----\nshop\n",
                               b"-----BEGIN PRIVATE KEY-----\nshop\n")
EDGE = MeshGateway("edge", ({"kuma.io/service": "edge"},), {}, (
    GatewayListener(8080, "HTTP", "*", {}),
    GatewayListener(8080, "HTTP", "shop.example.com", {"vhost": "shop"}),
    GatewayListener(8443, "HTTPS", "shop.example.com", {"vhost": "shop"}, certificates=(SHOP_CERT,)),
    GatewayListener(8443, "HTTPS", "old.example.com", {}, tls_error="there is no Secret 'old-cert' in the mesh"),
    GatewayListener(9000, "TCP", "*", {}, connection_limit=100),
    GatewayListener(9443, "TLS", "db.example.com", {}, tls_mode="TERMINATE", certificates=(
        GatewayCertificate("cert.ecdsa:secret:db-cert", b"-----BEGIN CERTIFICATE-----\ndb\n",
                           b"-----BEGIN PRIVATE KEY-----\ndb\n"),)),
    GatewayListener(9443, "TLS", "pass.example.com", {}, tls_mode="PASSTHROUGH"),
))
API_ROUTE = policy(HTTP_ROUTE, "edge-api", {
    "targetRef": {"kind": "MeshGateway", "name": "edge"},
    "to": [{"targetRef": {"kind": "Mesh"}, "rules": [
        {"matches": [{"path": {"type": "PathPrefix", "value": "/api"}}],
         "default": {"backendRefs": [{"kind": "MeshService", "name": "backend"}]}},
    ]}],
})
SHOP_ROUTE = policy(HTTP_ROUTE, "edge-shop", {
    "targetRef": {"kind": "MeshGateway", "name": "edge", "tags": {"vhost": "shop"}},
    "to": [{"targetRef": {"kind": "Mesh"}, "hostnames": ["shop.example.com"], "rules": [
        {"matches": [{"path": {"type": "Exact", "value": "/cart"}}],
         "default": {"backendRefs": [subset("backend", "v1", 80), subset("backend", "v2", 20)],
                     "filters": [{"type": "URLRewrite", "urlRewrite": {"hostToBackendHostname": True}}]}},
    ]}],
})
DB_THROUGH_EDGE = policy(TCP_ROUTE, "edge-db", {
    "targetRef": {"kind": "MeshGateway", "name": "edge"},
    "to": [{"targetRef": {"kind": "Mesh"}, "rules": [
        {"default": {"backendRefs": [subset("db", "v1", 80), subset("db", "v2", 20)]}}]}],
})
OTHER_GATEWAY = policy(HTTP_ROUTE, "other-gateway", {
    "targetRef": {"kind": "MeshGateway", "name": "other"},
    "to": [{"targetRef": {"kind": "Mesh"}, "rules": [
        {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
         "default": {"backendRefs": [{"kind": "MeshService", "name": "web"}]}}]}],
})


def edge_proxy() -> Proxy:
    return Proxy(mesh="default", name="edge-1", address="10.0.0.9", inbounds=(), outbounds=(),
                 gateway_tags={"kuma.io/service": "edge"}, builtin_gateway=True)


def _route_config(resources: dict, port: int = 8080):
    return resources[names.ROUTE][f"edge:HTTP:{port}:*"]


def test_a_gateway_gets_kumas_listener_and_routes() -> None:
    snap = replace(routed_snapshot("STRICT", API_ROUTE, SHOP_ROUTE, OTHER_GATEWAY, DB_THROUGH_EDGE), gateways=(EDGE,))
    resources = generate_sidecar(snap, edge_proxy(), IDENTITY)
    assert check_consistency(resources) == []
    assert_golden("gateway.yaml", resources_yaml(resources))
    # one Envoy listener for the two HTTP listeners on 8080, one for HTTPS, one for TCP, one for TLS
    assert list(resources[names.LISTENER]) == ["edge:HTTP:8080", "edge:HTTPS:8443", "edge:TCP:9000", "edge:TLS:9443"]
    terminated, passed = resources[names.LISTENER]["edge:TLS:9443"].filter_chains
    assert list(terminated.filter_chain_match.server_names) == ["db.example.com"] and terminated.transport_socket.name
    assert list(passed.filter_chain_match.server_names) == ["pass.example.com"] and not passed.transport_socket.name
    assert "cert.ecdsa:secret:db-cert" in resources[names.SECRET]
    tcp = tcp_proxy_pb2.TcpProxy()
    resources[names.LISTENER]["edge:TCP:9000"].filter_chains[0].filters[1].typed_config.Unpack(tcp)
    limit, proxying = resources[names.LISTENER]["edge:TCP:9000"].filter_chains[0].filters
    assert limit.name == "envoy.filters.network.connection_limit" and proxying.name == names.TCP_PROXY_FILTER
    assert [(c.name, c.weight) for c in tcp.weighted_clusters.clusters] == [
        (names.split_cluster("db", {"version": "v1"}), 80), (names.split_cluster("db", {"version": "v2"}), 20)]
    hcm = hcm_pb2.HttpConnectionManager()
    resources[names.LISTENER]["edge:HTTP:8080"].filter_chains[0].filters[0].typed_config.Unpack(hcm)
    assert hcm.rds.route_config_name == "edge:HTTP:8080:*" and hcm.server_name == "Kuma Gateway"
    hosts = {h.name: h for h in _route_config(resources).virtual_hosts}
    assert list(hosts) == ["shop.example.com", "*"]
    # the shop's host has its own route and the gateway-wide one; the other gateway's route is nowhere
    assert [r.match.path or r.match.prefix for r in hosts["shop.example.com"].routes] == ["/cart", "/api", "/api/"]
    assert [r.match.path or r.match.prefix for r in hosts["*"].routes] == ["/api", "/api/"]
    assert "web" not in resources[names.CLUSTER]
    assert hosts["shop.example.com"].routes[0].route.auto_host_rewrite.value      # hostToBackendHostname
    split = hosts["shop.example.com"].routes[0].route.weighted_clusters.clusters
    assert [(c.name, c.weight.value) for c in split] == [("backend-154693772bc47249", 80),
                                                          ("backend-5b73b3f4adf20020", 20)]
    # the backend is called over the mesh's mTLS, checking its SPIFFE id, with the gateway's identity
    backend = resources[names.CLUSTER]["backend"]
    assert backend.transport_socket.name == names.TLS_TRANSPORT_SOCKET
    assert set(resources[names.SECRET]) == {names.identity_secret("default"), names.mesh_ca_secret("default"),
                                            "cert.rsa:secret:shop-cert", "cert.ecdsa:secret:db-cert"}


def test_https_terminates_tls_per_hostname_with_the_secrets_certificate() -> None:
    snap = replace(routed_snapshot("STRICT", API_ROUTE, SHOP_ROUTE), gateways=(EDGE,))
    resources = generate_sidecar(snap, edge_proxy(), IDENTITY)
    https = resources[names.LISTENER]["edge:HTTPS:8443"]
    # the listener whose certificate cannot be read is left out, not sent for Envoy to refuse
    (chain,) = https.filter_chains
    assert list(chain.filter_chain_match.server_names) == ["shop.example.com"]
    assert chain.transport_socket.name == names.TLS_TRANSPORT_SOCKET
    secret = resources[names.SECRET]["cert.rsa:secret:shop-cert"]
    assert secret.tls_certificate.private_key.inline_bytes == SHOP_CERT.key_pem
    config = resources[names.ROUTE]["edge:HTTPS:8443:shop.example.com"]
    (host,) = config.virtual_hosts
    assert host.require_tls == host.ALL and host.response_headers_to_add[0].header.key == "Strict-Transport-Security"
    assert [r.match.path or r.match.prefix for r in host.routes] == ["/cart", "/api", "/api/"]


def test_tcp_and_tls_listeners_without_a_route_get_no_listener() -> None:
    snap = replace(routed_snapshot("STRICT", API_ROUTE), gateways=(EDGE,))
    listeners = generate_sidecar(snap, edge_proxy(), IDENTITY)[names.LISTENER]
    assert "edge:TCP:9000" not in listeners and "edge:TLS:9443" not in listeners


def test_a_gateway_without_routes_answers_404_everywhere() -> None:
    snap = replace(routed_snapshot("STRICT"), gateways=(EDGE,))
    resources = generate_sidecar(snap, edge_proxy(), IDENTITY)
    assert check_consistency(resources) == []
    for host in _route_config(resources).virtual_hosts:
        (route,) = host.routes
        assert route.match.prefix == "/" and route.direct_response.status == 404
    assert resources[names.CLUSTER] == {}


def test_a_gateway_no_meshgateway_selects_gets_no_listener() -> None:
    snap = replace(routed_snapshot("STRICT", API_ROUTE), gateways=(EDGE,))
    proxy = replace(edge_proxy(), gateway_tags={"kuma.io/service": "elsewhere"})
    assert generate_sidecar(snap, proxy, IDENTITY)[names.LISTENER] == {}


def test_the_most_specific_selector_picks_the_gateway() -> None:
    broad = MeshGateway("broad", ({"kuma.io/service": "edge"},), {}, ())
    narrow = MeshGateway("narrow", ({"kuma.io/service": "edge", "zone": "eu"},), {}, ())
    assert select_gateway((broad, narrow), {"kuma.io/service": "edge", "zone": "eu"}) is narrow
    assert select_gateway((broad, narrow), {"kuma.io/service": "edge"}) is broad


def test_hostname_wildcards_contain_as_kumas() -> None:
    assert contains("*", "shop.example.com") and contains("*.example.com", "shop.example.com")
    assert not contains("shop.example.com", "*") and not contains("*.example.com", "example.com")
    assert not contains("*.example.com", "shop.other.com")


def test_a_certificate_secret_needs_its_chain_and_key_and_is_named_by_key_type() -> None:
    import pytest
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    from appliance.xds.snapshot import gateway_certificate

    cert = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    for key, kind in ((ec.generate_private_key(ec.SECP256R1()), "ecdsa"),
                      (rsa.generate_private_key(public_exponent=65537, key_size=2048), "rsa")):
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        found = gateway_certificate(key_pem + cert, "secret", "shop-cert")   # any order
        assert found.name == f"cert.{kind}:secret:shop-cert" and found.chain_pem == cert
        assert found.key_pem == key_pem and "PRIVATE" not in repr(found)
    with pytest.raises(ValueError, match="one PEM private key"):
        gateway_certificate(cert, "secret", "shop-cert")


def test_without_mtls_the_gateway_calls_backends_in_plaintext_and_other_hosts_get_404() -> None:
    only_shop = MeshGateway("edge", ({"kuma.io/service": "edge"},), {}, (
        GatewayListener(8080, "HTTP", "shop.example.com", {}),))
    snap = replace(routed_snapshot(None, API_ROUTE), gateways=(only_shop,))
    resources = generate_sidecar(snap, edge_proxy(), None)
    assert check_consistency(resources) == []
    assert not resources[names.CLUSTER]["backend"].HasField("transport_socket")
    assert resources[names.SECRET] == {}
    # only the listener's hostname has a virtual host: Envoy answers 404 to any other Host
    assert [h.domains for h in _route_config(resources).virtual_hosts] == [["shop.example.com"]]


def test_mesh_metrics_expose_a_gateways_stats_and_the_mads_names_its_service() -> None:
    from appliance.xds import mads

    metrics = {"name": "prom", "type": "prometheus", "conf": {"port": 5670, "skipMTLS": True}}
    snap = replace(routed_snapshot("STRICT", API_ROUTE), gateways=(EDGE,), metrics=metrics)
    proxy = replace(edge_proxy(), work_dir="/tmp")
    resources = generate_sidecar(snap, proxy, IDENTITY)
    assert "kuma:metrics:prometheus" in resources[names.LISTENER]
    assert "kuma:metrics:hijacker" in resources[names.CLUSTER]
    (found,) = mads.assignments([(snap, [proxy])], "any-client")
    assigned = mads.resource_json(found)
    assert assigned["service"] == "edge" and assigned["targets"][0]["labels"]["kuma_io_service"] == "edge"


def test_a_gateways_tags_are_its_identity_whichever_its_type() -> None:
    from appliance.core.resources.model import Resource
    from appliance.xds.snapshot import proxy_from_dataplane

    def dataplane(kind: str) -> Resource:
        return Resource("Dataplane", "default", "gw-1", {"networking": {
            "address": "10.0.0.9", "gateway": {"type": kind, "tags": {"kuma.io/service": "kong"}}}})

    delegated, builtin = proxy_from_dataplane(dataplane("DELEGATED")), proxy_from_dataplane(dataplane("BUILTIN"))
    assert delegated.services == builtin.services == ("kong",)
    assert delegated.serialized_tags == "&kuma.io/service=kong&"
    assert builtin.builtin_gateway and not delegated.builtin_gateway


def test_a_delegated_gateways_outbounds_get_the_gateway_defaults_not_the_sidecar_ones() -> None:
    from appliance.model.proxy import Outbound

    kong = Proxy(mesh="default", name="kong-1", address="10.0.0.8", inbounds=(),
                 outbounds=(Outbound(port=10001, address="127.0.0.1", service="backend"),),
                 gateway_tags={"kuma.io/service": "kong"})
    resources = generate_sidecar(routed_snapshot("STRICT"), kong, IDENTITY)
    hcm = hcm_pb2.HttpConnectionManager()
    resources[names.LISTENER]["outbound:127.0.0.1:10001"].filter_chains[0].filters[0].typed_config.Unpack(hcm)
    # mesh-gateways-timeout-all-default (proxyTypes [Gateway]) applies, as in Kuma: 5s, not the sidecars' 30m
    route = hcm.route_config.virtual_hosts[0].routes[0].route
    assert route.idle_timeout.seconds == 5
