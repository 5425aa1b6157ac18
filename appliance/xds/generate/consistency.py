"""The snapshot consistency check (go-control-plane's idea): everything a resource names must exist.

Envoy keeps a cluster warming until its endpoints arrive, and a listener until its routes and secrets
do, so a dangling name means traffic that never flows. Tests assert on it; a server may too.
"""
from __future__ import annotations

from typing import Iterator

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from google.protobuf.message import Message

from appliance.model import names
from appliance.model.names import Resources


def _secret_names(socket: base_pb2.TransportSocket, context: tls_pb2.UpstreamTlsContext
                  | tls_pb2.DownstreamTlsContext) -> Iterator[str]:
    if socket.name != names.TLS_TRANSPORT_SOCKET:
        return
    socket.typed_config.Unpack(context)
    common = context.common_tls_context
    for sds in common.tls_certificate_sds_secret_configs:
        yield sds.name
    if common.HasField("combined_validation_context"):
        yield common.combined_validation_context.validation_context_sds_secret_config.name
    if common.HasField("validation_context_sds_secret_config"):
        yield common.validation_context_sds_secret_config.name


def _route_clusters(route_config: Message) -> Iterator[str]:
    for host in route_config.virtual_hosts:  # type: ignore[attr-defined]
        for route in host.routes:
            if route.route.cluster:
                yield route.route.cluster
            for weighted in route.route.weighted_clusters.clusters:
                yield weighted.name


def check_consistency(resources: Resources) -> list[str]:
    """Problems found, as sentences; an empty list means Envoy can use every resource."""
    problems: list[str] = []
    for type_url, by_name in resources.items():
        for name, message in by_name.items():
            own = getattr(message, "cluster_name", None) if type_url == names.ENDPOINT else message.name  # type: ignore[attr-defined]
            if own != name:
                problems.append(f"{type_url.rsplit('.', 1)[-1]} stored as {name!r} is named {own!r}")
    clusters = resources.get(names.CLUSTER, {})
    endpoints = resources.get(names.ENDPOINT, {})
    routes = resources.get(names.ROUTE, {})
    secrets = resources.get(names.SECRET, {})
    wanted_secrets: list[tuple[str, str]] = []
    for name, cluster in clusters.items():
        assert isinstance(cluster, cluster_pb2.Cluster)
        if cluster.type == cluster_pb2.Cluster.EDS and name not in endpoints:
            problems.append(f"EDS cluster {name!r} has no ClusterLoadAssignment")
        wanted_secrets += [(f"cluster {name!r}", s) for s in
                           _secret_names(cluster.transport_socket, tls_pb2.UpstreamTlsContext())]
    problems += [f"ClusterLoadAssignment {name!r} has no cluster" for name in endpoints if name not in clusters]
    for name, listener in resources.get(names.LISTENER, {}).items():
        assert isinstance(listener, listener_pb2.Listener)
        for chain in listener.filter_chains:
            wanted_secrets += [(f"listener {name!r}", s) for s in
                               _secret_names(chain.transport_socket, tls_pb2.DownstreamTlsContext())]
            for network_filter in chain.filters:
                if network_filter.name == names.TCP_PROXY_FILTER:
                    tcp = tcp_proxy_pb2.TcpProxy()
                    network_filter.typed_config.Unpack(tcp)
                    targets = [tcp.cluster] if tcp.cluster else [w.name for w in tcp.weighted_clusters.clusters]
                elif network_filter.name == names.HCM_FILTER:
                    hcm = hcm_pb2.HttpConnectionManager()
                    network_filter.typed_config.Unpack(hcm)
                    if hcm.HasField("rds"):
                        route_name = hcm.rds.route_config_name
                        if route_name not in routes:
                            problems.append(f"listener {name!r} uses missing route configuration {route_name!r}")
                        targets = list(_route_clusters(routes[route_name])) if route_name in routes else []
                    else:
                        targets = list(_route_clusters(hcm.route_config))
                else:
                    continue
                problems += [f"listener {name!r} sends to missing cluster {c!r}" for c in targets if c not in clusters]
    problems += [f"{owner} uses missing secret {secret!r}" for owner, secret in wanted_secrets if secret not in secrets]
    return problems
