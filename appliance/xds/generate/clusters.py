"""Clusters: the local application behind each inbound, and one EDS cluster per destination service.

Timeouts and circuit breakers are left to the MeshTimeout and MeshCircuitBreaker plugins, as in Kuma,
which apply their (default) policies on top of these base clusters.
"""
from __future__ import annotations

import ipaddress

from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

from appliance.xds.generate import names, tls
from appliance.xds.generate._proto import ads_source, pack, seconds
from appliance.xds.model import Inbound, MeshSnapshot

# DefaultInboundTimeout (pkg/defaults/mesh/meshtimeout.go): twice the outbound side, so a caller's
# timeout fires first. MeshTimeout overwrites these when it applies.
INBOUND_CONNECT_TIMEOUT = 10
INBOUND_IDLE_TIMEOUT = 7200


def _is_ip(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


def _store_protocol_options(cluster: cluster_pb2.Cluster,
                            options: http_protocol_options_pb2.HttpProtocolOptions) -> None:
    cluster.typed_extension_protocol_options[names.HTTP_PROTOCOL_OPTIONS].CopyFrom(pack(options))


def local_cluster(inbound: Inbound) -> cluster_pb2.Cluster:
    """`localhost:<servicePort>`: a STATIC (or STRICT_DNS for a hostname) cluster to the application."""
    name = names.local_cluster(inbound.service_port)
    cluster = cluster_pb2.Cluster(name=name, connect_timeout=seconds(INBOUND_CONNECT_TIMEOUT))
    if _is_ip(inbound.service_address):
        cluster.type = cluster_pb2.Cluster.STATIC
    else:
        cluster.type = cluster_pb2.Cluster.STRICT_DNS
        cluster.dns_lookup_family = cluster_pb2.Cluster.V4_ONLY
    alt = names.sanitize_metric(name)
    if alt != name:
        cluster.alt_stat_name = alt
    cluster.load_assignment.cluster_name = name
    socket = cluster.load_assignment.endpoints.add().lb_endpoints.add().endpoint.address.socket_address
    socket.address = inbound.service_address
    socket.port_value = inbound.service_port
    if inbound.protocol in names.HTTP_PROTOCOLS:
        options = http_protocol_options_pb2.HttpProtocolOptions()
        options.common_http_protocol_options.idle_timeout.seconds = INBOUND_IDLE_TIMEOUT
        if inbound.protocol == "http":
            options.explicit_http_config.http_protocol_options.SetInParent()
        else:
            options.explicit_http_config.http2_protocol_options.SetInParent()
        _store_protocol_options(cluster, options)
    return cluster


def cluster_for(snapshot: MeshSnapshot, service: str) -> cluster_pb2.Cluster:
    """The base EDS cluster of a destination service; depends only on (snapshot, service).

    Sidecar-to-sidecar traffic always speaks HTTP/2 upstream options (Envoy only uses them for HTTP),
    and with mTLS the client checks the server's SPIFFE id.
    """
    cluster = cluster_pb2.Cluster(name=service, type=cluster_pb2.Cluster.EDS)
    cluster.eds_cluster_config.eds_config.CopyFrom(ads_source())
    alt = names.sanitize_metric(service)
    if alt != service:
        cluster.alt_stat_name = alt
    options = http_protocol_options_pb2.HttpProtocolOptions()
    options.explicit_http_config.http2_protocol_options.SetInParent()
    _store_protocol_options(cluster, options)
    mtls = snapshot.mtls
    # PERMISSIVE: a destination whose proxies are not serving mTLS yet is called in plaintext (Kuma's TLS readiness).
    if mtls is not None and (mtls.mode != "PERMISSIVE" or snapshot.tls_ready.get(service, True)):
        cluster.transport_socket.CopyFrom(tls.upstream_transport_socket(snapshot.mesh, service))
    return cluster
