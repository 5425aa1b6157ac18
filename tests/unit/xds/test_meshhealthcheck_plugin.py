"""MeshHealthCheck on sidecars: the health checks Envoy gets on outbound clusters, against Kuma 2.14.3's goldens
(pkg/plugins/policies/meshhealthcheck/plugin/v1alpha1/testdata, the parts its plugin writes)."""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from google.protobuf import json_format

from appliance.model import names
from appliance.model.proxy import Inbound, Outbound, Proxy
from appliance.xds.generate import generate_sidecar
from tests.unit.xds.scenarios import (
    CANARY, IDENTITY, MESH, VERSIONED_BACKEND, db_proxy, default_policies, policy, routed_snapshot, snapshot,
    web_proxy,
)

KIND = "MeshHealthCheck"
# plugin_test.go's "HTTP HealthCheck" conf.
KUMA_HTTP_CONF = {
    "interval": "10s", "timeout": "2s", "unhealthyThreshold": 3, "healthyThreshold": 1, "initialJitter": "13s",
    "intervalJitter": "15s", "intervalJitterPercent": 10, "healthyPanicThreshold": "62.9", "failTrafficOnPanic": True,
    "eventLogPath": "/tmp/log.txt", "alwaysLogHealthCheckFailures": False, "noTrafficInterval": "16s",
    "reuseConnection": True,
    "http": {"disabled": False, "path": "/health", "expectedStatuses": [200, 201],
             "requestHeadersToAdd": {"add": [{"name": "x-some-header", "value": "value"}],
                                     "set": [{"name": "x-some-other-header", "value": "value"}]}},
}
# basic_http_health_check_cluster.golden.yaml without its `name`.
KUMA_HTTP_GOLDEN = {
    "commonLbConfig": {"healthyPanicThreshold": {"value": 62.9}, "zoneAwareLbConfig": {"failTrafficOnPanic": True}},
    "healthChecks": [{
        "eventLogger": [{"name": "envoy.health_check.event_sinks.file", "typedConfig": {
            "@type": "type.googleapis.com/envoy.extensions.health_check.event_sinks.file.v3.HealthCheckEventFileSink",
            "eventLogPath": "/tmp/log.txt"}}],
        "healthyThreshold": 1,
        "httpHealthCheck": {
            "expectedStatuses": [{"end": "201", "start": "200"}, {"end": "202", "start": "201"}],
            "path": "/health",
            "requestHeadersToAdd": [
                {"header": {"key": "x-kuma-tags", "value": "&kuma.io/service=backend&"}},
                {"header": {"key": "x-some-header", "value": "value"}},
                {"appendAction": "OVERWRITE_IF_EXISTS_OR_ADD",
                 "header": {"key": "x-some-other-header", "value": "value"}}]},
        "initialJitter": "13s", "interval": "10s", "intervalJitter": "15s", "intervalJitterPercent": 10,
        "noTrafficInterval": "16s", "reuseConnection": True, "timeout": "2s", "unhealthyThreshold": 3}],
}
KUMA_TCP_GOLDEN = {"healthChecks": [{
    "healthyThreshold": 1, "interval": "10s", "timeout": "2s", "unhealthyThreshold": 3,
    "tcpHealthCheck": {"receive": [{"text": "634739755a776f3d"}], "send": {"text": "63476c755a776f3d"}}}]}
KUMA_GRPC_GOLDEN = {"healthChecks": [{
    "grpcHealthCheck": {"authority": "grpc-client.default.svc.cluster.local", "serviceName": "grpc-client"},
    "healthyThreshold": 1, "interval": "10s", "timeout": "2s", "unhealthyThreshold": 3}]}
SHORT = {"interval": "10s", "timeout": "2s", "unhealthyThreshold": 3, "healthyThreshold": 1}


def _health_check(conf: dict[str, Any], to: dict[str, Any] | None = None, top: dict[str, Any] | None = None,
                  name: str = "hc") -> Any:
    return policy(KIND, name, {"targetRef": top or {"kind": "Mesh"},
                               "to": [{"targetRef": to or {"kind": "Mesh"}, "default": conf}]})


# `backend-1` as in Kuma's samples.DataplaneBackendBuilder: one inbound tagged only with its service.
CALLER = Proxy(mesh=MESH, name="backend-1", address="192.168.0.1",
               inbounds=(Inbound(80, 8080, "192.168.0.1", "127.0.0.1", {"kuma.io/service": "backend"}, "tcp"),),
               outbounds=(Outbound(27777, "127.0.0.1", "echo-http"), Outbound(27778, "127.0.0.1", "echo-tcp"),
                          Outbound(27779, "127.0.0.1", "echo-grpc"), Outbound(27780, "127.0.0.1", "echo-h2")))
