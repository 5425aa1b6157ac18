"""MeshHTTPRoute on generated resources: route names, order, merging and subset clusters as Kuma 2.14 has them."""
from __future__ import annotations

from dataclasses import replace

from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from appliance.model import names
from appliance.model.proxy import Outbound
from appliance.policies.meshhttproute.plugin import hash_matches
from appliance.xds.generate import generate_sidecar
from appliance.xds.generate.consistency import check_consistency
from tests.unit.xds.cases import WEB_ROUTES
from tests.unit.xds.scenarios import (
    BACKEND_AS_TCP, CANARY, CANARY_TUNING, DB_SPLIT, IDENTITY, RING_HASH, routed_snapshot, web_proxy,
)

V1, V2 = "backend-154693772bc47249", "backend-5b73b3f4adf20020"


def _routes(resources: dict, listener: str = "outbound:127.0.0.1:10001") -> list:
    hcm = hcm_pb2.HttpConnectionManager()
    resources[names.LISTENER][listener].filter_chains[0].filters[0].typed_config.Unpack(hcm)
    return list(hcm.route_config.virtual_hosts[0].routes)


def test_route_names_are_kumas_hash_of_the_rule_matches() -> None:
    """Values from Kuma's meshhttproute plugin goldens (testdata/basic.listeners.golden.yaml)."""
    assert hash_matches([{"path": {"type": "PathPrefix", "value": "/v1"}}]) == \
        "bzv64o+joRk33jfDADgGv5ar4QyONO0NEVKnoBfJW/E="
    assert hash_matches([{"path": {"type": "PathPrefix", "value": "/v2"}},
                         {"path": {"type": "PathPrefix", "value": "/v3"}}]) == \
        "BRLj9+uPP4C2xD2r8YkH/x30Vn34XWSc48Fj/pHZdTw="
    assert hash_matches([{"queryParams": [{"type": "Exact", "name": "v1", "value": "true"}]}]) == \
        "eIgW92wXHwW4jQW9ZASIi/jftgxb/u98hIBaTzIRSIw="
    assert hash_matches([{"path": {"type": "PathPrefix", "value": "/"}}]) == \
        "9Zuf5Tg79OuZcQITwBbQykxAk2u4fRKrwYn3//AL4Yo="


def test_subset_cluster_names_are_kumas() -> None:
    assert names.split_cluster("backend", {"region": "us"}) == "backend-c72efb5be46fae6b"   # Kuma's basic golden
    assert names.split_cluster("backend", {}) == "backend"


def test_canary_splits_by_weight_and_the_header_match_goes_to_v2() -> None:
    resources = generate_sidecar(routed_snapshot("STRICT", CANARY), web_proxy(), IDENTITY)
    header, rest = _routes(resources)
    assert header.match.headers[0].name == "x-version" and header.route.cluster == V2
    assert [(c.name, c.weight.value) for c in rest.route.weighted_clusters.clusters] == [(V1, 90), (V2, 10)]
    # each part of the service is a cluster of its own, with only the endpoints carrying its tags
    assert [e.endpoint.address.socket_address.address
            for e in resources[names.ENDPOINT][V2].endpoints[0].lb_endpoints] == ["10.0.0.3"]
    assert check_consistency(resources) == []


def test_a_subset_without_endpoints_is_an_empty_load_assignment() -> None:
    """Envoy answers 503 for it (no healthy upstream) rather than refusing the config."""
    snap = routed_snapshot("STRICT", CANARY)
    only_v1 = replace(snap, endpoints={**snap.endpoints, "backend": snap.endpoints["backend"][:1]})
    resources = generate_sidecar(only_v1, web_proxy(), IDENTITY)
    assert list(resources[names.ENDPOINT][V2].endpoints) == []
    assert V2 in resources[names.CLUSTER]


def test_rules_of_several_policies_merge_as_kuma_merges_them() -> None:
    resources = generate_sidecar(routed_snapshot("STRICT", CANARY, WEB_ROUTES), web_proxy(), IDENTITY)
    exact, header, catch_all = _routes(resources)
    assert (exact.match.path, exact.route.cluster) == ("/api", "backend")   # Exact sorts first
    assert header.route.cluster == V2                                       # from backend-canary
    # the rule both policies have: the Dataplane policy's backendRefs replace the Mesh policy's
    assert [(c.name, c.weight.value) for c in catch_all.route.weighted_clusters.clusters] == [(V1, 50), (V2, 50)]
    assert [h.header.key for h in catch_all.request_headers_to_add] == ["x-routed"]


def test_without_a_route_the_outbound_keeps_its_catch_all() -> None:
    resources = generate_sidecar(routed_snapshot("STRICT"), web_proxy(), IDENTITY)
    (only,) = _routes(resources)
    assert only.route.cluster == "backend" and V1 not in resources[names.CLUSTER]


def _filter(resources: dict, listener: str) -> str:
    return resources[names.LISTENER][listener].filter_chains[0].filters[0].name


def test_tcp_route_splits_connections_by_weight() -> None:
    resources = generate_sidecar(routed_snapshot("STRICT", DB_SPLIT), web_proxy(), IDENTITY)
    proxy = tcp_proxy_pb2.TcpProxy()
    resources[names.LISTENER]["outbound:127.0.0.1:10002"].filter_chains[0].filters[0].typed_config.Unpack(proxy)
    db_v1, db_v2 = names.split_cluster("db", {"version": "v1"}), names.split_cluster("db", {"version": "v2"})
    assert proxy.stat_prefix == "db"
    assert [(c.name, c.weight) for c in proxy.weighted_clusters.clusters] == [(db_v1, 80), (db_v2, 20)]
    assert [e.endpoint.address.socket_address.address
            for e in resources[names.ENDPOINT][db_v2].endpoints[0].lb_endpoints] == ["10.0.0.5"]
    assert check_consistency(resources) == []


