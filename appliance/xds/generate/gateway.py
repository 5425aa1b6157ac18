"""A builtin gateway proxy's resources (Kuma 2.14's runtime/gateway generators).

    resources = generate_gateway(snapshot, proxy, identity)

The MeshGateway whose selectors match the proxy's gateway tags says what it listens on; each port becomes one
Envoy listener `<gateway>:<protocol>:<port>` on the proxy's address:
- HTTP: one route configuration `<listener>:*` (by RDS, so that a route change is applied in place to the next
  request) with a virtual host per hostname holding the routes of the MeshHTTPRoutes that target the gateway
  (policies/meshhttproute/gateway.py); a virtual host without routes answers 404 as Kuma's does;
- HTTPS: the same per hostname (`<listener>:<hostname>`), each on a filter chain chosen by SNI that terminates
  TLS with the certificates of its Secrets;
- TCP: the connections go to the backends of the MeshTCPRoutes that target it (policies/meshtcproute/gateway.py);
- TLS: the same per hostname (SNI), TLS terminated with its certificates or passed through;
- HTTP with crossMesh: the HTTP listener over mTLS from the proxies of any mesh (xds/generate/cross_mesh.py).
Backends are the mesh services' own clusters, reached over the mesh's mTLS with the gateway's identity (its
`kuma.io/service`). The other policies apply through their plugins' `apply_to_gateway` (policies.GATEWAY_KINDS),
then the metrics endpoint (Mesh.metrics, MeshMetric) and MeshProxyPatch; the API warns about the others when they
target gateways.
"""
from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2, protocol_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.compression.gzip.compressor.v3 import gzip_pb2
from envoy.extensions.filters.http.compressor.v3 import compressor_pb2
from envoy.extensions.filters.network.connection_limit.v3 import connection_limit_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from appliance import policies
from appliance.model import names
from appliance.model.names import Resources
from appliance.model.proxy import (
    SERVED_GATEWAY_PROTOCOLS, GatewayListener, Identity, MeshGateway, MeshSnapshot, Proxy,
)
from appliance.policies._backends import Backend, add_clusters
from appliance.policies.meshhttproute._envoy_routes import envoy_routes
from appliance.policies._gateway import GatewayPort, select_gateway
from appliance.policies.meshmetric import plugin as meshmetric
from appliance.policies.meshproxypatch import plugin as meshproxypatch
from appliance.policies.meshhttproute.gateway import WILDCARD, VirtualHost, hostname_order, virtual_hosts
from appliance.policies.meshtcproute.gateway import listener_backends
from appliance.policies.meshtcproute.plugin import tcp_proxy
from appliance.xds.generate.clusters import cluster_for
from appliance.xds.generate.cross_mesh import serve_cross_mesh
from appliance.xds.generate.endpoints import load_assignment_for
from appliance.xds.generate.listeners import TLS_INSPECTOR, http_connection_manager, network_filter, socket_address
from appliance.xds.generate.routes import rds
from appliance.xds.generate.tls import (
    ca_secret, gateway_certificate_secret, gateway_terminating_socket, identity_secret,
)

# Kuma's gateway defaults (pkg/plugins/runtime/gateway, policies_defaults): what its goldens show.
SERVER_NAME = "Kuma Gateway"
NOT_FOUND_BODY = "This is a Kuma MeshGateway. No routes match this MeshGateway!\n"
BUFFER_LIMIT = 32768
IDLE_TIMEOUT = 300
STREAM_IDLE_TIMEOUT = 5
REQUEST_HEADERS_TIMEOUT_NANOS = 500_000_000
ROUTE_IDLE_TIMEOUT = 5
CONNECT_TIMEOUT = 5
CONNECTION_LIMIT_FILTER = "envoy.filters.network.connection_limit"
GZIP_FILTER = "gzip-compress"
HSTS = "max-age=31536000; includeSubDomains"


def listener_name(gateway: str, protocol: str, port: int) -> str:
    return f"{gateway}:{protocol}:{port}"


def _gzip() -> hcm_pb2.HttpFilter:
    """Kuma's gateways compress responses for clients that accept gzip (not where an ETag is set)."""
    config = compressor_pb2.Compressor()
    config.compressor_library.name = "gzip"
    config.compressor_library.typed_config.Pack(gzip_pb2.Gzip(), deterministic=True)
    config.response_direction_config.disable_on_etag_header = True
    http_filter = hcm_pb2.HttpFilter(name=GZIP_FILTER)
    http_filter.typed_config.Pack(config, deterministic=True)
    return http_filter


