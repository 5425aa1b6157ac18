"""MeshMetric (and the older Mesh.metrics Prometheus backend) on a sidecar: a Prometheus endpoint on the proxy.

As Kuma 2.14 (plugin/v1alpha1/plugin.go, xds/generator/prometheus_endpoint_generator.go): Envoy listens on
the backend's port (default 5670) at the dataplane's address and routes the backend's path (default
/metrics) to kuma-dp's metrics hijacker on a Unix socket in kuma-dp's work dir; kuma-dp answers with Envoy's
own stats merged with the applications' metrics. With MeshMetric the path is rewritten to /meshmetric and
kuma-dp reads what to publish (profiles, applications, labels) as JSON from Envoy's `_kuma:dynamicconfig`
listener, another Unix socket, with an ETag so that an unchanged config costs a 304.

An OpenTelemetry backend given by `endpoint` gets a listener on a Unix socket in kuma-dp's work dir that Envoy
forwards (gRPC, HTTP/2) to the collector; kuma-dp pushes OTLP there every `refreshInterval` (default 1m).

MeshMetric takes precedence over Mesh.metrics. We differ from Kuma where Kuma would fail open:
`ProvidedTLS` without kuma-dp's certificate paths and `ActiveMTLSBackend` serve nothing (Kuma serves
plaintext); the API warns about the latter on write, the log about the former.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.http.grpc_stats.v3 import config_pb2 as grpc_stats_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from google.protobuf import duration_pb2

from appliance.model import names
from appliance.model.names import Resources
from appliance.model.proxy import MeshSnapshot, Proxy
from appliance.policies import _envoy, _merge, _rules
from appliance.policies.meshmetric import labels as metric_labels
from appliance.policies.meshmetric.schema import DEFAULT_PATH, DEFAULT_PORT
from appliance.policies._dynconf import add_config_route, local_hcm

KIND = "MeshMetric"
OWN_ONLY = True   # the proxy's own metrics endpoints, never in an outbound's resources (policies/__init__.py)
DEFAULT_BACKEND = "default-backend"
DEFAULT_REFRESH_INTERVAL = "1m0s"   # how Go prints Kuma's default of a minute
log = logging.getLogger("appliance.xds")

Conf = dict[str, Any]


@dataclass(frozen=True)
class Endpoint:
    """One Prometheus endpoint the proxy serves."""
    listener: str
    cluster: str
    address: str
    port: int
    path: str
    rewrite: str
    tls: tuple[str, str] | None        # (certificate file, key file) kuma-dp was given


@dataclass(frozen=True)
class OtelBackend:
    """One OpenTelemetry collector kuma-dp pushes to, through Envoy."""
    name: str           # backendNameFrom(endpoint): also the listener's and cluster's suffix
    host: str
    port: int
    socket: str         # where Envoy listens for kuma-dp's pushes
    refresh_interval: str


@dataclass(frozen=True)
class Matched:
    endpoints: tuple[Endpoint, ...] = ()
    otel: tuple[OtelBackend, ...] = ()
    hijacker_socket: str = ""
    dp_config: bytes = b""             # MeshMetric: what kuma-dp reads at /meshmetric; b"" for Mesh.metrics
    config_socket: str = ""
    ipv6: bool = False
    to_key: tuple[str, ...] = ()


def merged_conf(snapshot: MeshSnapshot, proxy: Proxy) -> Conf:
    """The MeshMetric `default` that applies to a proxy: its policies merged in precedence order."""
    selection = _rules.select(snapshot.policies.get(KIND, ()), proxy)
    return _rules.merge((p.spec.get("default") or {}) for p in selection.proxy)


def prometheus_backends(conf: Conf) -> list[Conf]:
    return [b.get("prometheus") or {} for b in conf.get("backends") or []
            if b.get("type") == "Prometheus" and b.get("prometheus") is not None]


def otel_backends(conf: Conf, workdir: str) -> list[OtelBackend]:
    """The OpenTelemetry backends given by `endpoint` (host:port); those by `backendRef` name a
    MeshOpenTelemetryBackend this control plane does not have (the API warns about them on write)."""
    out = []
    for backend in conf.get("backends") or []:
        otel = backend.get("openTelemetry") or {}
        endpoint = otel.get("endpoint") or ""
        if backend.get("type") != "OpenTelemetry" or not endpoint or otel.get("backendRef") is not None:
            continue
        host, _, port = endpoint.rpartition(":")
        name = endpoint.replace("/", "").replace(":", "-")
        out.append(OtelBackend(name, host.strip("[]"), int(port), names.otel_socket(workdir, name),
                               otel.get("refreshInterval") or DEFAULT_REFRESH_INTERVAL))
    return out


def prometheus_conf(backend: Conf | None, own: Conf | None) -> Conf | None:
    """Dataplane.GetPrometheusConfig: the Mesh's enabled Prometheus backend's conf, the Dataplane's over it."""
    if not backend or backend.get("type", "prometheus") != "prometheus":
        return None
    conf: Conf = {"port": DEFAULT_PORT, "path": DEFAULT_PATH, **(backend.get("conf") or {})}
    own = own or {}
    if own.get("type", "prometheus") == "prometheus":
        conf = _merge.merge_patch(conf, own.get("conf") or {})
    return conf


