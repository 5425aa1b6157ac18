"""MeshTimeout on a sidecar: connection, idle and request timeouts on clusters, listeners and routes.

Field mapping as Kuma 2.14 (plugin/v1alpha1/plugin.go, plugin/xds/configurer.go); an absent field takes
Kuma's default (pkg/plugins/policies/core/defaults), so a proxy gets these timeouts even without any policy:
- cluster: connectionTimeout -> connect_timeout (5s); for HTTP/HTTP2 clusters idleTimeout (1h),
  http.maxStreamDuration (0) and http.maxConnectionDuration (0) -> HttpProtocolOptions;
- HTTP listener: http.requestTimeout -> route timeout (15s), http.streamIdleTimeout -> route
  idle_timeout (30m), http.requestHeadersTimeout -> request_headers_timeout (0), connection idle moves
  to the cluster (HCM idle_timeout 0);
- TCP listener: idleTimeout -> tcp_proxy idle_timeout (1h).
Inbounds use the `from` (or `rules`) entries that apply to every client; outbounds the `to` entries.

On a builtin gateway (`apply_to_gateway`, Kuma's applyToGateway), per port, from the policies selecting its
listeners: the `from`/`rules` entries for every client set the HCM idle (5m), request headers (500ms), stream
idle (5s) and request timeouts, or the TCP proxy idle timeout (5m), the gateway defaults; the `to` entries for
the whole mesh (or a route's MeshHTTPRoute rule) the routes' request and stream idle timeouts, and the `to`
entries for each backend service its clusters, as on a sidecar.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

from appliance.policies import _envoy, _gateway, _rules
from appliance.model.proxy import MeshGateway, MeshSnapshot, Proxy

KIND = "MeshTimeout"
CONNECT_TIMEOUT = 5
IDLE_TIMEOUT = 3600
STREAM_IDLE_TIMEOUT = 1800
REQUEST_TIMEOUT = 15
# policies/core/defaults: a gateway listener's own defaults
GATEWAY_IDLE_TIMEOUT = 300
GATEWAY_STREAM_IDLE_TIMEOUT = 5
GATEWAY_REQUEST_HEADERS_TIMEOUT = 0.5

Conf = dict[str, Any]


@dataclass(frozen=True)
class InboundTimeouts:
    conf: Conf
    apply: bool          # false when only identity-matched rules exist (left to those rules)
    protocol: str
    cluster: str


@dataclass(frozen=True)
class Matched:
    inbounds: dict[_rules.InboundKey, InboundTimeouts]
    outbounds: dict[_rules.InboundKey, tuple[str, str]]   # listener (address, port) -> (service, protocol)
    to_rules: tuple[_rules.Rule, ...]
    protocols: dict[str, str]                              # destination service -> protocol
    clusters: dict[str, tuple[str, ...]]                   # destination service -> its clusters (and its parts')
    to_key: tuple[str, ...]                                # equal keys: equal outbound cluster timeouts


def match(snapshot: MeshSnapshot, proxy: Proxy) -> Matched:
    selection = _rules.select(snapshot.policies.get(KIND, ()), proxy)
    inbounds = {}
    for inbound in proxy.inbounds:
        key = _rules.inbound_key(inbound)
        rules = _rules.inbound_rules(selection.by_inbound.get(key, ()), from_as_rules=True)
        inbounds[key] = InboundTimeouts(
            conf=_rules.catch_all_conf(rules),
            apply=not rules or any(r.match is None for r in rules),
            protocol=inbound.protocol,
            cluster=_envoy.local_cluster(inbound.service_port))
    routes = snapshot.policies.get("MeshHTTPRoute", ())

    def build() -> tuple[Any, ...]:   # the `to` side, shared by the proxies of a group (read-only)
        protocols = {o.service: snapshot.protocols.get(o.service, "tcp") for o in proxy.outbounds}
        outbounds = {(o.address, o.port): (o.service, protocols[o.service]) for o in proxy.outbounds}
        clusters = {service: snapshot.clusters_of(service) for service in protocols}
        return outbounds, tuple(_rules.to_rules(selection, routes=routes)), protocols, clusters
    outbounds, rules, protocols, clusters = _rules.per_group(snapshot, KIND, selection, proxy, build)
    return Matched(inbounds, outbounds, rules, protocols, clusters, selection.key)


def _outbound_conf(matched: Matched, service: str) -> Conf | None:
    rule = _rules.compute(matched.to_rules, {_rules.SERVICE_TAG: service})
    return rule.conf if rule is not None else None


def configure_route(route: route_components_pb2.Route, http: Conf) -> None:
    """ConfigureRouteAction: request timeout always, stream idle timeout unless a route already has one."""
    if not route.HasField("route"):
        return
    action = route.route
    action.timeout.CopyFrom(_envoy.duration(http.get("requestTimeout"), REQUEST_TIMEOUT))
    if http.get("streamIdleTimeout") is not None or not action.HasField("idle_timeout"):
        action.idle_timeout.CopyFrom(_envoy.duration(http.get("streamIdleTimeout"), STREAM_IDLE_TIMEOUT))


def configure_cluster(cluster: cluster_pb2.Cluster, conf: Conf, protocol: str) -> None:
    cluster.connect_timeout.CopyFrom(_envoy.duration(conf.get("connectionTimeout"), CONNECT_TIMEOUT))
    if protocol not in ("http", "http2"):  # Kuma leaves gRPC and TCP clusters' HTTP options alone
        return
    http = conf.get("http") or {}

    def update(options: http_protocol_options_pb2.HttpProtocolOptions) -> None:
        common = options.common_http_protocol_options
        common.idle_timeout.CopyFrom(_envoy.duration(conf.get("idleTimeout"), IDLE_TIMEOUT))
        common.max_stream_duration.CopyFrom(_envoy.duration(http.get("maxStreamDuration"), 0))
        common.max_connection_duration.CopyFrom(_envoy.duration(http.get("maxConnectionDuration"), 0))

    _envoy.update_http_protocol_options(cluster, update)


def _configure_inbound_listener(listener: listener_pb2.Listener, conf: Conf) -> None:
    http = conf.get("http") or {}

    def update_hcm(hcm: hcm_pb2.HttpConnectionManager) -> None:
        for route in _envoy.routes(hcm):
            configure_route(route, http)
        hcm.request_headers_timeout.CopyFrom(_envoy.duration(http.get("requestHeadersTimeout"), 0))
        # The connection idle timeout belongs to the cluster under MeshTimeout.
        hcm.common_http_protocol_options.idle_timeout.CopyFrom(_envoy.duration(None, 0))

    def update_tcp(proxy: tcp_proxy_pb2.TcpProxy) -> None:
        proxy.idle_timeout.CopyFrom(_envoy.duration(conf.get("idleTimeout"), IDLE_TIMEOUT))

    for chain in listener.filter_chains:
        _envoy.update_hcm(chain, update_hcm)
        _envoy.update_tcp_proxy(chain, update_tcp)


def _configure_outbound_listener(listener: listener_pb2.Listener, matched: Matched, service: str,
                                 protocol: str) -> None:
    """DeprecatedListenerConfigurer: kuma.io/service outbounds; a service no `to` entry matches keeps its routes.
    A route takes the entries of kind MeshHTTPRoute for its rule over those of its service."""
    conf = _outbound_conf(matched, service)
    http = (conf or {}).get("http") or {}

    def update_hcm(hcm: hcm_pb2.HttpConnectionManager) -> None:
        for route in _envoy.routes(hcm):
            found = _rules.compute(matched.to_rules, _rules.route_element(service, route.name))
            if found is not None:
                configure_route(route, found.conf.get("http") or {})
        if conf is not None:
            hcm.request_headers_timeout.CopyFrom(_envoy.duration(http.get("requestHeadersTimeout"), 0))
        hcm.common_http_protocol_options.idle_timeout.CopyFrom(_envoy.duration(None, 0))

    def update_tcp(proxy: tcp_proxy_pb2.TcpProxy) -> None:
        if conf is not None:
            proxy.idle_timeout.CopyFrom(_envoy.duration(conf.get("idleTimeout"), IDLE_TIMEOUT))

    for chain in listener.filter_chains:
        if protocol in _envoy.HTTP_PROTOCOLS:
            _envoy.update_hcm(chain, update_hcm)
        else:
            _envoy.update_tcp_proxy(chain, update_tcp)


def outbound_view(matched: Matched, place: _rules.InboundKey) -> Any:
    """What `apply` reads for an outbound's resources (policies/__init__.py): not `inbounds`, which name the
    proxy's own listeners and local clusters only."""
    return matched.outbounds, matched.to_rules, matched.protocols, matched.clusters


