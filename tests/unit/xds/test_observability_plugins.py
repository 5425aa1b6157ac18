"""MeshAccessLog and MeshTrace on generated resources: what each proxy's Envoy logs and traces."""
from __future__ import annotations

from dataclasses import replace

from google.protobuf import json_format

from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from appliance.model import names
from appliance.model.proxy import Inbound
from appliance.xds.generate import generate_sidecar
from tests.unit.xds.scenarios import IDENTITY, default_policies, policy, snapshot, web_proxy

MAL, TRACE = "MeshAccessLog", "MeshTrace"
BACKEND_OUT, DB_OUT, WEB_IN = "outbound:127.0.0.1:10001", "outbound:127.0.0.1:10002", "inbound:10.0.0.1:8080"


def _filter(resources: dict, listener: str) -> dict:
    """The first filter of the listener's first chain, as JSON."""
    found = resources[names.LISTENER][listener].filter_chains[0].filters[0]
    message = hcm_pb2.HttpConnectionManager() if found.name == names.HCM_FILTER else tcp_proxy_pb2.TcpProxy()
    found.typed_config.Unpack(message)
    return json_format.MessageToDict(message)


def _logs(resources: dict, listener: str) -> list[dict]:
    return [log["typedConfig"] for log in _filter(resources, listener).get("accessLog", [])]


def _generate(*extra, proxy=None, mtls=None, cache=None) -> dict:
    return generate_sidecar(snapshot(mtls, policies=default_policies(extra=extra)), proxy or web_proxy(),
                            IDENTITY if mtls else None, cache)


def _to_all(*backends) -> object:
    return policy(MAL, "to-all", {"targetRef": {"kind": "Mesh"},
                                  "to": [{"targetRef": {"kind": "Mesh"}, "default": {"backends": list(backends)}}]})


def test_outbound_logs_name_the_calling_service_and_are_not_shared_between_callers() -> None:
    logs = _to_all({"type": "File", "file": {"path": "/var/log/out.log", "format": {
        "type": "Plain", "plain": "%KUMA_SOURCE_SERVICE%->%KUMA_DESTINATION_SERVICE% %KUMA_SOURCE_ADDRESS%"}}})
    cache: dict = {}
    web = _generate(logs, cache=cache)
    api_inbound = replace(web_proxy().inbounds[0], tags={"kuma.io/service": "api", "kuma.io/protocol": "http"})
    api = _generate(logs, proxy=web_proxy(name="api-1", address="10.0.0.9", inbounds=(api_inbound,)), cache=cache)
    assert _logs(web, BACKEND_OUT)[0]["logFormat"]["textFormatSource"]["inlineString"] == "web->backend 10.0.0.1:0\n"
    assert _logs(api, BACKEND_OUT)[0]["logFormat"]["textFormatSource"]["inlineString"] == "api->backend 10.0.0.9:0\n"
    assert _logs(web, DB_OUT)[0]["path"] == "/var/log/out.log"      # TCP outbounds log on the TCP proxy


def test_two_proxies_of_a_service_share_an_outbound_unless_its_log_names_their_address() -> None:
    """Sharing is what keeps a mesh-wide access log cheap at 1,000 proxies (tests/perf/fleet.py
    --observability all); a log that names the caller's address (Kuma's default formats do) cannot be shared."""
    other = web_proxy(name="web-2", address="10.0.0.7")
    by_service = _to_all({"type": "File", "file": {"path": "/var/log/out.log", "format": {
        "type": "Json", "json": [{"key": "from", "value": "%KUMA_SOURCE_SERVICE%"}]}}})
    cache: dict = {}
    first, second = _generate(by_service, cache=cache), _generate(by_service, proxy=other, cache=cache)
    assert first[names.LISTENER][BACKEND_OUT] is second[names.LISTENER][BACKEND_OUT]
    assert _logs(second, BACKEND_OUT)[0]["logFormat"]["jsonFormat"] == {"from": "web"}
    for backend in ({"type": "File", "file": {"path": "/var/log/out.log"}},       # the default format
                    {"type": "File", "file": {"path": "/var/log/out.log", "format": {
                        "type": "Plain", "plain": "%KUMA_SOURCE_ADDRESS_WITHOUT_PORT%"}}}):
        cache = {}
        first, second = _generate(_to_all(backend), cache=cache), _generate(_to_all(backend), proxy=other, cache=cache)
        assert first[names.LISTENER][BACKEND_OUT] is not second[names.LISTENER][BACKEND_OUT]
        assert "10.0.0.7" in str(_logs(second, BACKEND_OUT)[0]["logFormat"])


