"""MeshTrace on a sidecar: HTTP tracing on its inbound and outbound listeners, and the collector's cluster.

As Kuma 2.14 (plugin/v1alpha1/plugin.go, plugin/xds/configurer.go): the `default` of every policy that selects
the proxy, merged in precedence order (a Dataplane policy with a sectionName only on that inbound), becomes the
`tracing` of each HTTP connection manager (TCP listeners are not traced):
- sampling overall / client / random as percentages (Envoy's defaults, 100 %, when absent);
- custom tags: literal ones and ones read from a request header (with a default), then `kuma.mesh` and
  `kuma.zone` unless a tag of that name is given;
- the provider: Zipkin (collector path and host from the URL, 128-bit trace ids, shared span context, JSON or
  proto), Datadog (service name, split by direction and destination with `splitService`) or OpenTelemetry over
  gRPC (service name), each to a cluster named `meshtrace:<provider>`.
Spans carry the proxy's service as their service name: Envoy's node cluster, which the bootstrap sets to it.
Without a backend nothing is traced. A `backendRef` (MeshOpenTelemetryBackend) is not resolved here: such a
policy traces nothing, and the API says so on write (schema.deprecations).
On a builtin gateway (`apply_to_gateway`), the `default` of every policy that selects one of its listeners,
merged in precedence order, traces each of its HTTP and HTTPS ports (as an inbound listener, no destination).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.trace.v3 import datadog_pb2, http_tracer_pb2, opentelemetry_pb2, zipkin_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.type.tracing.v3 import custom_tag_pb2
from envoy.type.v3 import percent_pb2

from appliance.model import names
from appliance.model.proxy import MeshGateway, MeshSnapshot, Proxy
from appliance.policies import _collectors, _envoy, _gateway, _rules
from appliance.policies._common import parse_decimal

KIND = "MeshTrace"
UNKNOWN_SERVICE = "unknown"

Conf = dict[str, Any]
ListenerKey = tuple[str, int]


@dataclass(frozen=True)
class Matched:
    service: str                          # the proxy's service: what spans and Datadog name it by
    mesh: str
    zone: str
    inbound: dict[ListenerKey, Conf]      # the conf of each inbound listener
    outbound: Conf | None                 # the conf of every outbound listener
    to_key: tuple[str, ...] = ()


NOTHING = Matched("", "", "", {}, None)


def _scoped(policy: Any, key: ListenerKey, by_inbound: dict[ListenerKey, tuple[Any, ...]]) -> bool:
    """buildListenerScopedSingleItemRules: a Dataplane policy with a sectionName only on its inbound."""
    ref = _rules.top_ref(policy)
    if ref.get("kind") != "Dataplane" or not ref.get("sectionName"):
        return True
    return policy in by_inbound.get(key, ())


def _merged(policies: Any) -> Conf:
    held = tuple(policies)
    return _rules.by_identity((KIND, *map(id, held)), held,
                              lambda: _rules.merge(p.spec.get("default") or {} for p in held))


def match(snapshot: MeshSnapshot, proxy: Proxy) -> Matched:
    if not snapshot.policies.get(KIND):
        return NOTHING
    selection = _rules.select(snapshot.policies[KIND], proxy)
    if not selection.proxy:
        return NOTHING
    service = proxy.services[0] if proxy.services else UNKNOWN_SERVICE
    inbound = {}
    for found in proxy.inbounds:
        key = _rules.inbound_key(found)
        scoped = [p for p in selection.proxy if _scoped(p, key, selection.by_inbound)]
        if scoped:
            inbound[key] = _merged(scoped)
    outbound = _merged(selection.proxy)
    zone = proxy.labels.get("kuma.io/zone", "")
    to_key = (service, zone, json.dumps(outbound, sort_keys=True)) if outbound.get("backends") else ()
    return Matched(service, proxy.mesh, zone, inbound, outbound, to_key)


def _backend(conf: Conf) -> Conf | None:
    backends = conf.get("backends") or []
    return backends[0] if backends and isinstance(backends[0], dict) else None


def _percent(value: Any) -> percent_pb2.Percent:
    number = parse_decimal(value)
    return percent_pb2.Percent(value=float(number) if number is not None else 0.0)


def _custom_tags(conf: Conf, mesh: str, zone: str) -> list[custom_tag_pb2.CustomTag]:
    tags = []
    for tag in conf.get("tags") or []:
        header = tag.get("header")
        if header is not None:
            tags.append(custom_tag_pb2.CustomTag(tag=tag.get("name", ""), request_header=custom_tag_pb2.CustomTag.Header(
                name=header.get("name", ""), default_value=header.get("default") or "")))
        else:
            tags.append(custom_tag_pb2.CustomTag(tag=tag.get("name", ""), literal=custom_tag_pb2.CustomTag.Literal(
                value=tag.get("literal") or "")))
    for name, value in (("kuma.mesh", mesh), ("kuma.zone", zone)):
        if value and all(t.tag != name for t in tags):
            tags.append(custom_tag_pb2.CustomTag(tag=name, literal=custom_tag_pb2.CustomTag.Literal(value=value)))
    return tags


def cluster_name(backend: Conf) -> str:
    provider = {"Zipkin": "zipkin", "Datadog": "datadog", "OpenTelemetry": "opentelemetry"}[backend["type"]]
    return f"meshtrace:{provider}"


def _zipkin(zipkin: Conf, cluster: str) -> http_tracer_pb2.Tracing.Http:
    url = urlsplit(str(zipkin.get("url", "")))
    config = zipkin_pb2.ZipkinConfig(
        collector_cluster=cluster, collector_endpoint=url.path, trace_id_128bit=bool(zipkin.get("traceId128bit")),
        collector_endpoint_version=(zipkin_pb2.ZipkinConfig.HTTP_PROTO if zipkin.get("apiVersion") == "httpProto"
                                    else zipkin_pb2.ZipkinConfig.HTTP_JSON),
        collector_hostname=url.netloc)
    config.shared_span_context.value = zipkin.get("sharedSpanContext", True) is not False
    return http_tracer_pb2.Tracing.Http(name="envoy.tracers.zipkin", typed_config=_envoy.pack(config))


def _datadog_service(datadog: Conf, service: str, direction: int, destination: str) -> str:
    if not datadog.get("splitService"):
        return service
    if direction == base_pb2.INBOUND:
        return f"{service}_INBOUND"
    if direction == base_pb2.OUTBOUND:
        return f"{service}_OUTBOUND_{destination}"
    return service


def provider(backend: Conf, service: str, direction: int, destination: str) -> http_tracer_pb2.Tracing.Http | None:
    cluster = cluster_name(backend)
    if backend.get("type") == "Zipkin" and backend.get("zipkin"):
        return _zipkin(backend["zipkin"], cluster)
    if backend.get("type") == "Datadog" and backend.get("datadog"):
        config = datadog_pb2.DatadogConfig(
            collector_cluster=cluster,
            service_name=_datadog_service(backend["datadog"], service, direction, destination))
        return http_tracer_pb2.Tracing.Http(name="envoy.tracers.datadog", typed_config=_envoy.pack(config))
    otel = backend.get("openTelemetry") if backend.get("type") == "OpenTelemetry" else None
    if otel and otel.get("endpoint") and otel.get("backendRef") is None:
        config = opentelemetry_pb2.OpenTelemetryConfig(service_name=service)
        config.grpc_service.envoy_grpc.cluster_name = cluster
        return http_tracer_pb2.Tracing.Http(name="envoy.tracers.opentelemetry", typed_config=_envoy.pack(config))
    return None   # a backendRef names a MeshOpenTelemetryBackend, which this control plane does not resolve


def tracing(conf: Conf, matched: Matched, direction: int, destination: str
            ) -> hcm_pb2.HttpConnectionManager.Tracing | None:
    """Configurer.Configure: the HTTP connection manager's tracing, None when the conf has no usable backend."""
    backend = _backend(conf)
    found = provider(backend, matched.service, direction, destination) if backend else None
    if found is None:
        return None
    result = hcm_pb2.HttpConnectionManager.Tracing(provider=found)
    result.spawn_upstream_span.value = False
    sampling = conf.get("sampling") or {}
    for field, name in (("overall_sampling", "overall"), ("client_sampling", "client"),
                        ("random_sampling", "random")):
        if sampling.get(name) is not None:
            getattr(result, field).CopyFrom(_percent(sampling[name]))
    result.custom_tags.extend(_custom_tags(conf, matched.mesh, matched.zone))
    return result