def apply(matched: Matched, resources: _envoy.Resources) -> None:
    inbound_listeners = _envoy.listeners_by_address(resources, base_pb2.INBOUND)
    for key, inbound in matched.inbounds.items():
        if not inbound.apply:
            continue
        listener = inbound_listeners.get(key)
        if listener is not None:
            _configure_inbound_listener(listener, inbound.conf)
        cluster = _envoy.cluster(resources, inbound.cluster)
        if cluster is not None:
            configure_cluster(cluster, inbound.conf, inbound.protocol)
    outbound_listeners = _envoy.listeners_by_address(resources, base_pb2.OUTBOUND)
    for key, (service, protocol) in matched.outbounds.items():
        listener = outbound_listeners.get(key)
        if listener is not None:
            _configure_outbound_listener(listener, matched, service, protocol)
    for service, protocol in matched.protocols.items():
        for name in matched.clusters[service]:
            cluster = _envoy.cluster(resources, name)
            if cluster is not None:
                configure_cluster(cluster, _outbound_conf(matched, service) or {}, protocol)


def _configure_gateway_listener(listener: listener_pb2.Listener, conf: Conf) -> None:
    http = conf.get("http") or {}

    def update_hcm(hcm: hcm_pb2.HttpConnectionManager) -> None:
        hcm.common_http_protocol_options.idle_timeout.CopyFrom(
            _envoy.duration(conf.get("idleTimeout"), GATEWAY_IDLE_TIMEOUT))
        hcm.request_headers_timeout.CopyFrom(
            _envoy.duration(http.get("requestHeadersTimeout"), GATEWAY_REQUEST_HEADERS_TIMEOUT))
        hcm.stream_idle_timeout.CopyFrom(_envoy.duration(http.get("streamIdleTimeout"), GATEWAY_STREAM_IDLE_TIMEOUT))
        if http.get("requestTimeout") is not None:
            hcm.request_timeout.CopyFrom(_envoy.duration(http["requestTimeout"], 0))

    def update_tcp(proxy: tcp_proxy_pb2.TcpProxy) -> None:
        proxy.idle_timeout.CopyFrom(_envoy.duration(conf.get("idleTimeout"), GATEWAY_IDLE_TIMEOUT))

    for chain in listener.filter_chains:
        _envoy.update_hcm(chain, update_hcm)
        _envoy.update_tcp_proxy(chain, update_tcp)