def legacy_conf(snapshot: MeshSnapshot, proxy: Proxy) -> Conf | None:
    return prometheus_conf(snapshot.metrics, proxy.metrics)


def aggregate(conf: Conf | None, dataplane_address: str) -> list[Conf]:
    """getMetricsConfig: the applications whose metrics kuma-dp merges into a Mesh.metrics scrape (bootstrap's
    kumaSidecarConfiguration.metrics.aggregate); `enabled: false` ones left out, no address = the dataplane's."""
    return [{"name": a.get("name") or "", "address": a.get("address") or dataplane_address,
             "port": int(a.get("port") or 0), "path": a.get("path") or ""}
            for a in (conf or {}).get("aggregate") or [] if a.get("enabled") is not False]


def _uses_port(proxy: Proxy, port: int) -> bool:
    """Kuma leaves the endpoint out rather than shadow one of the dataplane's own ports."""
    return any(i.port == port for i in proxy.inbounds) or any(o.port == port for o in proxy.outbounds)


def _tls(mode: str, proxy: Proxy, listener: str) -> tuple[bool, tuple[str, str] | None]:
    """(serve it at all, TLS files). Never plaintext where the policy asked for TLS."""
    if mode in ("ProvidedTLS", "providedTLS"):
        if proxy.metrics_cert_path and proxy.metrics_key_path:
            return True, (proxy.metrics_cert_path, proxy.metrics_key_path)
        log.warning("%s.%s: %s asks for TLS (ProvidedTLS) but kuma-dp was given no certificate "
                    "(KUMA_DATAPLANE_RUNTIME_METRICS_CERT_PATH/KEY_PATH): the endpoint is not served",
                    proxy.mesh, proxy.name, listener)
        return False, None
    if mode in ("ActiveMTLSBackend", "activeMTLSBackend"):
        log.warning("%s.%s: %s asks for the mesh's mTLS, which this control plane does not serve metrics "
                    "with: the endpoint is not served", proxy.mesh, proxy.name, listener)
        return False, None
    return True, None


def _meshmetric(snapshot: MeshSnapshot, proxy: Proxy, conf: Conf) -> Matched:
    endpoints = []
    for backend in prometheus_backends(conf):
        client = backend.get("clientId") or DEFAULT_BACKEND
        listener = f"_{names.PROMETHEUS_LISTENER}:{client}"
        port = int(backend.get("port") or DEFAULT_PORT)
        serve, tls = _tls((backend.get("tls") or {}).get("mode") or "Disabled", proxy, listener)
        if not serve:
            continue
        endpoints.append(Endpoint(listener, names.MESHMETRIC_HIJACKER_CLUSTER, proxy.address, port,
                                  backend.get("path") or DEFAULT_PATH, names.MESHMETRIC_CONFIG_PATH, tls))
    workdir = proxy.work_dir or "/tmp"
    otel = tuple(otel_backends(conf, workdir))
    dp_config = json.dumps(dp_config_of(snapshot, proxy, conf), separators=(",", ":")).encode()
    return Matched(tuple(endpoints), otel, hijacker_socket=names.metrics_hijacker_socket(workdir, proxy.name, proxy.mesh),
                   dp_config=dp_config, config_socket=names.meshmetric_config_socket(workdir), ipv6=proxy.ipv6_enabled)


