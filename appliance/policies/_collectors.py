"""Clusters to the collectors that observability policies send to (MeshAccessLog OpenTelemetry, MeshTrace).

As Kuma 2.14's ProvidedEndpointCluster + DefaultTimeout: one endpoint given by host and port, STATIC for an IP
and STRICT_DNS (IPv4) for a name, a 5 s connect timeout, HTTP/2 for gRPC collectors, TLS for an https URL.
"""
from __future__ import annotations

from urllib.parse import urlsplit

from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

from appliance.policies import _envoy
from appliance.policies._common import is_ip

DEFAULT_OTEL_GRPC_PORT = 4317
CONNECT_TIMEOUT_S = 5


def otel_endpoint(endpoint: str) -> tuple[str, int]:
    """ParseOtelEndpoint: `host:port` (port 4317 when absent or unreadable); a bare IPv6 address is a host."""
    if endpoint.count(":") > 1 and "[" not in endpoint:
        return endpoint, DEFAULT_OTEL_GRPC_PORT
    try:
        parts = urlsplit("otel://" + endpoint)
        host, port = parts.hostname or "", parts.port
    except ValueError:
        return endpoint, DEFAULT_OTEL_GRPC_PORT
    if not host:
        return endpoint, DEFAULT_OTEL_GRPC_PORT
    return host, port if port else DEFAULT_OTEL_GRPC_PORT


def collector_cluster(name: str, host: str, port: int, *, http2: bool = False,
                      tls_sni: str | None = None) -> cluster_pb2.Cluster:
    cluster = cluster_pb2.Cluster(name=name)
    alt = _envoy.sanitize_metric(name)
    if alt != name:
        cluster.alt_stat_name = alt
    cluster.connect_timeout.seconds = CONNECT_TIMEOUT_S
    if is_ip(host):
        cluster.type = cluster_pb2.Cluster.STATIC
    else:
        cluster.type = cluster_pb2.Cluster.STRICT_DNS
        cluster.dns_lookup_family = cluster_pb2.Cluster.V4_ONLY
    cluster.load_assignment.cluster_name = name
    socket = cluster.load_assignment.endpoints.add().lb_endpoints.add().endpoint.address.socket_address
    socket.address = host
    socket.port_value = port
    if http2:
        options = http_protocol_options_pb2.HttpProtocolOptions()
        options.explicit_http_config.http2_protocol_options.SetInParent()
        cluster.typed_extension_protocol_options[_envoy.HTTP_PROTOCOL_OPTIONS].CopyFrom(_envoy.pack(options))
    if tls_sni is not None:
        # Kuma's ClientSideTLS for a collector: TLS with the host as SNI, renegotiation allowed.
        context = tls_pb2.UpstreamTlsContext(sni=tls_sni, allow_renegotiation=True)
        cluster.transport_socket.name = _envoy.TLS_TRANSPORT_SOCKET
        cluster.transport_socket.typed_config.CopyFrom(_envoy.pack(context))
    return cluster
