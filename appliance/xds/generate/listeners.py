"""Listeners: one per inbound (in front of the application) and one per outbound (the app's way out).

Listener content depends only on the proxy's own spec, the mesh's mTLS mode and policies, never on
endpoints or certificates (those travel by EDS and SDS), so Envoy does not drain listeners when
endpoints change or certificates rotate.
"""
from __future__ import annotations


from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.http.grpc_stats.v3 import config_pb2 as grpc_stats_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from google.protobuf.message import Message

from appliance.model import names
from appliance.model.destinations import UNIFIED_NAME_TAG
from appliance.policies._envoy import internal_addresses, set_inbound_mtls_mode
from appliance.xds.generate import routes, tls
from appliance.xds.generate.clusters import INBOUND_IDLE_TIMEOUT
from appliance.xds.generate._proto import pack, seconds, tags_metadata
from appliance.model.proxy import Inbound, MeshSnapshot, Outbound, Proxy

# DefaultInboundTimeout's stream idle timeout (pkg/defaults/mesh/meshtimeout.go); MeshTimeout refines it.
INBOUND_STREAM_IDLE_TIMEOUT = 3600

_ROUTER = hcm_pb2.HttpFilter(name=names.ROUTER_FILTER, typed_config=pack(router_pb2.Router()))
_GRPC_STATS = hcm_pb2.HttpFilter(
    name=names.GRPC_STATS_FILTER, typed_config=pack(grpc_stats_pb2.FilterConfig(emit_filter_state=True)))
TLS_INSPECTOR = listener_components_pb2.ListenerFilter(
    name=names.TLS_INSPECTOR, typed_config=pack(tls_inspector_pb2.TlsInspector()))


def socket_address(address: str, port: int) -> address_pb2.Address:
    result = address_pb2.Address()
    result.socket_address.address = address
    result.socket_address.port_value = port
    return result


def http_connection_manager(stat_prefix: str, protocol: str, snapshot: MeshSnapshot, proxy: Proxy) -> hcm_pb2.HttpConnectionManager:
    hcm = hcm_pb2.HttpConnectionManager(stat_prefix=names.sanitize_metric(stat_prefix))
    internal_addresses(hcm, snapshot.known_internal_cidrs, proxy.ipv6_enabled)
    if protocol == "grpc":
        hcm.http_filters.append(_GRPC_STATS)
    hcm.http_filters.append(_ROUTER)
    return hcm


def tcp_proxy(stat_prefix: str, cluster: str) -> tcp_proxy_pb2.TcpProxy:
    return tcp_proxy_pb2.TcpProxy(stat_prefix=names.sanitize_metric(stat_prefix), cluster=cluster)


def network_filter(name: str, config: Message) -> listener_components_pb2.Filter:
    return listener_components_pb2.Filter(name=name, typed_config=pack(config))


def _inbound_filter(inbound: Inbound, listener_name: str, snapshot: MeshSnapshot,
                    proxy: Proxy) -> listener_components_pb2.Filter:
    cluster = names.local_cluster(inbound.service_port)
    if inbound.protocol not in names.HTTP_PROTOCOLS:
        tcp = tcp_proxy(cluster, cluster)
        tcp.idle_timeout.CopyFrom(seconds(INBOUND_IDLE_TIMEOUT))
        return network_filter(names.TCP_PROXY_FILTER, tcp)
    hcm = http_connection_manager(cluster, inbound.protocol, snapshot, proxy)
    # The application learns who called it: Envoy replaces x-forwarded-client-cert with the client's URI SAN.
    hcm.forward_client_cert_details = hcm_pb2.HttpConnectionManager.SANITIZE_SET
    hcm.set_current_client_cert_details.uri = True
    hcm.common_http_protocol_options.idle_timeout.seconds = INBOUND_IDLE_TIMEOUT
    hcm.stream_idle_timeout.seconds = INBOUND_STREAM_IDLE_TIMEOUT
    service = inbound.service
    if service:
        hcm.route_config.CopyFrom(routes.inbound_route_config(service, cluster))
    else:  # no kuma.io/service tag: Kuma names the route after the listener
        config = routes.inbound_route_config(listener_name, cluster)
        config.name = listener_name
        hcm.route_config.CopyFrom(config)
    return network_filter(names.HCM_FILTER, hcm)


