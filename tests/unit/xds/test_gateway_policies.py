"""Policies other than the routes on a builtin gateway, selected per port as Kuma 2.14 selects them (top-level
Mesh / MeshSubset with proxyTypes Gateway or none, MeshService by the gateway's service, MeshGateway by name and
listener tags): MeshTimeout on listeners, routes and clusters, MeshRetry on routes and TCP proxies,
MeshCircuitBreaker and MeshHealthCheck on clusters, MeshAccessLog on listeners, MeshRateLimit and
MeshFaultInjection on HTTP routes and listeners, MeshLoadBalancingStrategy on clusters and routes, MeshTrace on
HTTP listeners."""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from envoy.extensions.access_loggers.file.v3 import file_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from appliance.model import names
from appliance.xds.generate import generate_sidecar
from appliance.xds.generate.consistency import check_consistency
from tests.unit.xds.golden import assert_golden, resources_yaml
from tests.unit.xds.scenarios import IDENTITY, policy, routed_snapshot
from tests.unit.xds.test_gateway import API_ROUTE, DB_THROUGH_EDGE, EDGE, SHOP_ROUTE, edge_proxy

EDGE_TIMEOUTS = policy("MeshTimeout", "edge-timeouts", {
    "targetRef": {"kind": "MeshGateway", "name": "edge"},
    "rules": [{"default": {"http": {"requestTimeout": "20s", "requestHeadersTimeout": "1s"}}}],
    "to": [{"targetRef": {"kind": "Mesh"}, "default": {"http": {"requestTimeout": "3s"}}},
           {"targetRef": {"kind": "MeshService", "name": "backend"}, "default": {"connectionTimeout": "2s"}}],
})
SIDECAR_TIMEOUTS = policy("MeshTimeout", "sidecar-timeouts", {
    "targetRef": {"kind": "Mesh", "proxyTypes": ["Sidecar"]},
    "to": [{"targetRef": {"kind": "Mesh"}, "default": {"http": {"requestTimeout": "1s"}}}],
})
GATEWAY_RETRY = policy("MeshRetry", "gateway-retry", {
    "targetRef": {"kind": "Mesh", "proxyTypes": ["Gateway"]},
    "to": [{"targetRef": {"kind": "Mesh"}, "default": {"http": {"numRetries": 7}, "tcp": {"maxConnectAttempt": 2}}}],
})
EDGE_BREAKER = policy("MeshCircuitBreaker", "edge-breaker", {
    "targetRef": {"kind": "MeshService", "name": "edge"},
    "to": [{"targetRef": {"kind": "MeshService", "name": "backend"},
            "default": {"connectionLimits": {"maxConnections": 7}}}],
})

EDGE_HEALTH = policy("MeshHealthCheck", "edge-health", {
    "targetRef": {"kind": "MeshGateway", "name": "edge"},
    "to": [{"targetRef": {"kind": "MeshService", "name": "backend"},
            "default": {"interval": "7s", "http": {"path": "/health"}}}],
})
GATEWAY_LOG = policy("MeshAccessLog", "gateway-log", {
    "targetRef": {"kind": "Mesh", "proxyTypes": ["Gateway"]},
    "to": [{"targetRef": {"kind": "Mesh"},
            "default": {"backends": [{"type": "File", "file": {"path": "/tmp/out.log"}}]}}],
    "from": [{"targetRef": {"kind": "Mesh"}, "default": {"backends": [
        {"type": "File", "file": {"path": "/tmp/in.log", "format": {"plain": "%KUMA_DESTINATION_SERVICE%"}}}]}}],
})


def _generate(*extra: Any) -> dict:
    snap = replace(routed_snapshot("STRICT", API_ROUTE, SHOP_ROUTE, DB_THROUGH_EDGE, *extra), gateways=(EDGE,))
    resources = generate_sidecar(snap, edge_proxy(), IDENTITY)
    assert check_consistency(resources) == []
    return resources


def _hcm(resources: dict, listener: str) -> hcm_pb2.HttpConnectionManager:
    hcm = hcm_pb2.HttpConnectionManager()
    (found,) = [f for f in resources[names.LISTENER][listener].filter_chains[0].filters if f.name == names.HCM_FILTER]
    found.typed_config.Unpack(hcm)
    return hcm


def _tcp(resources: dict) -> tcp_proxy_pb2.TcpProxy:
    tcp = tcp_proxy_pb2.TcpProxy()
    resources[names.LISTENER]["edge:TCP:9000"].filter_chains[0].filters[1].typed_config.Unpack(tcp)
    return tcp


def _routes(resources: dict) -> list:
    return [r for name, config in resources[names.ROUTE].items() if name.startswith("edge:HTTP")
            for host in config.virtual_hosts for r in host.routes if r.HasField("route")]