def test_tcp_backend_lines_go_to_the_pipe_in_kuma_dps_work_dir() -> None:
    logs = _to_all({"type": "Tcp", "tcp": {"address": "logs.internal:5170"}})
    resources = _generate(logs, proxy=web_proxy(work_dir="/var/lib/kuma-dp/web-1"))
    line = _logs(resources, DB_OUT)[0]
    assert line["path"] == "/var/lib/kuma-dp/web-1/kuma-al-web-1-default.sock"
    assert line["logFormat"]["jsonFormat"]["address"] == "logs.internal:5170"
    assert line["logFormat"]["jsonFormat"]["message"].startswith("[%START_TIME%] %RESPONSE_FLAGS% default 10.0.0.1(web)")


def test_an_inbound_rule_for_one_client_logs_only_that_client() -> None:
    logs = policy(MAL, "in", {"targetRef": {"kind": "Mesh"}, "rules": [
        {"default": {"backends": [{"type": "File", "file": {"path": "/var/log/all.log"}}]}},
        {"matches": [{"spiffeID": {"type": "Prefix", "value": "spiffe://default/"}}],
         "default": {"backends": [{"type": "File", "file": {"path": "/var/log/mesh.log"}}]}}]})
    resources = _generate(logs, mtls="STRICT")
    found = _filter(resources, WEB_IN)["accessLog"]
    by_path = {log["typedConfig"]["path"]: log for log in found}
    assert "filter" not in by_path["/var/log/all.log"]
    assert by_path["/var/log/mesh.log"]["filter"]["extensionFilter"]["typedConfig"]["expression"] == \
        'connection.uri_san_peer_certificate.startsWith("spiffe://default/")'
    # inbound: Kuma names the client "unknown" and the proxy's service as the destination
    text = by_path["/var/log/all.log"]["typedConfig"]["logFormat"]["textFormatSource"]["inlineString"]
    assert '"unknown" "web" "10.0.0.1"' in text


def test_an_open_telemetry_backend_by_reference_logs_nothing() -> None:
    logs = _to_all({"type": "OpenTelemetry", "openTelemetry": {
        "backendRef": {"kind": "MeshOpenTelemetryBackend", "labels": {"app": "otel"}}}})
    resources = _generate(logs)
    assert _logs(resources, BACKEND_OUT) == []
    assert not any(name.startswith("meshaccesslog:") for name in resources[names.CLUSTER])


def _tracing(resources: dict, listener: str) -> dict:
    return _filter(resources, listener).get("tracing", {})


def test_a_dataplane_trace_with_a_section_name_traces_only_that_inbound() -> None:
    second = Inbound(port=9090, service_port=9091, address="10.0.0.1", service_address="127.0.0.1",
                     tags={"kuma.io/service": "web-admin", "kuma.io/protocol": "http"}, protocol="http", name="admin")
    trace = policy(TRACE, "admin-only", {"targetRef": {"kind": "Dataplane", "name": "web-1", "sectionName": "admin"},
                                         "default": {"backends": [{"type": "Datadog", "datadog": {
                                             "url": "http://agent:8126", "splitService": True}}]}})
    resources = _generate(trace, proxy=web_proxy(inbounds=(*web_proxy().inbounds, second)))
    assert _tracing(resources, WEB_IN) == {}
    provider = _tracing(resources, "inbound:10.0.0.1:9090")["provider"]["typedConfig"]
    assert provider["serviceName"] == "web_INBOUND"           # splitService: the proxy's service and direction
    outbound = _tracing(resources, BACKEND_OUT)["provider"]["typedConfig"]
    assert outbound["serviceName"] == "web_OUTBOUND_backend"
    assert resources[names.CLUSTER]["meshtrace:datadog"].load_assignment.endpoints[0].lb_endpoints[0] \
        .endpoint.address.socket_address.port_value == 8126


def test_tcp_listeners_are_not_traced_and_a_trace_without_backend_does_nothing() -> None:
    zipkin = policy(TRACE, "t", {"default": {"backends": [{"type": "Zipkin", "zipkin": {
        "url": "https://zipkin.example:9411/api/v2/spans"}}]}})
    resources = _generate(zipkin)
    assert "tracing" not in _filter(resources, DB_OUT)
    cluster = resources[names.CLUSTER]["meshtrace:zipkin"]
    assert cluster.transport_socket.name == names.TLS_TRANSPORT_SOCKET   # an https collector
    nothing = _generate(policy(TRACE, "t", {"default": {"backends": [], "sampling": {"overall": 5}}}))
    assert _tracing(nothing, WEB_IN) == {} and "meshtrace:zipkin" not in nothing[names.CLUSTER]
