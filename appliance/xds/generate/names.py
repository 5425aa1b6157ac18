"""Resource names and type URLs, spelled as Kuma 2.14 spells them (pkg/xds/envoy/names, pkg/xds/envoy/tls).

Envoy, `kumactl inspect` users and Kuma's own tooling key on these strings, so they are part of
the interface, not an implementation detail.
"""
from __future__ import annotations

from appliance.policies import _envoy

# The plugins edit what the generators build, so the names both rely on are defined once, with them.
local_cluster = _envoy.local_cluster_name
sanitize_metric = _envoy.sanitize_metric

LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

# Make-before-break order on one ADS stream (clusters, endpoints, listeners, routes; secrets first).
TYPE_ORDER: tuple[str, ...] = (SECRET, CLUSTER, ENDPOINT, LISTENER, ROUTE)

SERVICE_TAG = "kuma.io/service"
EXTERNAL_SERVICE_NAME_TAG = "kuma.io/external-service-name"
ZONE_EGRESS_SERVICE = "zone-egress"   # the service in a zone egress's certificate: spiffe://<mesh>/zone-egress
TAGS_METADATA_KEY = "io.kuma.tags"
TAGS_HEADER = "x-kuma-tags"
KUMA_ALPN = "kuma"

TLS_TRANSPORT_SOCKET = "envoy.transport_sockets.tls"
HCM_FILTER = "envoy.filters.network.http_connection_manager"
TCP_PROXY_FILTER = "envoy.filters.network.tcp_proxy"
NETWORK_RBAC_FILTER = "envoy.filters.network.rbac"
HTTP_RBAC_FILTER = "envoy.filters.http.rbac"
ROUTER_FILTER = "envoy.filters.http.router"
GRPC_STATS_FILTER = "envoy.filters.http.grpc_stats"
TLS_INSPECTOR = "envoy.filters.listener.tls_inspector"
HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

HTTP_PROTOCOLS = frozenset({"http", "http2", "grpc"})


def _host_port(address: str, port: int) -> str:
    # net.JoinHostPort: IPv6 addresses are bracketed.
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def inbound_listener(address: str, port: int) -> str:
    return f"inbound:{_host_port(address, port)}"


def outbound_listener(address: str, port: int) -> str:
    return f"outbound:{_host_port(address, port)}"


def inbound_route(service: str) -> str:
    return f"inbound:{service}"


def outbound_route(service: str) -> str:
    return f"outbound:{service}"


def identity_secret(mesh: str) -> str:
    return f"identity_cert:secret:{mesh}"


def mesh_ca_secret(mesh: str) -> str:
    return f"mesh_ca:secret:{mesh}"


def spiffe_id(mesh: str, service: str) -> str:
    return f"spiffe://{mesh}/{service}"


def spiffe_prefix(mesh: str) -> str:
    return f"spiffe://{mesh}/"


def kuma_id(tag: str, value: str) -> str:
    return f"kuma://{tag}/{value}"


def sni(service: str, mesh: str) -> str:
    """tls.SNIFromTags for a service-wide cluster: the extra tags (here only `mesh`) in braces."""
    return f"{service}{{mesh={mesh}}}"


def egress_cluster(mesh: str, service: str) -> str:
    """On a zone egress, services of different meshes may share a name: the mesh prefixes the cluster."""
    return f"{mesh}:{service}"


def egress_filter_chain(service: str, mesh: str) -> str:
    return f"{service}_{mesh}"