def test_the_mesh_default_gateway_timeouts_and_retries_reach_the_gateway() -> None:
    resources = _generate()
    # mesh-gateways-timeout-all: the gateway listener's own timeouts, 1h idle on HTTP clusters, 5s stream idle
    hcm = _hcm(resources, "edge:HTTP:8080")
    assert (hcm.stream_idle_timeout.seconds, hcm.request_headers_timeout.nanos) == (5, 500_000_000)
    assert hcm.common_http_protocol_options.idle_timeout.seconds == 300
    assert {(r.route.timeout.seconds, r.route.idle_timeout.seconds) for r in _routes(resources)} == {(15, 5)}
    assert _tcp(resources).idle_timeout.seconds == 300
    # mesh-retry-all: Kuma's HTTP retries on every route, 5 connect attempts on TCP
    assert {r.route.retry_policy.num_retries.value for r in _routes(resources)} == {5}
    assert _tcp(resources).max_connect_attempts.value == 5
    # mesh-circuit-breaker-all: Kuma's connection limits on every cluster
    assert {c.circuit_breakers.thresholds[0].max_connections.value
            for c in resources[names.CLUSTER].values()} == {1024}


def test_gateway_policies_configure_its_listeners_routes_and_clusters() -> None:
    resources = _generate(EDGE_TIMEOUTS, SIDECAR_TIMEOUTS, GATEWAY_RETRY, EDGE_BREAKER, EDGE_HEALTH, GATEWAY_LOG)
    assert_golden("gateway_policies.yaml", resources_yaml(resources))
    hcm = _hcm(resources, "edge:HTTP:8080")
    assert (hcm.request_timeout.seconds, hcm.request_headers_timeout.seconds) == (20, 1)
    # the gateway's `to` Mesh entry sets every route's timeout; the sidecar-only policy none
    assert {r.route.timeout.seconds for r in _routes(resources)} == {3}
    clusters = resources[names.CLUSTER]
    backend = [c for n, c in clusters.items() if n.startswith("backend")]
    assert len(backend) == 3 and {c.connect_timeout.seconds for c in backend} == {2}
    assert {c.circuit_breakers.thresholds[0].max_connections.value for c in backend} == {7}
    db = [c for n, c in clusters.items() if n.startswith("db")]
    assert {c.connect_timeout.seconds for c in db} == {5}
    assert {c.circuit_breakers.thresholds[0].max_connections.value for c in db} == {1024}
    assert {r.route.retry_policy.num_retries.value for r in _routes(resources)} == {7}
    assert _tcp(resources).max_connect_attempts.value == 2
    # health checks on the backend's clusters (HTTP, from the gateway's HTTP ports), none on db's
    assert all(len(c.health_checks) == 1 and c.health_checks[0].interval.seconds == 7
               and c.health_checks[0].http_health_check.path == "/health" for c in backend)
    assert not any(c.health_checks for c in db)
    # access logs on every port: the `to` one, then the `from` one naming the gateway as the destination
    for logs in (_hcm(resources, "edge:HTTP:8080").access_log, _tcp(resources).access_log):
        files = [file_pb2.FileAccessLog() for _ in logs]
        for log, file in zip(logs, files):
            log.typed_config.Unpack(file)
        assert [f.path for f in files] == ["/tmp/out.log", "/tmp/in.log"]
        assert files[1].log_format.text_format_source.inline_string == "edge\n"


def test_a_meshgateway_policy_applies_only_to_the_ports_whose_listener_tags_match() -> None:
    shop_only = policy("MeshTimeout", "shop-only", {
        "targetRef": {"kind": "MeshGateway", "name": "edge", "tags": {"vhost": "shop"}},
        "rules": [{"default": {"http": {"requestTimeout": "20s"}}}]})
    resources = _generate(shop_only)
    # 8080 and 8443 have a listener tagged vhost: shop, the TCP port 9000 none
    assert _hcm(resources, "edge:HTTP:8080").request_timeout.seconds == 20
    assert _hcm(resources, "edge:HTTPS:8443").request_timeout.seconds == 20
    other = replace(shop_only, spec={**shop_only.spec, "targetRef": {"kind": "MeshGateway", "name": "other"}})
    assert not _hcm(_generate(other), "edge:HTTP:8080").HasField("request_timeout")


GATEWAY_RATE = policy("MeshRateLimit", "gateway-rate", {
    "targetRef": {"kind": "MeshGateway", "name": "edge"},
    "to": [{"targetRef": {"kind": "Mesh"}, "default": {"local": {
        "http": {"requestRate": {"num": 5, "interval": "10s"}, "onRateLimit": {"status": 429}},
        "tcp": {"connectionRate": {"num": 2, "interval": "1s"}}}}}],
})
GATEWAY_FAULT = policy("MeshFaultInjection", "gateway-fault", {
    "targetRef": {"kind": "MeshGateway", "name": "edge"},
    "to": [{"targetRef": {"kind": "Mesh"}, "default": {"http": [{"abort": {"httpStatus": 503, "percentage": 50}}]}}],
})
GATEWAY_LB = policy("MeshLoadBalancingStrategy", "gateway-lb", {
    "targetRef": {"kind": "MeshGateway", "name": "edge"},
    "to": [{"targetRef": {"kind": "MeshService", "name": "backend"}, "default": {"loadBalancer": {
        "type": "RingHash", "ringHash": {"hashPolicies": [{"type": "Header", "header": {"name": "x-user"}}]}}}}],
})
GATEWAY_TRACE = policy("MeshTrace", "gateway-trace", {
    "targetRef": {"kind": "MeshGateway", "name": "edge"},
    "default": {"backends": [{"type": "Zipkin", "zipkin": {"url": "http://127.0.0.1:9411/api/v2/spans"}}]},
})