def apply_to_gateway(snapshot: MeshSnapshot, proxy: Proxy, gateway: MeshGateway,
                     ports: tuple[_gateway.GatewayPort, ...], resources: _envoy.Resources) -> None:
    for port in ports:
        policies = _gateway.port_policies(snapshot.policies.get(KIND, ()), proxy, gateway, port.port)
        inbound = _rules.inbound_rules(policies, from_as_rules=True)
        listener = _envoy.listener(resources, port.listener)
        if listener is not None and (not inbound or any(r.match is None for r in inbound)):
            _configure_gateway_listener(listener, _rules.catch_all_conf(inbound))
        if not policies:   # no rules for the port: its routes and clusters keep the gateway's own settings
            continue
        rules = _rules.policies_to_rules(policies, routes=snapshot.policies.get("MeshHTTPRoute", ()))
        common = _rules.compute(rules, {})
        for name in port.route_configs:
            config = resources.get(_envoy.ROUTE, {}).get(name)
            for host in getattr(config, "virtual_hosts", ()):
                for route in host.routes:
                    found = _rules.compute(rules, {_rules.RULE_HASH_TAG: route.name}) or common
                    if found is not None:
                        configure_route(route, found.conf.get("http") or {})
        for service, name in port.backends:
            cluster = _envoy.cluster(resources, name)
            if cluster is not None:
                found = _rules.compute(rules, {_rules.SERVICE_TAG: service})
                configure_cluster(cluster, found.conf if found is not None else {},
                                  snapshot.protocols.get(service, "tcp"))