def collector_cluster(backend: Conf) -> cluster_pb2.Cluster:
    """The cluster of the collector: Zipkin's and Datadog's from their URL, OpenTelemetry's over HTTP/2."""
    name = cluster_name(backend)
    if backend["type"] == "OpenTelemetry":
        host, port = _collectors.otel_endpoint(str(backend["openTelemetry"]["endpoint"]))
        return _collectors.collector_cluster(name, host, port, http2=True)
    url = urlsplit(str(backend[backend["type"].lower()].get("url", "")))
    https = url.scheme == "https"
    # Kuma leaves the port 0 when the URL has none; the scheme's port is what the URL means.
    port = url.port or (443 if https else 80)
    return _collectors.collector_cluster(name, url.hostname or "", port,
                                         tls_sni=url.hostname or "" if https else None)


def apply(matched: Matched, resources: _envoy.Resources) -> None:
    used: list[Conf] = []
    for direction, by_key in ((base_pb2.INBOUND, matched.inbound), (base_pb2.OUTBOUND, None)):
        for key, listener in _envoy.listeners_by_address(resources, direction).items():
            conf = matched.inbound.get(key) if by_key is not None else matched.outbound
            if not conf:
                continue
            metadata = listener.metadata.filter_metadata.get(names.TAGS_METADATA_KEY)
            destination = metadata.fields[_rules.SERVICE_TAG].string_value if metadata else ""
            # read-only, shared by the proxies whose merged conf is the same object (_merged)
            built = _rules.by_identity((KIND, id(conf), matched.service, matched.mesh, matched.zone, direction,
                                        destination), (conf,), lambda: tracing(conf, matched, direction, destination))
            if built is None:
                continue
            configured = False
            for chain in listener.filter_chains:
                configured |= _envoy.update_hcm(chain, lambda hcm: hcm.tracing.CopyFrom(built))
            if configured:
                used.append(_backend(conf) or {})
    clusters = resources.setdefault(_envoy.CLUSTER, {})
    for backend in used:
        name = cluster_name(backend)
        if name not in clusters:
            clusters[name] = collector_cluster(backend)


def apply_to_gateway(snapshot: MeshSnapshot, proxy: Proxy, gateway: MeshGateway,
                     ports: tuple[_gateway.GatewayPort, ...], resources: _envoy.Resources) -> None:
    """Kuma's SingleItemRules for the gateway proxy: one conf, from the policies that select any listener."""
    selected = {p.name for port in ports
                for p in _gateway.port_policies(snapshot.policies.get(KIND, ()), proxy, gateway, port.port)}
    policies = [p for p in _rules.sort_policies(snapshot.policies.get(KIND, ())) if p.name in selected]
    if not policies:
        return
    conf = _merged(policies)
    service = proxy.services[0] if proxy.services else UNKNOWN_SERVICE
    inbound = {(proxy.address, port.port): conf for port in ports}
    apply(Matched(service, proxy.mesh, proxy.labels.get("kuma.io/zone", ""), inbound, None), resources)