def _hcm(snapshot: MeshSnapshot, proxy: Proxy, gateway: str, route_config: str) -> hcm_pb2.HttpConnectionManager:
    hcm = http_connection_manager(gateway, "http", snapshot, proxy)
    hcm.http_filters.insert(len(hcm.http_filters) - 1, _gzip())   # before the router
    hcm.server_name = SERVER_NAME
    hcm.use_remote_address.value = True
    hcm.normalize_path.value = True
    hcm.merge_slashes = True
    hcm.path_with_escaped_slashes_action = hcm_pb2.HttpConnectionManager.UNESCAPE_AND_REDIRECT
    hcm.common_http_protocol_options.idle_timeout.seconds = IDLE_TIMEOUT
    hcm.common_http_protocol_options.headers_with_underscores_action = protocol_pb2.HttpProtocolOptions.REJECT_REQUEST
    hcm.http2_protocol_options.allow_connect = True
    hcm.http2_protocol_options.initial_connection_window_size.value = 1048576
    hcm.http2_protocol_options.initial_stream_window_size.value = 65536
    hcm.http2_protocol_options.max_concurrent_streams.value = 100
    hcm.stream_idle_timeout.seconds = STREAM_IDLE_TIMEOUT
    hcm.request_headers_timeout.nanos = REQUEST_HEADERS_TIMEOUT_NANOS
    hcm.rds.CopyFrom(rds(route_config))
    return hcm


def _connection_limit(gateway: str, listeners: list[GatewayListener]) -> listener_components_pb2.Filter | None:
    """resources.connectionLimit (one value per port, as validation keeps it): a connection beyond it is closed.
    Kuma sets it as an RTDS runtime key of the listener; here it is Envoy's connection_limit filter, first in
    each filter chain (so an HTTPS port counts per hostname)."""
    limit = max((l.connection_limit for l in listeners), default=0)
    if not limit:
        return None
    config = connection_limit_pb2.ConnectionLimit(stat_prefix=names.sanitize_metric(gateway))
    config.max_connections.value = limit
    return network_filter(CONNECTION_LIMIT_FILTER, config)


def _listener(proxy: Proxy, name: str, port: int) -> listener_pb2.Listener:
    listener = listener_pb2.Listener(name=name, address=socket_address(proxy.address, port),
                                     traffic_direction=base_pb2.INBOUND, listener_filters=[TLS_INSPECTOR])
    listener.per_connection_buffer_limit_bytes.value = BUFFER_LIMIT
    # Kuma sets SO_REUSEPORT; we do not, as on sidecars (listeners.inbound_listener says why).
    listener.enable_reuse_port.value = False
    return listener


def _forward(route: route_components_pb2.Route, source_tags: str) -> None:
    """As Kuma's gateway: always weighted clusters, each carrying the gateway's tags (x-kuma-tags)."""
    action = route.route
    if action.cluster:
        action.weighted_clusters.clusters.add(name=action.cluster).weight.value = 100
    for cluster in action.weighted_clusters.clusters:
        cluster.request_headers_to_add.add().header.CopyFrom(
            base_pb2.HeaderValue(key=names.TAGS_HEADER, value=source_tags))
    action.ClearField("timeout")
    action.cluster_not_found_response_code = route_components_pb2.RouteAction.INTERNAL_SERVER_ERROR
    action.idle_timeout.seconds = ROUTE_IDLE_TIMEOUT


def _virtual_host(host: VirtualHost, source_tags: str, tls: bool) -> route_components_pb2.VirtualHost:
    out = route_components_pb2.VirtualHost(name=host.hostname, domains=[host.hostname])
    if tls:   # as Kuma on HTTPS listeners: TLS only, and browsers told to keep to it for a year
        out.require_tls = route_components_pb2.VirtualHost.ALL
        out.response_headers_to_add.add(
            header=base_pb2.HeaderValue(key="Strict-Transport-Security", value=HSTS),
            append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD)
    for found in host.routes.routes:
        # URLRewrite hostToBackendHostname (gateways only): Envoy's auto host rewrite, as Kuma sets it
        to_backend = any(f.get("type") == "URLRewrite" and (f.get("urlRewrite") or {}).get("hostToBackendHostname")
                         for f in found.filters)
        for route in envoy_routes(found.name, found.match, found.filters,
                                  [(s.cluster, s.weight) for s in found.splits], to_backend,
                                  {i: b.cluster for i, b in found.mirrors.items()}):
            if route.HasField("route"):
                _forward(route, source_tags)
            out.routes.append(route)
    if not out.routes:
        route = out.routes.add()
        route.match.prefix = "/"
        route.direct_response.status = 404
        route.direct_response.body.inline_string = NOT_FOUND_BODY
    return out


def _route_config(name: str, hosts: tuple[VirtualHost, ...], source_tags: str,
                  tls: bool) -> route_pb2.RouteConfiguration:
    config = route_pb2.RouteConfiguration(name=name, ignore_port_in_host_matching=True,
                                          request_headers_to_remove=[names.TAGS_HEADER])
    config.validate_clusters.value = False
    config.virtual_hosts.extend(_virtual_host(h, source_tags, tls) for h in hosts)
    return config


