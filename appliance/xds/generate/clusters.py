"""Clusters: the local application behind each inbound, and one EDS cluster per destination service.

Timeouts and circuit breakers are left to the MeshTimeout and MeshCircuitBreaker plugins, as in Kuma,
which apply their (default) policies on top of these base clusters.
"""
from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

from appliance.gocompat import is_ip
from appliance.model import names
from appliance.xds.generate import meshservices, tls
from appliance.xds.generate._proto import ads_source, pack, seconds, string_struct
from appliance.model.proxy import ExternalService, ExternalTls, Inbound, MeshExternalService, MeshSnapshot

# DefaultInboundTimeout (pkg/defaults/mesh/meshtimeout.go): twice the outbound side, so a caller's
# timeout fires first. MeshTimeout overwrites these when it applies.
INBOUND_CONNECT_TIMEOUT = 10
INBOUND_IDLE_TIMEOUT = 7200


def _store_protocol_options(cluster: cluster_pb2.Cluster,
                            options: http_protocol_options_pb2.HttpProtocolOptions) -> None:
    cluster.typed_extension_protocol_options[names.HTTP_PROTOCOL_OPTIONS].CopyFrom(pack(options))


def _upstream_protocol_options(protocol: str) -> http_protocol_options_pb2.HttpProtocolOptions | None:
    if protocol not in names.HTTP_PROTOCOLS:
        return None
    options = http_protocol_options_pb2.HttpProtocolOptions()
    if protocol == "http":
        options.explicit_http_config.http_protocol_options.SetInParent()
    else:
        options.explicit_http_config.http2_protocol_options.SetInParent()
    return options


def local_cluster(inbound: Inbound) -> cluster_pb2.Cluster:
    """`localhost:<servicePort>`: a STATIC (or STRICT_DNS for a hostname) cluster to the application."""
    name = names.local_cluster(inbound.service_port)
    cluster = cluster_pb2.Cluster(name=name, connect_timeout=seconds(INBOUND_CONNECT_TIMEOUT))
    if is_ip(inbound.service_address):
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
    options = _upstream_protocol_options(inbound.protocol)
    if options is not None:
        options.common_http_protocol_options.idle_timeout.seconds = INBOUND_IDLE_TIMEOUT
        _store_protocol_options(cluster, options)
    return cluster


def external_tags(es: ExternalService, mesh: str = "") -> dict[str, str]:
    """The endpoint tags of an external service (Kuma: the ExternalService's tags, plus its name when TLS is
    on, plus the mesh on a zone egress): LB and transport-socket-match metadata, minus the service."""
    tags = {k: v for k, v in es.tags.items() if k != names.SERVICE_TAG}
    if es.tls is not None:
        tags[names.EXTERNAL_SERVICE_NAME_TAG] = es.name
    if mesh:
        tags["mesh"] = mesh
    return tags


def _provided_cluster(name: str, endpoints: tuple[tuple[str, int], ...], tags: dict[str, str],
                      protocol: str) -> cluster_pb2.Cluster:
    """A cluster whose endpoints it holds itself: STATIC when all are IPs, else STRICT_DNS (IPv4)."""
    cluster = cluster_pb2.Cluster(name=name)
    alt = names.sanitize_metric(name)
    if alt != name:
        cluster.alt_stat_name = alt
    if all(is_ip(address) for address, _ in endpoints):
        cluster.type = cluster_pb2.Cluster.STATIC
    else:
        cluster.type = cluster_pb2.Cluster.STRICT_DNS
        cluster.dns_lookup_family = cluster_pb2.Cluster.V4_ONLY
    cluster.load_assignment.cluster_name = name
    locality = cluster.load_assignment.endpoints.add()
    for address, port in endpoints:
        lb_endpoint = locality.lb_endpoints.add()
        socket = lb_endpoint.endpoint.address.socket_address
        socket.address = address
        socket.port_value = port
        lb_endpoint.load_balancing_weight.value = 1
        if tags:
            struct = string_struct(tags)
            for key in ("envoy.lb", "envoy.transport_socket_match"):
                lb_endpoint.metadata.filter_metadata[key].CopyFrom(struct)
    options = _upstream_protocol_options(protocol)
    if options is not None:
        _store_protocol_options(cluster, options)
    return cluster


