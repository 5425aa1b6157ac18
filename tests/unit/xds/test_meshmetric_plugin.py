"""MeshMetric and Mesh.metrics on sidecars: the Prometheus listener, the hijacker cluster and kuma-dp's dynamic
config, against Kuma 2.14.3's goldens (pkg/plugins/policies/meshmetric/plugin/v1alpha1/testdata/basic.*,
pkg/xds/generator/testdata/prometheus-endpoint)."""
from __future__ import annotations

import hashlib
import json
from dataclasses import replace

from google.protobuf import json_format

from appliance.model import names
from appliance.model.proxy import Policy
from appliance.xds.generate import generate_sidecar
from tests.unit.xds.scenarios import IDENTITY, default_policies, snapshot, web_proxy

KIND = "MeshMetric"


def _with(*specs: dict) -> dict:
    return default_policies(extra=tuple(Policy(KIND, f"mm-{i}", s) for i, s in enumerate(specs)))


def _proxy(**changes):
    return web_proxy(work_dir="/tmp", labels={"kuma.io/zone": "zone-1"}, **changes)


def _generated(snap, proxy=None):
    resources = generate_sidecar(snap, proxy or _proxy(), IDENTITY)
    return ({n: json_format.MessageToDict(m) for n, m in resources[names.LISTENER].items()},
            {n: json_format.MessageToDict(m) for n, m in resources[names.CLUSTER].items()})


PROMETHEUS = {"targetRef": {"kind": "Mesh"}, "default": {
    "applications": [{"path": "/metrics", "port": 8080}],
    "backends": [{"type": "Prometheus", "prometheus": {"port": 5670, "path": "/metrics"}}]}}


def test_prometheus_backend_as_kuma_generates_it():
    listeners, clusters = _generated(snapshot(policies=_with(PROMETHEUS)))
    assert clusters["_kuma:metrics:hijacker"] == {
        "name": "_kuma:metrics:hijacker", "type": "STATIC", "connectTimeout": "5s", "altStatName": "_kuma_metrics_hijacker",
        "loadAssignment": {"clusterName": "_kuma:metrics:hijacker", "endpoints": [{"lbEndpoints": [{"endpoint": {
            "address": {"pipe": {"path": "/tmp/kuma-mh-web-1-default.sock"}}}}]}]}}
    listener = listeners["_kuma:metrics:prometheus:default-backend"]
    assert listener["address"] == {"socketAddress": {"address": "10.0.0.1", "portValue": 5670}}
    hcm = listener["filterChains"][0]["filters"][0]["typedConfig"]
    assert hcm["statPrefix"] == "_kuma_metrics_prometheus_default-backend"
    assert hcm["routeConfig"] == {"validateClusters": False, "virtualHosts": [{
        "name": "_kuma:metrics:prometheus:default-backend", "domains": ["*"], "routes": [{
            "match": {"prefix": "/metrics"},
            "route": {"cluster": "_kuma:metrics:hijacker", "prefixRewrite": "/meshmetric"}}]}]}
    assert hcm["internalAddressConfig"] == {"cidrRanges": [{"addressPrefix": "127.0.0.1", "prefixLen": 32}]}


def test_kuma_dp_reads_its_settings_from_the_dynamic_config_listener():
    listeners, _ = _generated(snapshot(policies=_with(PROMETHEUS)))
    listener = listeners["_kuma:dynamicconfig"]
    assert listener["address"] == {"pipe": {"path": "/tmp/kuma-mesh-metric-config.sock"}}
    config = listener["filterChains"][0]["filters"][0]["typedConfig"]["routeConfig"]
    unchanged, current = config["virtualHosts"][0]["routes"]
    body = current["directResponse"]["body"]["inlineString"]
    etag = hashlib.sha256(body.encode()).hexdigest()
    assert config["maxDirectResponseBodySizeBytes"] == len(body)
    assert unchanged == {"match": {"path": "/meshmetric", "headers": [
        {"name": "If-None-Match", "stringMatch": {"exact": etag}}]}, "directResponse": {"status": 304}}
    assert current["responseHeadersToAdd"] == [{"header": {"key": "Etag", "value": etag}}]
    # Kuma's golden body, for a proxy with these tags (web-1's: service web, protocol http, team frontend)
    assert json.loads(body) == {"observability": {"metrics": {
        "applications": [{"path": "/metrics", "port": 8080, "address": ""}],
        "backends": [{"type": "Prometheus", "name": None}],
        "extraLabels": {"dataplane": "web-1", "kuma.proxy_role": "sidecar", "kuma_io_protocol": "http",
                        "kuma_io_protocols": ",http,", "kuma_io_service": "web", "kuma_io_services": ",web,",
                        "mesh": "default", "service": "web", "team": "frontend", "teams": ",frontend,",
                        "zone": "zone-1"}}}}


