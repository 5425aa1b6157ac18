"""The four policy plugins on generated resources: what each Kuma field becomes in Envoy."""
from __future__ import annotations

from dataclasses import replace

from google.protobuf import json_format
from google.protobuf.message import Message

from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from appliance.policies.meshretry import plugin as meshretry
from appliance.model import names
from appliance.xds.generate import generate_sidecar
from tests.unit.xds.scenarios import IDENTITY, db_proxy, default_policies, policy, snapshot, web_proxy

MTP = "MeshTrafficPermission"


def _inbound(resources: dict, proxy_inbound_name: str) -> Message:
    return resources[names.LISTENER][proxy_inbound_name]


def _hcm(listener: Message, chain: int = 0) -> hcm_pb2.HttpConnectionManager:
    hcm = hcm_pb2.HttpConnectionManager()
    listener.filter_chains[chain].filters[0].typed_config.Unpack(hcm)  # type: ignore[attr-defined]
    return hcm


def _inbound_route(resources: dict, listener: Message, chain: int = 0) -> Message:
    """Inbound route configurations come by RDS: the one the chain's HCM names."""
    hcm = _hcm(listener, chain)
    assert not hcm.HasField("route_config")
    return resources[names.ROUTE][hcm.rds.route_config_name]


def _http_rbac(resources: dict, listener: Message, chain: int = 0) -> dict:
    """The RBAC decision of an HTTP inbound: a fixed deny-all filter in the HCM, the verdict per route."""
    hcm = _hcm(listener, chain)
    assert hcm.http_filters[0].name == names.HTTP_RBAC_FILTER
    fixed = http_rbac_pb2.RBAC()
    hcm.http_filters[0].typed_config.Unpack(fixed)
    assert json_format.MessageToDict(fixed) == {"rules": {}}
    per_route = http_rbac_pb2.RBACPerRoute()
    host = _inbound_route(resources, listener, chain).virtual_hosts[0]
    host.typed_per_filter_config[names.HTTP_RBAC_FILTER].Unpack(per_route)
    return json_format.MessageToDict(per_route.rbac)


def _network_rbac(listener: Message) -> dict:
    first = listener.filter_chains[0].filters[0]  # type: ignore[attr-defined]
    assert first.name == names.NETWORK_RBAC_FILTER
    rbac = network_rbac_pb2.RBAC()
    first.typed_config.Unpack(rbac)
    return json_format.MessageToDict(rbac)


def _with(*extra) -> dict:
    return default_policies(extra=extra)


WEB_INBOUND = "inbound:10.0.0.1:8080"
DB_INBOUND = "inbound:10.0.0.4:5432"


# --- MeshTrafficPermission ---------------------------------------------------------------------

def test_without_mtls_there_is_no_rbac() -> None:
    allow_all = policy(MTP, "allow-all", {"from": [{"targetRef": {"kind": "Mesh"}, "default": {"action": "Allow"}}]})
    listener = _inbound(generate_sidecar(snapshot(policies=_with(allow_all)), web_proxy(), None), WEB_INBOUND)
    assert [f.name for f in _hcm(listener).http_filters] == [names.ROUTER_FILTER]


def test_with_mtls_and_no_permission_everyone_is_denied() -> None:
    resources = generate_sidecar(snapshot("STRICT"), web_proxy(), IDENTITY)
    assert _http_rbac(resources, _inbound(resources, WEB_INBOUND)) == {"rules": {}}


def test_mesh_allow_lets_any_authenticated_client_in() -> None:
    allow_all = policy(MTP, "allow-all", {"targetRef": {"kind": "Mesh"},
                                          "from": [{"targetRef": {"kind": "Mesh"}, "default": {"action": "Allow"}}]})
    resources = generate_sidecar(snapshot("STRICT", policies=_with(allow_all)), web_proxy(), IDENTITY)
    assert _http_rbac(resources, _inbound(resources, WEB_INBOUND)) == {"rules": {"policies": {"MeshTrafficPermission": {
        "permissions": [{"any": True}], "principals": [{"any": True}]}}}}


def test_tcp_inbound_gets_a_network_rbac_filter_with_kumas_stat_prefix() -> None:
    allow = policy(MTP, "web-to-db", {"targetRef": {"kind": "MeshService", "name": "db"},
                                      "from": [{"targetRef": {"kind": "MeshService", "name": "web"},
                                                "default": {"action": "Allow"}}]})
    listener = _inbound(generate_sidecar(snapshot("STRICT", policies=_with(allow)), db_proxy(), IDENTITY), DB_INBOUND)
    assert _network_rbac(listener) == {"statPrefix": "inbound_10_0_0_4_5432.", "rules": {"policies": {
        "MeshTrafficPermission": {"permissions": [{"any": True}], "principals": [
            {"authenticated": {"principalName": {"exact": "spiffe://default/web"}}}]}}}}