def dp_config_of(snapshot: MeshSnapshot, proxy: Proxy, conf: Conf) -> Conf:
    """dpapi.MeshMetricDpConfig: what kuma-dp publishes, in Kuma's JSON shape."""
    applications = []
    for app in conf.get("applications") or []:
        item: Conf = {"name": app["name"]} if app.get("name") is not None else {}
        item.update(path=app.get("path") or DEFAULT_PATH, port=int(app.get("port") or 0),
                    address=app.get("address") or "")
        applications.append(item)
    backends: list[Conf] = [{"type": "Prometheus", "name": None}] if prometheus_backends(conf) else []
    backends += [{"type": "OpenTelemetry", "name": b.name, "openTelemetry": {
        "endpoint": b.socket, "refreshInterval": b.refresh_interval}} for b in otel_backends(conf, proxy.work_dir or "/tmp")]
    metrics: Conf = {"applications": applications or None, "backends": backends or None}
    if conf.get("sidecar") is not None:
        metrics["sidecar"] = conf["sidecar"]
    metrics["extraLabels"] = metric_labels.extra_labels(proxy)
    return {"observability": {"metrics": metrics}}


def _legacy(proxy: Proxy, conf: Conf) -> Matched:
    port = int(conf.get("port") or DEFAULT_PORT)
    if _uses_port(proxy, port):
        log.warning("%s.%s: Mesh.metrics port %d is one of the dataplane's own ports: no Prometheus endpoint",
                    proxy.mesh, proxy.name, port)
        return Matched()
    tls_mode = (conf.get("tls") or {}).get("mode") or ""
    if not tls_mode:
        tls_mode = "disabled" if conf.get("skipMTLS") else "activeMTLSBackend"
    serve, tls = _tls(tls_mode, proxy, names.PROMETHEUS_LISTENER)
    if not serve:
        return Matched()
    endpoint = Endpoint(names.PROMETHEUS_LISTENER, names.METRICS_HIJACKER_CLUSTER, proxy.address, port,
                        conf.get("path") or DEFAULT_PATH, "/" + _stats_query(conf.get("envoy") or {}), tls)
    return Matched((endpoint,), hijacker_socket=names.metrics_hijacker_socket(proxy.work_dir or "/tmp", proxy.name,
                                                                              proxy.mesh), ipv6=proxy.ipv6_enabled)


def _stats_query(envoy: Conf) -> str:
    """buildEnvoyMetricsFilter: `?filter=<regex>&usedonly` as Envoy's /stats reads it (no `usedonly=`)."""
    parts = []
    if envoy.get("filterRegex"):
        parts.append("filter=" + envoy["filterRegex"])
    if envoy.get("usedOnly"):
        parts.append("usedonly")
    return "?" + "&".join(parts) if parts else ""


def match(snapshot: MeshSnapshot, proxy: Proxy) -> Matched:
    conf = merged_conf(snapshot, proxy)
    if conf.get("backends"):
        return _meshmetric(snapshot, proxy, conf)
    legacy = legacy_conf(snapshot, proxy)
    # Mesh.metrics with an mTLS mesh means mTLS metrics unless the backend says otherwise (secureMetricsWithMeshMtls)
    if legacy is not None and snapshot.mtls is None and not (legacy.get("tls") or {}).get("mode"):
        legacy = {**legacy, "skipMTLS": True}
    return _legacy(proxy, legacy) if legacy is not None else Matched()