def test_rate_limits_faults_balancing_and_tracing_reach_the_gateway() -> None:
    resources = _generate(GATEWAY_RATE, GATEWAY_FAULT, GATEWAY_LB, GATEWAY_TRACE)
    assert_golden("gateway_policies_http.yaml", resources_yaml(resources))
    hcm = _hcm(resources, "edge:HTTP:8080")
    assert {"envoy.filters.http.local_ratelimit", "envoy.filters.http.fault"} <= {f.name for f in hcm.http_filters}
    assert hcm.http_filters[-1].name == "envoy.filters.http.router"
    routes = _routes(resources)
    assert routes and all("envoy.filters.http.local_ratelimit" in r.typed_per_filter_config for r in routes)
    assert all([p.header.header_name for p in r.route.hash_policy] == ["x-user"] for r in routes)
    clusters = resources[names.CLUSTER]
    assert {n: c.lb_policy for n, c in clusters.items() if n.startswith("backend")} == {
        n: clusters[n].RING_HASH for n in clusters if n.startswith("backend")}
    assert all(c.lb_policy == c.ROUND_ROBIN for n, c in clusters.items() if n.startswith("db"))
    # HTTP ports traced to the Zipkin collector's cluster
    assert _hcm(resources, "edge:HTTP:8080").tracing.provider.name == "envoy.tracers.zipkin"
    assert "meshtrace:zipkin" in resources[names.CLUSTER]
    # the connection rate limit first on every chain (as Kuma: the HTTP ports' too), no HTTP faults on TCP
    for listener in ("edge:TCP:9000", "edge:HTTP:8080"):
        chain = resources[names.LISTENER][listener].filter_chains[0]
        assert chain.filters[0].name == "envoy.extensions.filters.network.local_ratelimit.v3.LocalRateLimit"


def test_a_to_entry_of_kind_meshhttproute_sets_only_that_routes_timeout() -> None:
    api_only = policy("MeshTimeout", "api-only", {
        "targetRef": {"kind": "MeshGateway", "name": "edge"},
        "to": [{"targetRef": {"kind": "MeshHTTPRoute", "name": "edge-api"}, "default": {"http": {"requestTimeout": "2s"}}}]})
    resources = _generate(api_only)
    hosts = {h.name: h for h in resources[names.ROUTE]["edge:HTTP:8080:*"].virtual_hosts}
    timeouts = {(r.match.path or r.match.prefix): r.route.timeout.seconds for r in hosts["shop.example.com"].routes}
    # /api is edge-api's rule; /cart (edge-shop's) keeps the mesh default
    assert timeouts == {"/cart": 15, "/api": 2, "/api/": 2}


def test_a_proxy_patch_reaches_the_gateway_with_kumas_gateway_origin() -> None:
    """MeshProxyPatch on a builtin gateway (Kuma applies it as on sidecars, last): its resources have origin
    "gateway"; a patch that selects no listener of the gateway (proxyTypes Sidecar) leaves it alone."""
    edge_patch = policy("MeshProxyPatch", "edge-patch", {
        "targetRef": {"kind": "MeshGateway", "name": "edge"},
        "default": {"appendModifications": [
            {"cluster": {"operation": "Patch", "match": {"origin": "gateway"}, "value": "connectTimeout: 9s"}},
            {"listener": {"operation": "Patch", "match": {"name": "edge:HTTP:8080", "origin": "gateway"},
                          "value": "perConnectionBufferLimitBytes: 1234"}},
            {"httpFilter": {"operation": "Remove", "match": {"name": "gzip-compress"}}},
            {"cluster": {"operation": "Add", "value": "name: added\nconnectTimeout: 5s\ntype: STATIC"}},
            {"listener": {"operation": "Remove", "match": {"name": "edge:TCP:9000", "origin": "inbound"}}}]}})
    sidecars_only = policy("MeshProxyPatch", "sidecars-only", {
        "targetRef": {"kind": "Mesh", "proxyTypes": ["Sidecar"]},
        "default": {"appendModifications": [{"cluster": {"operation": "Remove"}}]}})
    assert [f for f in _hcm(_generate(), "edge:HTTP:8080").http_filters if f.name == "gzip-compress"]
    resources = _generate(edge_patch, sidecars_only)
    clusters = resources[names.CLUSTER]
    assert "added" in clusters
    assert {c.connect_timeout.seconds for n, c in clusters.items() if n != "added"} == {9}
    listeners = resources[names.LISTENER]
    assert listeners["edge:HTTP:8080"].per_connection_buffer_limit_bytes.value == 1234
    assert "edge:TCP:9000" in listeners   # its origin is "gateway", not "inbound"
    assert not [f for f in _hcm(resources, "edge:HTTP:8080").http_filters if f.name == "gzip-compress"]