def _cluster(snapshot: MeshSnapshot, service: str) -> cluster_pb2.Cluster:
    cluster = cluster_for(snapshot, service)
    cluster.connect_timeout.seconds = CONNECT_TIMEOUT
    cluster.per_connection_buffer_limit_bytes.value = BUFFER_LIMIT
    return cluster


def by_port(gateway: MeshGateway) -> dict[tuple[str, int], list[GatewayListener]]:
    """The listeners served, by (protocol, port) (validation keeps one protocol per port). An HTTPS or TLS
    listener whose certificates cannot be used is left out (the control plane logs why): Envoy would refuse it."""
    out: dict[tuple[str, int], list[GatewayListener]] = {}
    for listener in gateway.listeners:
        if listener.protocol in SERVED_GATEWAY_PROTOCOLS and not listener.tls_error:
            out.setdefault((listener.protocol, listener.port), []).append(listener)
    return out


class _Gateway:
    """What one gateway proxy's generation collects: its resources and the gateway tags its requests carry."""

    def __init__(self, snapshot: MeshSnapshot, proxy: Proxy, gateway: MeshGateway) -> None:
        self.snapshot, self.proxy, self.gateway = snapshot, proxy, gateway
        self.resources: Resources = {type_url: {} for type_url in names.TYPE_ORDER}
        self.source_tags = proxy.serialized_tags
        self.used: set[str] = set()   # the clusters routes send to (a service's own is only a part's template)
        self.ports: list[GatewayPort] = []

    def port(self, port: int, protocol: str, listener: str, route_configs: tuple[str, ...],
             backends: list[Backend]) -> None:
        pairs = tuple(dict.fromkeys((b.service, b.cluster) for b in backends))
        self.ports.append(GatewayPort(port, protocol, listener, route_configs, pairs))

    def add(self, listener: listener_pb2.Listener, listeners: list[GatewayListener]) -> None:
        limit = _connection_limit(self.gateway.name, listeners)
        if limit is not None:
            for chain in listener.filter_chains:
                chain.filters.insert(0, limit)
        self.resources[names.LISTENER][listener.name] = listener

    def routes(self, name: str, listeners: list[GatewayListener], tls: bool) -> list[Backend]:
        hosts = virtual_hosts(self.snapshot, self.proxy, self.gateway, listeners)
        self.resources[names.ROUTE][name] = _route_config(name, hosts, self.source_tags, tls)
        backends = [b for h in hosts for b in h.routes.backends]
        self.clusters(backends)
        return backends

    def clusters(self, backends: list[Backend]) -> None:
        clusters = self.resources[names.CLUSTER]
        self.used.update(b.cluster for b in backends)
        for found in backends:
            if found.service not in clusters:
                clusters[found.service] = _cluster(self.snapshot, found.service)
        add_clusters(self.resources, backends, self.snapshot.mesh)

    def http(self, port: int, listeners: list[GatewayListener]) -> None:
        listener = _listener(self.proxy, listener_name(self.gateway.name, "HTTP", port), port)
        hcm = _hcm(self.snapshot, self.proxy, self.gateway.name, listener.name + ":*")
        chain = listener.filter_chains.add()
        chain.filters.append(network_filter(names.HCM_FILTER, hcm))
        cross_mesh = listeners[0].cross_mesh   # as Kuma: the port's first listener decides
        if cross_mesh:
            serve_cross_mesh(chain, self.snapshot, self.resources)
        self.add(listener, listeners)
        backends = self.routes(listener.name + ":*", listeners, tls=cross_mesh)
        self.port(port, "HTTP", listener.name, (listener.name + ":*",), backends)

    def https(self, port: int, listeners: list[GatewayListener]) -> None:
        """A filter chain per hostname, chosen by SNI: a client asking for another name gets no TLS handshake."""
        listener = _listener(self.proxy, listener_name(self.gateway.name, "HTTPS", port), port)
        route_names, backends = [], []
        for served in sorted(listeners, key=lambda l: hostname_order(l.hostname)):
            route_name = f"{listener.name}:{served.hostname}"
            chain = listener.filter_chains.add()
            chain.filter_chain_match.transport_protocol = "tls"
            if served.hostname != WILDCARD:
                chain.filter_chain_match.server_names.append(served.hostname)
            chain.filters.append(network_filter(
                names.HCM_FILTER, _hcm(self.snapshot, self.proxy, self.gateway.name, route_name)))
            chain.transport_socket.CopyFrom(gateway_terminating_socket(tuple(c.name for c in served.certificates)))
            for certificate in served.certificates:
                self.resources[names.SECRET][certificate.name] = gateway_certificate_secret(certificate)
            backends += self.routes(route_name, [served], tls=True)
            route_names.append(route_name)
        self.add(listener, listeners)
        self.port(port, "HTTPS", listener.name, tuple(route_names), backends)


    def tcp(self, port: int, listeners: list[GatewayListener]) -> None:
        """The connections go to the backends of the MeshTCPRoutes for the listener (one per TCP port)."""
        backends = listener_backends(self.snapshot, self.proxy, self.gateway, listeners[0])
        if not backends:
            return
        listener = _listener(self.proxy, listener_name(self.gateway.name, "TCP", port), port)
        # Kuma keeps the TLS inspector here too; it holds a connection until the client has sent 5 bytes (or for
        # 15 s), which a protocol where the server speaks first, or a short first message, never gets past. A TCP
        # listener has one filter chain and nothing to inspect.
        del listener.listener_filters[:]
        listener.filter_chains.add().filters.append(
            network_filter(names.TCP_PROXY_FILTER, tcp_proxy(self.gateway.name, backends)))
        self.add(listener, listeners)
        self.clusters(list(backends))
        self.port(port, "TCP", listener.name, (), list(backends))

    def tls(self, port: int, listeners: list[GatewayListener]) -> None:
        """A filter chain per hostname, chosen by SNI, proxying the connections to the backends of the
        MeshTCPRoutes for that listener: TLS terminated here (TERMINATE) or passed on as it is (PASSTHROUGH)."""
        listener = _listener(self.proxy, listener_name(self.gateway.name, "TLS", port), port)
        used: list[Backend] = []
        for served in sorted(listeners, key=lambda l: hostname_order(l.hostname)):
            backends = listener_backends(self.snapshot, self.proxy, self.gateway, served)
            if served.tls_mode not in ("TERMINATE", "PASSTHROUGH") or not backends:
                continue
            chain = listener.filter_chains.add()
            chain.filter_chain_match.transport_protocol = "tls"
            if served.hostname != WILDCARD:
                chain.filter_chain_match.server_names.append(served.hostname)
            chain.filters.append(network_filter(names.TCP_PROXY_FILTER, tcp_proxy(self.gateway.name, backends)))
            if served.tls_mode == "TERMINATE":
                chain.transport_socket.CopyFrom(
                    gateway_terminating_socket(tuple(c.name for c in served.certificates), alpn=()))
                for certificate in served.certificates:
                    self.resources[names.SECRET][certificate.name] = gateway_certificate_secret(certificate)
            self.clusters(list(backends))
            used += backends
        if listener.filter_chains:
            self.add(listener, listeners)
            self.port(port, "TLS", listener.name, (), used)