def test_provided_tls_serves_tls_with_kuma_dps_files_and_nothing_without_them():
    spec = {"default": {"backends": [{"type": "Prometheus", "prometheus": {
        "port": 5670, "path": "/metrics", "tls": {"mode": "ProvidedTLS"}}}]}}
    listeners, _ = _generated(snapshot(policies=_with(spec)),
                              _proxy(metrics_cert_path="/etc/m.crt", metrics_key_path="/etc/m.key"))
    chain = listeners["_kuma:metrics:prometheus:default-backend"]["filterChains"]
    assert len(chain) == 1   # no plaintext chain beside it
    tls = chain[0]["transportSocket"]["typedConfig"]["commonTlsContext"]["tlsCertificates"]
    assert tls == [{"certificateChain": {"filename": "/etc/m.crt"}, "privateKey": {"filename": "/etc/m.key"}}]
    # Kuma falls back to plaintext here; we serve nothing
    listeners, _ = _generated(snapshot(policies=_with(spec)))
    assert "_kuma:metrics:prometheus:default-backend" not in listeners


def test_no_backends_no_endpoint_and_client_ids_name_listeners():
    listeners, clusters = _generated(snapshot(policies=_with({"default": {"applications": [{"port": 80}]}})))
    assert not any(n.startswith("_kuma:") for n in [*listeners, *clusters])
    two = {"default": {"backends": [{"type": "Prometheus", "prometheus": {"clientId": "a", "port": 1234}},
                                    {"type": "Prometheus", "prometheus": {"clientId": "b", "port": 1235}}]}}
    listeners, _ = _generated(snapshot(policies=_with(two)))
    assert {"_kuma:metrics:prometheus:a", "_kuma:metrics:prometheus:b"} <= set(listeners)


MESH_METRICS = {"name": "prometheus-1", "type": "prometheus",
                "conf": {"port": 1234, "path": "/non-standard-path", "skipMTLS": True,
                         "envoy": {"filterRegex": "http2_act.*", "usedOnly": True}}}


def test_mesh_metrics_backend_as_kuma_generates_it():
    listeners, clusters = _generated(snapshot(metrics=MESH_METRICS))
    assert clusters["kuma:metrics:hijacker"]["loadAssignment"]["endpoints"][0]["lbEndpoints"][0]["endpoint"] == {
        "address": {"pipe": {"path": "/tmp/kuma-mh-web-1-default.sock"}}}
    route = listeners["kuma:metrics:prometheus"]["filterChains"][0]["filters"][0]["typedConfig"]["routeConfig"][
        "virtualHosts"][0]["routes"][0]
    assert route == {"match": {"prefix": "/non-standard-path"},
                     "route": {"cluster": "kuma:metrics:hijacker", "prefixRewrite": "/?filter=http2_act.*&usedonly"}}
    assert "_kuma:dynamicconfig" not in listeners


def test_the_dataplanes_own_metrics_conf_overrides_the_meshs_and_meshmetric_wins_over_both():
    proxy = _proxy(metrics={"type": "prometheus", "conf": {"port": 4321}})
    listeners, _ = _generated(snapshot(metrics=MESH_METRICS), proxy)
    assert listeners["kuma:metrics:prometheus"]["address"]["socketAddress"]["portValue"] == 4321
    listeners, clusters = _generated(snapshot(metrics=MESH_METRICS, policies=_with(PROMETHEUS)), proxy)
    assert "kuma:metrics:prometheus" not in listeners and "kuma:metrics:hijacker" not in clusters
    assert "_kuma:metrics:prometheus:default-backend" in listeners


def test_mesh_metrics_on_an_mtls_mesh_wants_mtls_which_we_do_not_serve_rather_than_serve_plaintext():
    conf = {**MESH_METRICS, "conf": {"port": 1234}}
    listeners, _ = _generated(snapshot(mtls="STRICT", metrics=conf))
    assert "kuma:metrics:prometheus" not in listeners
    listeners, _ = _generated(snapshot(mtls="STRICT", metrics={**conf, "conf": {"port": 1234, "skipMTLS": True}}))
    assert "kuma:metrics:prometheus" in listeners


def test_a_port_of_the_dataplane_is_never_shadowed():
    listeners, _ = _generated(snapshot(metrics={**MESH_METRICS, "conf": {"port": 8080, "skipMTLS": True}}))
    assert "kuma:metrics:prometheus" not in listeners