def _prometheus_listener(endpoint: Endpoint, ipv6: bool) -> listener_pb2.Listener:
    hcm = local_hcm(endpoint.listener, ipv6)
    hcm.route_config.validate_clusters.value = False
    host = hcm.route_config.virtual_hosts.add(name=endpoint.listener, domains=["*"])
    route = host.routes.add()
    route.match.prefix = endpoint.path
    route.route.cluster = endpoint.cluster
    route.route.prefix_rewrite = endpoint.rewrite
    chain = listener_components_pb2.FilterChain()
    chain.filters.add(name=names.HCM_FILTER).typed_config.CopyFrom(_envoy.pack(hcm))
    if endpoint.tls is not None:
        context = tls_pb2.DownstreamTlsContext()
        certificate = context.common_tls_context.tls_certificates.add()
        certificate.certificate_chain.filename, certificate.private_key.filename = endpoint.tls
        chain.transport_socket.name = names.TLS_TRANSPORT_SOCKET
        chain.transport_socket.typed_config.CopyFrom(_envoy.pack(context))
    listener = listener_pb2.Listener(name=endpoint.listener, filter_chains=[chain])
    listener.address.socket_address.address = endpoint.address
    listener.address.socket_address.port_value = endpoint.port
    listener.enable_reuse_port.value = False
    return listener


def _hijacker_cluster(name: str, socket: str) -> cluster_pb2.Cluster:
    cluster = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.STATIC,
                                  connect_timeout=duration_pb2.Duration(seconds=5),
                                  alt_stat_name=names.sanitize_metric(name))
    cluster.load_assignment.cluster_name = name
    endpoint = cluster.load_assignment.endpoints.add().lb_endpoints.add().endpoint
    endpoint.address.pipe.path = socket
    return cluster


def _otel_cluster(backend: OtelBackend) -> cluster_pb2.Cluster:
    name = names.otel_resource(backend.name)
    cluster = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.STRICT_DNS,
                                  connect_timeout=duration_pb2.Duration(seconds=5),
                                  alt_stat_name=names.sanitize_metric(name),
                                  dns_lookup_family=cluster_pb2.Cluster.V4_ONLY)
    cluster.load_assignment.cluster_name = name
    address = cluster.load_assignment.endpoints.add().lb_endpoints.add().endpoint.address.socket_address
    address.address, address.port_value = backend.host, backend.port
    options = http_protocol_options_pb2.HttpProtocolOptions()
    options.explicit_http_config.http2_protocol_options.SetInParent()   # OTLP over gRPC
    cluster.typed_extension_protocol_options[names.HTTP_PROTOCOL_OPTIONS].CopyFrom(_envoy.pack(options))
    return cluster


def _otel_listener(backend: OtelBackend, ipv6: bool) -> listener_pb2.Listener:
    name = names.otel_resource(backend.name)
    hcm = local_hcm(name, ipv6)
    hcm.http_filters.insert(0, hcm_pb2.HttpFilter(name=names.GRPC_STATS_FILTER, typed_config=_envoy.pack(
        grpc_stats_pb2.FilterConfig(emit_filter_state=True))))
    hcm.route_config.validate_clusters.value = False
    route = hcm.route_config.virtual_hosts.add(name=name, domains=["*"]).routes.add()
    route.match.prefix = "/"
    route.route.cluster = name
    chain = listener_components_pb2.FilterChain()
    chain.filters.add(name=names.HCM_FILTER).typed_config.CopyFrom(_envoy.pack(hcm))
    listener = listener_pb2.Listener(name=name, filter_chains=[chain])
    listener.address.pipe.path = backend.socket
    return listener


def apply(matched: Matched, resources: Resources) -> None:
    """The proxy's metrics endpoints: its own resources (OWN_ONLY), so never among an outbound's, which proxies
    share (to_key), with one proxy's sockets."""
    if not matched.hijacker_socket:
        return
    for endpoint in matched.endpoints:
        resources[names.LISTENER][endpoint.listener] = _prometheus_listener(endpoint, matched.ipv6)
        resources[names.CLUSTER][endpoint.cluster] = _hijacker_cluster(endpoint.cluster, matched.hijacker_socket)
    for backend in matched.otel:
        resources[names.LISTENER][names.otel_resource(backend.name)] = _otel_listener(backend, matched.ipv6)
        resources[names.CLUSTER][names.otel_resource(backend.name)] = _otel_cluster(backend)
    if matched.dp_config:
        add_config_route(resources, matched.config_socket, names.MESHMETRIC_CONFIG_PATH, matched.dp_config,
                         matched.ipv6)