def _outside_tls(cluster: cluster_pb2.Cluster, settings: ExternalTls, address: str,
                 match: dict[str, str] | None) -> None:
    """TLS to the external server, as a transport socket match (on the endpoints' tags, or for all)."""
    entry = cluster.transport_socket_matches.add(name=address)
    if match is not None:
        entry.match.CopyFrom(string_struct(match))
    entry.transport_socket.name = names.TLS_TRANSPORT_SOCKET
    entry.transport_socket.typed_config.CopyFrom(pack(tls.outside_mesh_context(settings, address)))


def external_cluster(name: str, es: ExternalService, mesh: str = "") -> cluster_pb2.Cluster:
    """A cluster straight to the external server, with TLS to it when the ExternalService asks.
    Sidecars use it without a zone egress; the egress always (`mesh` set)."""
    tags = external_tags(es, mesh)
    cluster = _provided_cluster(name, ((es.address, es.port),), tags, es.protocol)
    if es.tls is not None:
        _outside_tls(cluster, es.tls, es.address, tags)
    return cluster


def mesh_external_cluster(mes: MeshExternalService, mesh: str) -> cluster_pb2.Cluster:
    """The egress's cluster of a MeshExternalService: all its endpoints, one TLS context for all of them."""
    cluster = _provided_cluster(mes.destination, mes.endpoints, {"mesh": mesh}, mes.protocol)
    cluster.load_assignment.endpoints[0].locality.sub_zone = "priority-0"   # Kuma groups endpoints by priority
    if mes.tls is not None and mes.endpoints:
        _outside_tls(cluster, mes.tls, mes.endpoints[0][0], None)
    return cluster


def cluster_for(snapshot: MeshSnapshot, service: str) -> cluster_pb2.Cluster:
    """The base cluster of a destination service; depends only on (snapshot, service).

    An external service is called directly, or through the zone egress (EDS, mesh mTLS to the egress)
    when the mesh routes external traffic there (`routing.zoneEgress`).

    Sidecar-to-sidecar traffic always speaks HTTP/2 upstream options (Envoy only uses them for HTTP),
    and with mTLS the client checks the server's SPIFFE id.
    """
    destination = snapshot.destinations.get(service)
    if destination is not None:
        return meshservices.cluster(snapshot, destination)
    external = snapshot.external_services.get(service)
    if external is not None and not snapshot.zone_egress:
        return external_cluster(service, external)
    cluster = cluster_pb2.Cluster(name=service, type=cluster_pb2.Cluster.EDS)
    cluster.eds_cluster_config.eds_config.CopyFrom(ads_source())
    alt = names.sanitize_metric(service)
    if alt != service:
        cluster.alt_stat_name = alt
    mtls = snapshot.mtls
    meshexternal = snapshot.mesh_external_services.get(service)
    if external is not None or meshexternal is not None:   # through the zone egress
        protocol = external.protocol if external is not None else meshexternal.protocol  # type: ignore[union-attr]
        options = _upstream_protocol_options(protocol)
        if options is not None:
            _store_protocol_options(cluster, options)
        sni = names.sni(service, snapshot.mesh) if external is not None else meshexternal.sni  # type: ignore[union-attr]
        if mtls is not None:
            cluster.transport_socket.CopyFrom(tls.to_egress_transport_socket(snapshot.mesh, sni))
        return cluster
    options = http_protocol_options_pb2.HttpProtocolOptions()
    options.explicit_http_config.http2_protocol_options.SetInParent()
    _store_protocol_options(cluster, options)
    # PERMISSIVE: a destination whose proxies are not serving mTLS yet is called in plaintext (Kuma's TLS readiness).
    if mtls is not None and (mtls.mode != "PERMISSIVE" or snapshot.tls_ready.get(service, True)):
        cluster.transport_socket.CopyFrom(tls.upstream_transport_socket(snapshot.mesh, service))
    return cluster