def test_the_socket_path_fits_a_unix_socket():
    long = replace(_proxy(), work_dir="/" + "d" * 150)
    assert len(names.metrics_hijacker_socket(long.work_dir, long.name, long.mesh)) == 103


def test_opentelemetry_backend_as_kuma_generates_it():
    spec = {"default": {"applications": [{"path": "/metrics", "port": 8080}], "backends": [{
        "type": "OpenTelemetry",
        "openTelemetry": {"endpoint": "otel-collector.observability.svc:4317", "refreshInterval": "10s"}}]}}
    listeners, clusters = _generated(snapshot(policies=_with(spec)))
    name = "_kuma:metrics:opentelemetry:otel-collector.observability.svc-4317"
    assert clusters[name] == {
        "name": name, "type": "STRICT_DNS", "connectTimeout": "5s", "dnsLookupFamily": "V4_ONLY",
        "altStatName": "_kuma_metrics_opentelemetry_otel-collector_observability_svc-4317",
        "loadAssignment": {"clusterName": name, "endpoints": [{"lbEndpoints": [{"endpoint": {"address": {
            "socketAddress": {"address": "otel-collector.observability.svc", "portValue": 4317}}}}]}]},
        "typedExtensionProtocolOptions": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicitHttpConfig": {"http2ProtocolOptions": {}}}}}
    listener = listeners[name]
    assert listener["address"] == {"pipe": {"path": "/tmp/kuma-otel-otel-collector.observability.svc-4317.sock"}}
    hcm = listener["filterChains"][0]["filters"][0]["typedConfig"]
    assert [f["name"] for f in hcm["httpFilters"]] == ["envoy.filters.http.grpc_stats", "envoy.filters.http.router"]
    assert hcm["routeConfig"]["virtualHosts"][0]["routes"] == [{"match": {"prefix": "/"}, "route": {"cluster": name}}]
    body = listeners["_kuma:dynamicconfig"]["filterChains"][0]["filters"][0]["typedConfig"]["routeConfig"][
        "virtualHosts"][0]["routes"][1]["directResponse"]["body"]["inlineString"]
    assert json.loads(body)["observability"]["metrics"]["backends"] == [{
        "type": "OpenTelemetry", "name": "otel-collector.observability.svc-4317", "openTelemetry": {
            "endpoint": "/tmp/kuma-otel-otel-collector.observability.svc-4317.sock", "refreshInterval": "10s"}}]


def test_aggregate_applications_for_the_bootstrap():
    from appliance.policies.meshmetric import plugin

    conf = plugin.prometheus_conf({"type": "prometheus", "conf": {"aggregate": [
        {"name": "app", "port": 9000, "path": "/metrics"}, {"name": "off", "port": 9001, "enabled": False}]}},
        {"type": "prometheus", "conf": {"port": 1234}})
    assert conf["port"] == 1234
    assert plugin.aggregate(conf, "10.0.0.1") == [{"name": "app", "address": "10.0.0.1", "port": 9000,
                                                   "path": "/metrics"}]
    assert plugin.aggregate(plugin.prometheus_conf(None, None), "10.0.0.1") == []


def test_each_proxy_gets_its_own_sockets_when_proxies_share_outbounds():
    """Two proxies of one service share their outbounds' resources (one cache); the metrics endpoint is
    the proxy's own: its hijacker and dynamic config sockets live in its own kuma-dp's work dir."""
    snap, cache = snapshot(policies=_with(PROMETHEUS)), {}
    first = generate_sidecar(snap, _proxy(), IDENTITY, cache)
    other = web_proxy(name="web-2", address="10.0.0.7", work_dir="/var/kuma-dp-2", labels={"kuma.io/zone": "zone-1"})
    second = generate_sidecar(snap, other, IDENTITY, cache)
    assert first[names.LISTENER]["outbound:127.0.0.1:10001"] is second[names.LISTENER]["outbound:127.0.0.1:10001"]
    for resources, path in ((first, "/tmp/kuma-mh-web-1-default.sock"),
                            (second, "/var/kuma-dp-2/kuma-mh-web-2-default.sock")):
        cluster = json_format.MessageToDict(resources[names.CLUSTER]["_kuma:metrics:hijacker"])
        assert cluster["loadAssignment"]["endpoints"][0]["lbEndpoints"][0]["endpoint"]["address"]["pipe"]["path"] == path
    assert json_format.MessageToDict(second[names.LISTENER]["_kuma:dynamicconfig"])["address"] == {
        "pipe": {"path": "/var/kuma-dp-2/kuma-mesh-metric-config.sock"}}