def generate_gateway(snapshot: MeshSnapshot, proxy: Proxy, identity: Identity | None) -> Resources:
    """All resources of one builtin gateway proxy; none when no MeshGateway selects it, or when the mesh asks
    for mTLS and its CA cannot be used (fail closed, as sidecars)."""
    gateway = select_gateway(snapshot.gateways, proxy.gateway_tags or {})
    if snapshot.mtls_error is not None or gateway is None:
        return {type_url: {} for type_url in names.TYPE_ORDER}
    built = _Gateway(snapshot, proxy, gateway)
    for (protocol, port), listeners in sorted(by_port(gateway).items(), key=lambda item: item[0][1]):
        {"HTTP": built.http, "HTTPS": built.https, "TCP": built.tcp, "TLS": built.tls}[protocol](port, listeners)
    resources = built.resources
    resources[names.CLUSTER] = {n: c for n, c in resources[names.CLUSTER].items() if n in built.used}
    for plugin in policies.plugins():   # in Kuma's plugin order, those that configure builtin gateways
        if hasattr(plugin, "apply_to_gateway"):
            plugin.apply_to_gateway(snapshot, proxy, gateway, tuple(built.ports), resources)
    generated = {(type_url, name) for type_url, by_name in resources.items() for name in by_name}
    # Mesh.metrics (and MeshMetric) expose a gateway's Envoy stats as a sidecar's, where the MADS lists it
    meshmetric.apply(meshmetric.match(snapshot, proxy), resources)
    # MeshProxyPatch last, as on sidecars (Kuma's plugin order); its ClusterLoadAssignments follow what it leaves
    meshproxypatch.patch_gateway(snapshot, proxy, gateway, generated, resources)
    for name, cluster in resources[names.CLUSTER].items():
        if cluster.type == cluster_pb2.Cluster.EDS:
            resources[names.ENDPOINT][name] = load_assignment_for(snapshot, name)
    if snapshot.mtls is not None:
        if identity is not None:
            resources[names.SECRET][names.identity_secret(snapshot.mesh)] = identity_secret(snapshot.mesh, identity)
        resources[names.SECRET][names.mesh_ca_secret(snapshot.mesh)] = ca_secret(snapshot)
    return resources