def test_a_policy_for_another_service_leaves_the_inbound_denied() -> None:
    allow = policy(MTP, "to-backend", {"targetRef": {"kind": "MeshService", "name": "backend"},
                                       "from": [{"targetRef": {"kind": "Mesh"}, "default": {"action": "Allow"}}]})
    listener = _inbound(generate_sidecar(snapshot("STRICT", policies=_with(allow)), db_proxy(), IDENTITY), DB_INBOUND)
    assert _network_rbac(listener)["rules"] == {}


def test_mesh_subset_clients_are_matched_by_their_kuma_tag_san() -> None:
    allow = policy(MTP, "frontend", {"from": [{"targetRef": {"kind": "MeshSubset", "tags": {"team": "frontend"}},
                                               "default": {"action": "AllowWithShadowDeny"}}]})
    rbac = _network_rbac(_inbound(generate_sidecar(snapshot("STRICT", policies=_with(allow)), db_proxy(), IDENTITY),
                                  DB_INBOUND))
    frontend = [{"authenticated": {"principalName": {"exact": "kuma://team/frontend"}}}]
    assert rbac["rules"]["policies"]["MeshTrafficPermission"]["principals"] == frontend
    assert rbac["shadowRules"] == {"action": "DENY", "policies": {"MeshTrafficPermission": {
        "permissions": [{"any": True}], "principals": frontend}}}


def test_permissive_mode_checks_only_the_mesh_mtls_chain() -> None:
    resources = generate_sidecar(snapshot("PERMISSIVE"), web_proxy(), IDENTITY)
    listener = _inbound(resources, WEB_INBOUND)
    assert [c.filter_chain_match.transport_protocol for c in listener.filter_chains] == ["raw_buffer", "tls", "tls"]
    assert [list(c.filter_chain_match.application_protocols) for c in listener.filter_chains] == [[], [], ["kuma"]]
    assert [f.name for f in _hcm(listener, 0).http_filters] == [names.ROUTER_FILTER]
    assert _http_rbac(resources, listener, 2) == {"rules": {}}
    # one route configuration for the three chains: only the mTLS one reads its RBAC decision
    assert {_hcm(listener, i).rds.route_config_name for i in range(3)} == {"inbound:web"}
    assert listener.listener_filters[0].name == names.TLS_INSPECTOR


def _flip(action: str) -> dict:
    flip = policy(MTP, "flip", {"targetRef": {"kind": "Mesh"},
                                "from": [{"targetRef": {"kind": "Mesh"}, "default": {"action": action}}]})
    return generate_sidecar(snapshot("STRICT", policies=_with(flip)), web_proxy(), IDENTITY)


def test_an_allow_deny_flip_changes_the_route_configuration_and_never_the_listener() -> None:
    """Envoy applies a new route configuration to the next request on every open connection; a new
    listener only to new connections (the old ones drain under the old verdict)."""
    allow, deny = _flip("Allow"), _flip("Deny")
    assert allow[names.LISTENER] == deny[names.LISTENER]
    assert allow[names.ROUTE]["inbound:web"] != deny[names.ROUTE]["inbound:web"]
    assert _http_rbac(deny, deny[names.LISTENER][WEB_INBOUND]) == {"rules": {}}


def test_rules_allow_exactly_the_clients_they_name_and_take_over_from_from() -> None:
    rules = policy(MTP, "only-web", {"targetRef": {"kind": "Mesh"}, "rules": [{"default": {
        "allow": [{"spiffeID": {"type": "Exact", "value": "spiffe://default/web"}}]}}]})
    everyone = policy(MTP, "allow-all", {"from": [{"targetRef": {"kind": "Mesh"}, "default": {"action": "Allow"}}]})
    resources = generate_sidecar(snapshot("STRICT", policies=_with(rules, everyone)), web_proxy(), IDENTITY)
    matcher = _http_rbac(resources, resources[names.LISTENER][WEB_INBOUND])["matcher"]
    [allowed] = matcher["matcherList"]["matchers"]
    assert allowed["predicate"]["singlePredicate"]["valueMatch"] == {
        "safeRegex": {"googleRe2": {}, "regex": "(.*,)?spiffe://default/web(,.*)?"}}
    assert allowed["onMatch"]["action"]["typedConfig"] == {
        "@type": "type.googleapis.com/envoy.config.rbac.v3.Action", "name": "kri_mtp_default___only-web_"}
    assert matcher["onNoMatch"]["action"]["typedConfig"]["action"] == "DENY"