ECHO_PROTOCOLS = {"echo-http": "http", "echo-tcp": "tcp", "echo-grpc": "grpc", "echo-h2": "http2"}


def _clusters(*policies: Any, proxy: Proxy = CALLER, **changes: Any) -> dict[str, Any]:
    snap = snapshot(policies=default_policies(extra=policies), **changes)
    if proxy is CALLER:
        snap = replace(snap, protocols={**snap.protocols, **ECHO_PROTOCOLS})
    return generate_sidecar(snap, proxy, None)[names.CLUSTER]


def _written(cluster: Any) -> dict[str, Any]:
    """What the plugin writes into a cluster (Kuma's goldens start from a bare cluster)."""
    found = json_format.MessageToDict(cluster)
    return {k: found[k] for k in ("commonLbConfig", "healthChecks") if k in found}


def test_http_check_matches_kumas_golden() -> None:
    assert _written(_clusters(_health_check(KUMA_HTTP_CONF))["echo-http"]) == KUMA_HTTP_GOLDEN


def test_tcp_check_matches_kumas_golden_and_sends_the_text_itself() -> None:
    conf = {**SHORT, "tcp": {"disabled": False, "send": "cGluZwo=", "receive": ["cG9uZwo="]}}
    assert _written(_clusters(_health_check(conf))["echo-tcp"]) == KUMA_TCP_GOLDEN
    assert bytes.fromhex(KUMA_TCP_GOLDEN["healthChecks"][0]["tcpHealthCheck"]["send"]["text"]) == b"cGluZwo="


def test_grpc_check_matches_kumas_golden() -> None:
    conf = {**SHORT, "grpc": {"serviceName": "grpc-client", "authority": "grpc-client.default.svc.cluster.local"}}
    assert _written(_clusters(_health_check(conf))["echo-grpc"]) == KUMA_GRPC_GOLDEN


def test_kumas_defaults_fill_what_the_policy_leaves_out() -> None:
    check = _written(_clusters(_health_check({"http": {}}))["echo-http"])["healthChecks"][0]
    assert check == {"interval": "60s", "timeout": "15s", "unhealthyThreshold": 5, "healthyThreshold": 1,
                     "httpHealthCheck": {"path": "/", "requestHeadersToAdd": [
                         {"header": {"key": "x-kuma-tags", "value": "&kuma.io/service=backend&"}}]}}


@pytest.mark.parametrize("conf, expected", [
    ({"http": {}, "tcp": {}, "grpc": {}},
     {"echo-http": "httpHealthCheck", "echo-h2": "httpHealthCheck", "echo-grpc": "grpcHealthCheck",
      "echo-tcp": "tcpHealthCheck"}),
    # only the section of the destination's protocol counts...
    ({"tcp": {}}, {"echo-tcp": "tcpHealthCheck"}),
    ({"http": {}}, {"echo-http": "httpHealthCheck", "echo-h2": "httpHealthCheck"}),
    # ...and tcp stands in where that section is disabled
    ({"http": {"disabled": True}, "grpc": {"disabled": True}, "tcp": {}},
     {"echo-http": "tcpHealthCheck", "echo-h2": "tcpHealthCheck", "echo-grpc": "tcpHealthCheck",
      "echo-tcp": "tcpHealthCheck"}),
    ({"http": {"disabled": True}, "tcp": {"disabled": True}}, {}),
], ids=["all sections", "tcp only", "http only", "disabled falls back to tcp", "all disabled"])
def test_the_checker_follows_the_destination_protocol(conf: dict[str, Any], expected: dict[str, str]) -> None:
    clusters = _clusters(_health_check(conf))
    found = {name: next(k for k in c["healthChecks"][0] if k.endswith("HealthCheck"))
             for name in ECHO_PROTOCOLS if (c := json_format.MessageToDict(clusters[name])).get("healthChecks")}
    assert found == expected


def test_http2_destinations_are_checked_with_the_http2_codec() -> None:
    clusters = _clusters(_health_check({"http": {}}))
    assert json_format.MessageToDict(clusters["echo-h2"])["healthChecks"][0]["httpHealthCheck"]["codecClientType"] \
        == "HTTP2"
    assert "codecClientType" not in json_format.MessageToDict(clusters["echo-http"])["healthChecks"][0]["httpHealthCheck"]


