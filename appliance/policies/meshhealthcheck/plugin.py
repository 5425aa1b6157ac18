"""MeshHealthCheck on a sidecar: active health checks on the clusters of outbound services.

As Kuma 2.14 (plugin/v1alpha1/plugin.go, plugin/xds/configurer.go), for each outbound service that a `to`
entry matches, its cluster and the clusters of its parts (MeshHTTPRoute / MeshTCPRoute subset backends):
- healthyPanicThreshold (deprecated here, MeshCircuitBreaker runs later and wins) -> common_lb_config's
  healthy_panic_threshold; failTrafficOnPanic -> zone_aware_lb_config.fail_traffic_on_panic;
- one health check, whose checker follows the destination's protocol: `http` for http/http2 (HTTP/2 codec
  for http2), `grpc` for grpc, `tcp` for tcp, and `tcp` instead of a `http`/`grpc` section that is
  `disabled`. A destination whose protocol has no enabled section gets no check (as Kuma).
  A service without `kuma.io/protocol` counts as tcp here, as everywhere in this control plane (Kuma
  leaves it unknown and checks nothing).
- interval 1m, timeout 15s, unhealthyThreshold 5, healthyThreshold 1 unless set; the jitters,
  noTrafficInterval, reuseConnection, alwaysLogHealthCheckFailures and eventLogPath (a file event sink) as
  given. Only admins may set eventLogPath (schema.admin_only): it makes Envoy write a file on its host.
- http: path (default "/"), expectedStatuses (each one status), requestHeadersToAdd (`add` appends,
  `set` overwrites, a value with commas is one header per part), after Kuma's `x-kuma-tags` header with
  the caller's tags (so the checked service sees who checks, as with real requests);
- tcp: `send` and each `receive` block are the given text's bytes, hex encoded for Envoy. Kuma's API
  docs call them Base64, but Kuma 2.14 sends the text itself, not its decoding; so do we.
On a builtin gateway (`apply_to_gateway`), each cluster a port's routes send to takes the `to` entries for its
service of the policies that select that port's listeners, checked as the listener's protocol (HTTP for
HTTP/HTTPS, TCP for TCP/TLS).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2, health_check_pb2
from envoy.extensions.health_check.event_sinks.file.v3 import file_pb2
from envoy.type.v3 import http_pb2

from appliance.model import names
from appliance.model.proxy import MeshGateway, MeshSnapshot, Proxy
from appliance.policies import _envoy, _gateway, _rules
from appliance.policies._common import parse_decimal

KIND = "MeshHealthCheck"
EVENT_SINK = "envoy.health_check.event_sinks.file"
# configurer.go: what a check uses when the policy leaves it out.
_INTERVAL, _TIMEOUT, _UNHEALTHY_THRESHOLD, _HEALTHY_THRESHOLD, _HTTP_PATH = 60, 15, 5, 1, "/"

Conf = dict[str, Any]


@dataclass(frozen=True)
class Matched:
    services: dict[str, tuple[tuple[str, ...], str]]   # outbound service -> (its clusters, its protocol)
    to_rules: tuple[_rules.Rule, ...]
    tags_header: str                                    # the caller's tags, sent with HTTP checks
    to_key: tuple[str, ...]                             # equal keys: equal outbound clusters


NOTHING = Matched({}, (), "", ())   # no policy of this kind in the mesh


def match(snapshot: MeshSnapshot, proxy: Proxy) -> Matched:
    if not snapshot.policies.get(KIND):
        return NOTHING
    selection = _rules.select(snapshot.policies[KIND], proxy)
    if not selection.proxy:
        return NOTHING
    services = {s: (snapshot.clusters_of(s), snapshot.protocols.get(s, ""))
                for s in sorted({o.service for o in proxy.outbounds})}
    tags_header = proxy.serialized_tags
    # HTTP checks carry the caller's tags: proxies of other services must not share these clusters.
    return Matched(services, tuple(_rules.to_rules(selection)), tags_header, selection.key + (tags_header,))


def _checker(protocol: str, conf: Conf) -> str | None:
    """selectHealthCheckType: the section that matches the protocol, else tcp in place of a disabled one."""
    def enabled(name: str) -> bool:
        return conf.get(name) is not None and not conf[name].get("disabled")

    def disabled(name: str) -> bool:
        return conf.get(name) is not None and bool(conf[name].get("disabled"))

    own = {"http": "http", "http2": "http", "grpc": "grpc", "tcp": "tcp"}.get(protocol)
    if own is None:
        return None
    if enabled(own):
        return own
    if own != "tcp" and disabled(own) and enabled("tcp"):
        return "tcp"
    return None


def _headers(modifier: Conf, tags_header: str) -> list[base_pb2.HeaderValueOption]:
    out = []
    if tags_header:
        out.append(base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=names.TAGS_HEADER, value=tags_header)))
    for field, action in (("add", base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD),
                          ("set", base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD)):
        for header in modifier.get(field) or []:
            for value in str(header.get("value", "")).split(","):
                out.append(base_pb2.HeaderValueOption(
                    header=base_pb2.HeaderValue(key=header.get("name", ""), value=value), append_action=action))
    return out


def _http(check: health_check_pb2.HealthCheck, conf: Conf, protocol: str, tags_header: str) -> None:
    http = check.http_health_check
    http.path = conf.get("path") if conf.get("path") is not None else _HTTP_PATH
    http.request_headers_to_add.extend(_headers(conf.get("requestHeadersToAdd") or {}, tags_header))
    for status in conf.get("expectedStatuses") or []:
        http.expected_statuses.add(start=int(status), end=int(status) + 1)
    http.codec_client_type = http_pb2.HTTP2 if protocol == "http2" else http_pb2.HTTP1


def _tcp(check: health_check_pb2.HealthCheck, conf: Conf) -> None:
    tcp = check.tcp_health_check
    tcp.SetInParent()
    if conf.get("send") is not None:
        tcp.send.text = str(conf["send"]).encode().hex()
    for block in conf.get("receive") or []:
        tcp.receive.add(text=str(block).encode().hex())


def health_check(conf: Conf, checker: str, protocol: str, tags_header: str) -> health_check_pb2.HealthCheck:
    check = health_check_pb2.HealthCheck(
        interval=_envoy.duration(conf.get("interval"), _INTERVAL),
        timeout=_envoy.duration(conf.get("timeout"), _TIMEOUT))
    check.unhealthy_threshold.value = int(conf.get("unhealthyThreshold") or _UNHEALTHY_THRESHOLD)
    check.healthy_threshold.value = int(conf.get("healthyThreshold") or _HEALTHY_THRESHOLD)
    for field, name in (("initialJitter", "initial_jitter"), ("intervalJitter", "interval_jitter"),
                        ("noTrafficInterval", "no_traffic_interval")):
        if conf.get(field) is not None:
            getattr(check, name).CopyFrom(_envoy.duration(conf[field], 0))
    if conf.get("intervalJitterPercent") is not None:
        check.interval_jitter_percent = int(conf["intervalJitterPercent"])
    if conf.get("eventLogPath") is not None:
        check.event_logger.add(name=EVENT_SINK).typed_config.CopyFrom(
            _envoy.pack(file_pb2.HealthCheckEventFileSink(event_log_path=conf["eventLogPath"])))
    if conf.get("alwaysLogHealthCheckFailures") is not None:
        check.always_log_health_check_failures = bool(conf["alwaysLogHealthCheckFailures"])
    if conf.get("reuseConnection") is not None:
        check.reuse_connection.value = bool(conf["reuseConnection"])
    if checker == "http":
        _http(check, conf["http"], protocol, tags_header)
    elif checker == "grpc":
        grpc = conf["grpc"]
        check.grpc_health_check.service_name = grpc.get("serviceName") or ""
        check.grpc_health_check.authority = grpc.get("authority") or ""
    else:
        _tcp(check, conf["tcp"])
    return check


def configure_cluster(cluster: cluster_pb2.Cluster, conf: Conf, protocol: str, tags_header: str) -> None:
    panic = parse_decimal(conf.get("healthyPanicThreshold"))
    if panic is not None:
        cluster.common_lb_config.healthy_panic_threshold.value = float(panic)
    if conf.get("failTrafficOnPanic") is not None:
        # Envoy has the setting for zone-aware balancing only, the kind Kuma (and we) always use.
        zone_aware = cluster.common_lb_config.zone_aware_lb_config
        zone_aware.SetInParent()
        zone_aware.fail_traffic_on_panic = bool(conf["failTrafficOnPanic"])
    checker = _checker(protocol, conf)
    if checker is not None:
        cluster.health_checks.append(health_check(conf, checker, protocol, tags_header))


def apply(matched: Matched, resources: _envoy.Resources) -> None:
    if not matched.to_rules:
        return
    for service, (cluster_names, protocol) in matched.services.items():
        rule = _rules.compute(matched.to_rules, {_rules.SERVICE_TAG: service})
        if rule is None:
            continue
        for name in cluster_names:
            cluster = _envoy.cluster(resources, name)
            if cluster is not None:
                configure_cluster(cluster, rule.conf, protocol, matched.tags_header)


def apply_to_gateway(snapshot: MeshSnapshot, proxy: Proxy, gateway: MeshGateway,
                     ports: tuple[_gateway.GatewayPort, ...], resources: _envoy.Resources) -> None:
    done: set[str] = set()
    for port in ports:
        rules = _rules.policies_to_rules(
            _gateway.port_policies(snapshot.policies.get(KIND, ()), proxy, gateway, port.port))
        protocol = "http" if port.protocol in ("HTTP", "HTTPS") else "tcp"
        for service, name in port.backends:
            rule = _rules.compute(rules, {_rules.SERVICE_TAG: service})
            cluster = _envoy.cluster(resources, name)
            # Once per cluster, by the first port that sends to it: Kuma appends one check per route
            # destination, and Envoy would run each copy.
            if cluster is not None and rule is not None and name not in done:
                done.add(name)
                configure_cluster(cluster, rule.conf, protocol, proxy.serialized_tags)