def _transparent(listener: listener_pb2.Listener, proxy: Proxy) -> None:
    """Under transparent proxying a listener gets its connections from the capture listeners (by original
    destination), not from a socket of its own (TransparentProxyingConfigurer)."""
    if proxy.transparent is not None:
        listener.bind_to_port.value = False


def inbound_listener(inbound: Inbound, snapshot: MeshSnapshot, proxy: Proxy) -> listener_pb2.Listener:
    """`inbound:<address>:<port>`, with mTLS filter chains as the mesh's mode asks.

    STRICT: one chain that requires a mesh client certificate. PERMISSIVE: plaintext, foreign TLS and
    mesh mTLS (TLS with ALPN `kuma`) chains side by side, told apart by the TLS inspector.
    """
    name = names.inbound_listener(inbound.address, inbound.port)
    listener = listener_pb2.Listener(
        name=name, address=socket_address(inbound.address, inbound.port),
        traffic_direction=base_pb2.INBOUND,
        metadata=tags_metadata(names.TAGS_METADATA_KEY, inbound.tags))
    # Never SO_REUSEPORT, although kuma-dp offers it (feature-reuse-port) and Kuma uses it: a policy
    # change replaces the listener, and with reuse-port the kernel keeps handing new connections to
    # the draining old listener for the whole drain time (30 s), so an Allow or Deny would apply only
    # to some connections. Without it the new listener takes over the socket at once.
    listener.enable_reuse_port.value = False
    _transparent(listener, proxy)
    app_filter = _inbound_filter(inbound, name, snapshot, proxy)
    chain = listener.filter_chains.add()
    chain.filters.append(app_filter)
    mtls = snapshot.mtls
    if mtls is None:
        return listener
    chain.transport_socket.CopyFrom(tls.downstream_transport_socket(snapshot.mesh))
    # The layout of a mode lives with the policies: MeshTLS sets an inbound's mode over the mesh's.
    set_inbound_mtls_mode(listener, permissive=mtls.mode == "PERMISSIVE")
    return listener


def outbound_listener(outbound: Outbound, snapshot: MeshSnapshot, proxy: Proxy) -> listener_pb2.Listener:
    """`outbound:<address>:<port>` to the service's cluster: HTTP routing for HTTP services, TCP otherwise."""
    service = outbound.service
    destination = snapshot.destinations.get(service)
    meshexternal = snapshot.mesh_external_services.get(service)
    # a real resource's listener (a MeshService port, a MeshExternalService) is tagged with its KRI, not tags
    # (OutboundListenerTags), and names its route configuration by it
    kri = destination.kri if destination is not None else meshexternal.kri if meshexternal is not None else ""
    tags = {UNIFIED_NAME_TAG: kri} if kri else {**outbound.tags, names.SERVICE_TAG: service}
    listener = listener_pb2.Listener(
        name=names.outbound_listener(outbound.address, outbound.port),
        address=socket_address(outbound.address, outbound.port),
        traffic_direction=base_pb2.OUTBOUND,
        metadata=tags_metadata(names.TAGS_METADATA_KEY, tags))
    _transparent(listener, proxy)
    protocol = snapshot.protocols.get(service, "tcp")
    chain = listener.filter_chains.add()
    if protocol in names.HTTP_PROTOCOLS:
        hcm = http_connection_manager(service, protocol, snapshot, proxy)
        hcm.normalize_path.value = True
        external = service in snapshot.external_services or meshexternal is not None
        # no x-kuma-tags to a MeshExternalService: nothing of the mesh reads them there (Kuma's goldens)
        hcm.route_config.CopyFrom(routes.outbound_route_config(
            service, external, "" if meshexternal is not None else proxy.serialized_tags))
        if kri:
            hcm.route_config.name = kri
        chain.filters.append(network_filter(names.HCM_FILTER, hcm))
    else:
        chain.filters.append(network_filter(names.TCP_PROXY_FILTER, tcp_proxy(service, service)))
    return listener