def test_two_inbounds_of_one_service_get_a_route_configuration_each() -> None:
    second = replace(web_proxy().inbounds[0], port=9090, service_port=9091)
    proxy = web_proxy(inbounds=web_proxy().inbounds + (second,))
    resources = generate_sidecar(snapshot("STRICT"), proxy, IDENTITY)
    listeners = resources[names.LISTENER]
    assert {_hcm(listeners[n]).rds.route_config_name for n in (WEB_INBOUND, "inbound:10.0.0.1:9090")} == {
        WEB_INBOUND, "inbound:10.0.0.1:9090"}
    assert resources[names.ROUTE]["inbound:10.0.0.1:9090"].virtual_hosts[0].routes[0].route.cluster == \
        "localhost:9091"


# --- MeshTimeout -------------------------------------------------------------------------------

def test_mesh_default_timeouts_on_both_sides() -> None:
    resources = generate_sidecar(snapshot("STRICT"), web_proxy(), IDENTITY)
    inbound_route = _inbound_route(resources, resources[names.LISTENER][WEB_INBOUND]).virtual_hosts[0].routes[0].route
    assert (inbound_route.timeout.seconds, inbound_route.idle_timeout.seconds) == (0, 3600)
    outbound = _hcm(resources[names.LISTENER]["outbound:127.0.0.1:10001"])
    route = outbound.route_config.virtual_hosts[0].routes[0].route
    assert (route.timeout.seconds, route.idle_timeout.seconds) == (15, 1800)
    assert outbound.common_http_protocol_options.idle_timeout.seconds == 0
    assert resources[names.CLUSTER]["backend"].connect_timeout.seconds == 5
    assert resources[names.CLUSTER]["localhost:8081"].connect_timeout.seconds == 10


def test_a_more_specific_timeout_policy_wins() -> None:
    faster = policy("MeshTimeout", "faster-db", {"targetRef": {"kind": "MeshService", "name": "web"}, "to": [
        {"targetRef": {"kind": "MeshService", "name": "db"}, "default": {"idleTimeout": "90s"}}]})
    resources = generate_sidecar(snapshot(policies=_with(faster)), web_proxy(), None)
    tcp = tcp_proxy_pb2.TcpProxy()
    resources[names.LISTENER]["outbound:127.0.0.1:10002"].filter_chains[0].filters[0].typed_config.Unpack(tcp)
    assert tcp.idle_timeout.seconds == 90
    assert resources[names.CLUSTER]["db"].connect_timeout.seconds == 5  # merged with the mesh default


# --- MeshRetry ---------------------------------------------------------------------------------

def test_default_retries_follow_the_protocol() -> None:
    conf = {"http": {"numRetries": 5}, "grpc": {"numRetries": 4}, "tcp": {"maxConnectAttempt": 3}}
    assert meshretry.retry_policy(conf, "http").num_retries.value == 5
    assert meshretry.retry_policy(conf, "grpc").num_retries.value == 4
    assert meshretry.retry_policy(conf, "http2") is None  # as Kuma: only "http" and "grpc"
    assert meshretry.retry_policy({"http": {"numRetries": 0}}, "http") is None


def test_grpc_retry_on_and_back_off() -> None:
    retry = meshretry.grpc_retry_policy({"retryOn": ["Canceled", "Unavailable"], "backOff": {"maxInterval": "1s"}})
    assert retry.retry_on == "canceled,unavailable"
    assert retry.retry_back_off.base_interval.nanos == 25_000_000  # Kuma's default base interval
    assert retry.retry_back_off.max_interval.seconds == 1


# --- MeshCircuitBreaker ------------------------------------------------------------------------

def test_every_cluster_tracks_remaining_and_outbounds_get_the_mesh_limits() -> None:
    resources = generate_sidecar(snapshot(), web_proxy(), None)
    for cluster in resources[names.CLUSTER].values():
        assert cluster.circuit_breakers.thresholds[0].track_remaining
    limits = resources[names.CLUSTER]["backend"].circuit_breakers.thresholds[0]
    assert (limits.max_connections.value, limits.max_pending_requests.value, limits.max_requests.value,
            limits.max_retries.value) == (1024, 1024, 1024, 3)
    assert not resources[names.CLUSTER]["localhost:8081"].circuit_breakers.thresholds[0].HasField("max_connections")


def test_disabled_outlier_detection_is_left_out() -> None:
    off = policy("MeshCircuitBreaker", "off", {"targetRef": {"kind": "MeshService", "name": "web"}, "to": [
        {"targetRef": {"kind": "Mesh"}, "default": {"outlierDetection": {"disabled": True}}}]})
    resources = generate_sidecar(snapshot(policies=_with(off)), web_proxy(), None)
    assert not resources[names.CLUSTER]["backend"].HasField("outlier_detection")
