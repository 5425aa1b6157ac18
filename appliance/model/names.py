"""Resource names, type URLs and filter names, spelled as Kuma 2.14 spells them (pkg/xds/envoy/names,
pkg/xds/envoy/tls).

Envoy, `kumactl inspect` users and Kuma's own tooling key on these strings, so they are part of
the interface, not an implementation detail. The generators (xds/generate) build resources under
these names and the policy plugins find and edit them by the same names, so both import them from here.
"""
from __future__ import annotations

import hashlib
import re

from google.protobuf.message import Message

LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

# Make-before-break order on one ADS stream (clusters, endpoints, listeners, routes; secrets first).
TYPE_ORDER: tuple[str, ...] = (SECRET, CLUSTER, ENDPOINT, LISTENER, ROUTE)

# A proxy's generated resources: type URL -> resource name -> message.
Resources = dict[str, dict[str, Message]]

SERVICE_TAG = "kuma.io/service"
MESH_TAG = "kuma.io/mesh"
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
HTTP_INSPECTOR = "envoy.filters.listener.http_inspector"
ORIGINAL_DST_FILTER = "envoy.filters.listener.original_dst"
HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

HTTP_PROTOCOLS = frozenset({"http", "http2", "grpc"})


_ILLEGAL_METRIC_CHARS = re.compile(r"[^a-zA-Z_\-0-9]")


def sanitize_metric(name: str) -> str:
    """util_xds.SanitizeMetric: stat prefixes may only hold [a-zA-Z_-0-9] (statsd, Prometheus)."""
    return _ILLEGAL_METRIC_CHARS.sub("_", name)


def local_cluster(service_port: int) -> str:
    """envoy_names.GetLocalClusterName: the cluster of the application behind an inbound."""
    return f"localhost:{service_port}"


def is_local_cluster(name: str) -> bool:
    """Whether a sidecar's cluster is one of `local_cluster` (an inbound's application), not a destination."""
    return name.startswith("localhost:")


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


# Kuma's all-in-one CA (secretsTracker.RequestAllInOneCa): every mesh's CA, what a crossMesh gateway listener trusts
ALL_MESHES_CA_SECRET = "mesh_ca:secret:all"


def spiffe_id(mesh: str, service: str) -> str:
    return f"spiffe://{mesh}/{service}"


def spiffe_prefix(mesh: str) -> str:
    return f"spiffe://{mesh}/"


def sni(service: str, mesh: str, tags: dict[str, str] | None = None) -> str:
    """tls.SNIFromTags: the service, then its other tags (at least `mesh`) sorted, in braces."""
    extra = {**(tags or {}), "mesh": mesh}
    extra.pop(SERVICE_TAG, None)
    return service + "{" + ",".join(f"{k}={extra[k]}" for k in sorted(extra)) + "}"


def _fnv64a(data: bytes) -> int:
    value = 0xcbf29ce484222325
    for byte in data:
        value = ((value ^ byte) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return value


def sni_for_resource(name: str, mesh: str, abbreviation: str, port: int) -> str:
    """tls.SNIForResource (no additional data): "a<fnv64a(name;mesh;)>.<name>.<port>.<mesh>.<abbreviation>",
    `ms` for a MeshService, `mes` for a MeshExternalService; labels cut at 62 characters plus "x"."""
    digest = _fnv64a(f"{name};{mesh};".encode())
    short = lambda label: label if len(label) <= 62 else label[:62] + "x"  # noqa: E731 - DNS label limit
    return f"a{digest:016x}.{short(name)}.{port}.{short(mesh)}.{abbreviation}"


def split_cluster(service: str, tags: dict[str, str]) -> str:
    """Tags.DestinationClusterName: the cluster of part of a service (a MeshServiceSubset backend) is the
    service plus 16 hex digits of a SHA-256 over its sorted tags; the whole service keeps its own name."""
    selected = {**tags, SERVICE_TAG: service}
    if len(selected) == 1:
        return service
    digest = hashlib.sha256()
    for key in sorted(selected):
        digest.update(key.encode())
        digest.update(selected[key].encode())
    return f"{service}-{digest.hexdigest()[:16]}"


def cross_mesh_cluster(service: str, mesh: str, tags: dict[str, str] | None = None) -> str:
    """A sidecar's cluster to a mesh's crossMesh gateway: the outbound's tags (service, `kuma.io/mesh` and any
    other) hashed as for a split cluster, then the mesh (Kuma's meshroute: "the name should be distinct to the
    service & mesh combination")."""
    return f"{split_cluster(service, {**(tags or {}), MESH_TAG: mesh})}_{mesh}"


def egress_cluster(mesh: str, service: str) -> str:
    """On a zone egress, services of different meshes may share a name: the mesh prefixes the cluster."""
    return f"{mesh}:{service}"


def egress_filter_chain(service: str, mesh: str) -> str:
    return f"{service}_{mesh}"


# Metrics (MeshMetric and Mesh.metrics): the Envoy listener Prometheus scrapes routes to kuma-dp's metrics
# hijacker on a Unix socket, and kuma-dp reads its MeshMetric settings (and, with transparent proxying, its
# DNS records) from Envoy's dynamic-config listener, on the socket `meshmetric_config_socket(workdir)`.
METRICS_HIJACKER_CLUSTER = "kuma:metrics:hijacker"               # Mesh.metrics
MESHMETRIC_HIJACKER_CLUSTER = "_kuma:metrics:hijacker"           # MeshMetric
PROMETHEUS_LISTENER = "kuma:metrics:prometheus"                  # Mesh.metrics; MeshMetric adds ":<clientId>"
DYNAMIC_CONFIG_LISTENER = "_kuma:dynamicconfig"
MESHMETRIC_CONFIG_PATH = "/meshmetric"                            # kuma-dp GETs its MeshMetric settings here
DNS_CONFIG_PATH = "/dns"                                          # and its DNS records (dpapi.DNSProxyConfig JSON)


def _socket_name(path: str) -> str:
    """core_xds.socketName: short enough for the 104-character limit of a Unix socket path."""
    return path[:98] + ".sock"


def metrics_hijacker_socket(workdir: str, name: str, mesh: str) -> str:
    return _socket_name(f"{workdir.rstrip('/')}/kuma-mh-{name}-{mesh}")


def meshmetric_config_socket(workdir: str) -> str:
    return _socket_name(f"{workdir.rstrip('/')}/kuma-mesh-metric-config")


def otel_socket(workdir: str, backend: str) -> str:
    return _socket_name(f"{workdir.rstrip('/')}/kuma-otel-{backend}")


def otel_resource(backend: str) -> str:
    """The listener (on kuma-dp's side) and cluster (to the collector) of a MeshMetric OpenTelemetry backend."""
    return f"_kuma:metrics:opentelemetry:{backend}"


def access_log_socket(work_dir: str, name: str, mesh: str) -> str:
    """core_xds.AccessLogSocketName: the pipe in kuma-dp's work dir that Envoy writes `tcp` access logs to and
    kuma-dp forwards from."""
    return _socket_name(f"{work_dir.rstrip('/') or '/tmp'}/kuma-al-{name}-{mesh}")