def test_an_http_route_wins_over_a_tcp_route_for_the_same_destination() -> None:
    """Kuma's precedence: a TCP route turns an HTTP outbound into TCP only while no HTTP route has rules for it."""
    tcp_only = generate_sidecar(routed_snapshot("STRICT", BACKEND_AS_TCP), web_proxy(), IDENTITY)
    assert _filter(tcp_only, "outbound:127.0.0.1:10001") == names.TCP_PROXY_FILTER
    both = generate_sidecar(routed_snapshot("STRICT", BACKEND_AS_TCP, CANARY), web_proxy(), IDENTITY)
    assert _filter(both, "outbound:127.0.0.1:10001") == names.HCM_FILTER
    assert len(_routes(both)) == 2


def test_load_balancing_reaches_the_service_and_its_parts_and_every_route() -> None:
    resources = generate_sidecar(routed_snapshot("STRICT", CANARY, RING_HASH), web_proxy(), IDENTITY)
    for name in ("backend", V1, V2):
        cluster = resources[names.CLUSTER][name]
        assert cluster.lb_policy == cluster_pb2.Cluster.RING_HASH
        assert (cluster.ring_hash_lb_config.minimum_ring_size.value,
                cluster.ring_hash_lb_config.maximum_ring_size.value) == (64, 1024)
    for route in _routes(resources):
        assert [p.WhichOneof("policy_specifier") for p in route.route.hash_policy] == \
            ["header", "cookie", "connection_properties"]
        assert route.route.hash_policy[0].terminal and route.route.hash_policy[1].cookie.ttl.seconds == 3600
    db = resources[names.CLUSTER]["db"]
    assert db.lb_policy == cluster_pb2.Cluster.LEAST_REQUEST
    assert (db.least_request_lb_config.choice_count.value,
            db.least_request_lb_config.active_request_bias.default_value) == (3, 1.5)


def test_entries_of_kind_mesh_http_route_tune_only_that_routes_rules() -> None:
    """Per-route timeouts, retries and hashing: the /api route of another policy keeps the service's."""
    resources = generate_sidecar(routed_snapshot("STRICT", CANARY, WEB_ROUTES, *CANARY_TUNING), web_proxy(), IDENTITY)
    api, header, catch_all = _routes(resources)
    assert api.match.path == "/api"
    assert (api.route.timeout.seconds, api.route.retry_policy.num_retries.value) == (15, 5)   # mesh defaults
    assert list(api.route.hash_policy) == []
    for route in (header, catch_all):
        assert (route.route.timeout.seconds, route.route.retry_policy.num_retries.value) == (3, 7)
        assert [p.query_parameter.name for p in route.route.hash_policy] == ["user"]


def test_routes_follow_the_snapshot_even_with_the_same_policies() -> None:
    """The routes of a destination are built once per snapshot, not once for good: a mirror to a service
    that stops being HTTP is dropped by the next snapshot, though the policy objects are the same."""
    mirror = replace(CANARY, name="backend-mirror", spec={
        "targetRef": {"kind": "Mesh"},
        "to": [{"targetRef": {"kind": "MeshService", "name": "backend"}, "rules": [
            {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
             "default": {"filters": [{"type": "RequestMirror",
                                      "requestMirror": {"backendRef": {"kind": "MeshService", "name": "web"}}}]}}]}]})
    first = routed_snapshot("STRICT", mirror)
    (route,) = _routes(generate_sidecar(first, web_proxy(), IDENTITY))
    assert [m.cluster for m in route.route.request_mirror_policies] == ["web"]
    web_is_tcp = replace(first, revision=first.revision + 1, protocols={**first.protocols, "web": "tcp"})
    (route,) = _routes(generate_sidecar(web_is_tcp, web_proxy(), IDENTITY))
    assert list(route.route.request_mirror_policies) == []


def test_a_proxy_gets_the_same_config_whichever_proxy_was_generated_first() -> None:
    """Outbound resources are shared between proxies: a mirror to `web` is configured by web's circuit breaker
    for a proxy that calls web itself, and must not be for one that does not (as its `_config` shows)."""
    mirror = replace(CANARY, name="backend-mirror", spec={
        "targetRef": {"kind": "Mesh"},
        "to": [{"targetRef": {"kind": "MeshService", "name": "backend"}, "rules": [
            {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
             "default": {"filters": [{"type": "RequestMirror",
                                      "requestMirror": {"backendRef": {"kind": "MeshService", "name": "web"}}}]}}]}]})
    snap = routed_snapshot("STRICT", mirror)
    calls_web = web_proxy(outbounds=web_proxy().outbounds + (Outbound(port=10003, address="127.0.0.1", service="web"),))
    alone = generate_sidecar(snap, web_proxy(), IDENTITY)
    shared: dict = {}
    generate_sidecar(snap, calls_web, IDENTITY, shared)
    after_the_other = generate_sidecar(snap, web_proxy(), IDENTITY, shared)
    assert after_the_other[names.CLUSTER]["web"].SerializeToString(deterministic=True) == \
        alone[names.CLUSTER]["web"].SerializeToString(deterministic=True)