def test_header_values_with_commas_become_one_header_each() -> None:
    conf = {"http": {"requestHeadersToAdd": {"add": [{"name": "x-a", "value": "1,2"}]}}}
    headers = json_format.MessageToDict(_clusters(_health_check(conf))["echo-http"])["healthChecks"][0][
        "httpHealthCheck"]["requestHeadersToAdd"]
    assert [h["header"] for h in headers[1:]] == [{"key": "x-a", "value": "1"}, {"key": "x-a", "value": "2"}]


def test_the_caller_tags_header_holds_every_inbound_tag_sorted() -> None:
    proxy = web_proxy(inbounds=web_proxy().inbounds + (
        Inbound(9000, 9001, "10.0.0.1", "127.0.0.1", {"kuma.io/service": "admin", "team": "frontend"}, "http"),))
    check = _clusters(_health_check({"http": {}}), proxy=proxy)["backend"].health_checks[0]
    assert check.http_health_check.request_headers_to_add[0].header.value == \
        "&kuma.io/protocol=http&&kuma.io/service=admin,web&&team=frontend&"


def test_only_the_targeted_destination_gets_a_check_and_the_inbound_clusters_none() -> None:
    clusters = _clusters(_health_check({"http": {}, "tcp": {}}, to={"kind": "MeshService", "name": "backend"}),
                         proxy=web_proxy())
    assert [name for name, c in clusters.items() if c.health_checks] == ["backend"]


def test_a_policy_for_other_callers_changes_nothing() -> None:
    hc = _health_check({"http": {}, "tcp": {}}, top={"kind": "MeshService", "name": "payments"})
    assert _clusters(hc, proxy=web_proxy()) == _clusters(proxy=web_proxy())


def test_the_parts_of_a_service_that_routes_send_to_are_checked_too() -> None:
    snap = routed_snapshot("STRICT", CANARY, _health_check({"http": {"path": "/health"}}))
    clusters = generate_sidecar(snap, web_proxy(), IDENTITY)[names.CLUSTER]
    backend = [name for name in clusters if name.startswith("backend")]
    assert len(backend) == 3 and len(VERSIONED_BACKEND) == 2   # the service and its v1 and v2 parts
    assert all(clusters[name].health_checks[0].http_health_check.path == "/health" for name in backend)


def test_the_more_specific_policy_wins_field_by_field() -> None:
    mesh_wide = _health_check({"interval": "30s", "http": {"path": "/mesh"}}, name="a-mesh")
    for_backend = _health_check({"http": {"path": "/backend"}}, to={"kind": "MeshService", "name": "backend"},
                                top={"kind": "MeshService", "name": "web"}, name="z-web")
    check = _clusters(mesh_wide, for_backend, proxy=web_proxy())["backend"].health_checks[0]
    assert (check.interval.seconds, check.http_health_check.path) == (30, "/backend")


def test_callers_with_other_tags_do_not_share_checked_clusters() -> None:
    """The checks carry the caller's tags: the outbound cache must keep callers of other services apart."""
    snap = snapshot(policies=default_policies(extra=(_health_check({"tcp": {}}),)))
    cache: dict = {}
    web = generate_sidecar(snap, web_proxy(outbounds=(Outbound(10002, "127.0.0.1", "db"),)), None, cache)
    other = db_proxy(name="db-2", outbounds=(Outbound(10002, "127.0.0.1", "db"),))
    db = generate_sidecar(snap, other, None, cache)
    assert web[names.CLUSTER]["db"] is not db[names.CLUSTER]["db"]
    again = generate_sidecar(snap, web_proxy(name="web-2", outbounds=(Outbound(10002, "127.0.0.1", "db"),)), None,
                             cache)
    assert again[names.CLUSTER]["db"] is web[names.CLUSTER]["db"]   # same tags: shared


def test_the_deprecated_panic_threshold_loses_to_the_circuit_breaker() -> None:
    breaker = policy("MeshCircuitBreaker", "cb", {"targetRef": {"kind": "Mesh"}, "to": [{
        "targetRef": {"kind": "Mesh"}, "default": {"outlierDetection": {
            "healthyPanicThreshold": 10, "detectors": {"totalFailures": {"consecutive": 3}}}}}]})
    hc = _health_check({"healthyPanicThreshold": 70, "failTrafficOnPanic": False, "tcp": {}})
    db = _clusters(hc, breaker, proxy=web_proxy())["db"]
    assert db.common_lb_config.healthy_panic_threshold.value == 10
    assert db.common_lb_config.HasField("zone_aware_lb_config")   # set, even to false, as Kuma
