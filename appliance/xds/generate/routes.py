"""Route configurations: outbound ones inline in the HTTP connection managers as Kuma does for sidecars,
inbound ones served by RDS (`inbound_routes_by_rds`).

Route timeouts and retries start at Kuma's neutral values (`timeout: 0s`, no retries); the
MeshTimeout and MeshRetry plugins set them.
"""
from __future__ import annotations

import base64
import hashlib

from envoy.config.core.v3 import base_pb2, config_source_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from appliance.model import names
from appliance.model.names import Resources

# MeshHTTPRoute names each route by the hash of its matches (api.HashMatches: base64 of the SHA-256 of
# the matches' JSON). Without a MeshHTTPRoute the only route is the catch-all `PathPrefix /`.
CATCH_ALL_MATCHES_JSON = '[{"path":{"value":"/","type":"PathPrefix"}}]'
CATCH_ALL_ROUTE_NAME = base64.b64encode(hashlib.sha256(CATCH_ALL_MATCHES_JSON.encode()).digest()).decode()


def _route_config(name: str, virtual_host: str, cluster: str, route_name: str) -> route_pb2.RouteConfiguration:
    config = route_pb2.RouteConfiguration(name=name)
    config.validate_clusters.value = False
    host = config.virtual_hosts.add(name=virtual_host, domains=["*"])
    route = host.routes.add()
    if route_name:
        route.name = route_name
    route.match.prefix = "/"
    route.route.cluster = cluster
    route.route.timeout.SetInParent()
    return config


def inbound_route_config(service: str, cluster: str) -> route_pb2.RouteConfiguration:
    """`inbound:<service>`: everything to the local application. Clients must not forge the tags header."""
    config = _route_config(names.inbound_route(service), service, cluster, "")
    config.request_headers_to_remove.append(names.TAGS_HEADER)
    return config


def outbound_route_config(service: str, external: bool = False, source_tags: str = "") -> route_pb2.RouteConfiguration:
    """`outbound:<service>`: the catch-all route of a service without MeshHTTPRoute.

    An external server is sent its own name as Host (a virtual host there would not know ours). As Kuma,
    requests carry the caller's tags in `x-kuma-tags`, which inbound policies (MeshFaultInjection `from`)
    match clients by; the receiving inbound strips the header from anyone else."""
    config = _route_config(names.outbound_route(service), service, service, CATCH_ALL_ROUTE_NAME)
    if source_tags:
        config.request_headers_to_add.add().header.CopyFrom(
            base_pb2.HeaderValue(key=names.TAGS_HEADER, value=source_tags))
    if external:
        config.virtual_hosts[0].routes[0].route.auto_host_rewrite.value = True
    return config


def egress_route_config(service: str, cluster: str) -> route_pb2.RouteConfiguration:
    """A zone egress's route to an external service: `outbound:<service>`, Host rewritten to the server's."""
    config = _route_config(names.outbound_route(service), service, cluster, "")
    config.virtual_hosts[0].routes[0].route.auto_host_rewrite.value = True
    return config


def rds(name: str) -> hcm_pb2.Rds:
    rds = hcm_pb2.Rds(route_config_name=name)
    rds.config_source.ads.SetInParent()
    rds.config_source.resource_api_version = config_source_pb2.V3
    return rds


def inbound_routes_by_rds(resources: Resources) -> None:
    """Serve the inbound listeners' route configurations by RDS instead of inline (after the plugins ran).

    Kuma keeps them inline; we move them out so that what changes with inbound policies (the RBAC decision
    of MeshTrafficPermission, route timeouts) is a route configuration update, which Envoy applies in place
    to the next request on every connection, instead of a listener update, which drains old connections
    under the old config. Each keeps Kuma's name (`inbound:<service>`) unless two inbounds of the proxy
    share it; then each is named after its listener. Names depend only on the proxy's inbounds, never on
    policies, so a policy change leaves the listener as it was."""
    listeners = [m for m in resources[names.LISTENER].values()
                 if isinstance(m, listener_pb2.Listener) and m.traffic_direction == base_pb2.INBOUND]
    inline: dict[str, list[tuple[listener_pb2.Listener, int, hcm_pb2.HttpConnectionManager]]] = {}
    for listener in listeners:
        for index, chain in enumerate(listener.filter_chains):
            for network_filter in chain.filters:
                if network_filter.name == names.HCM_FILTER:
                    hcm = hcm_pb2.HttpConnectionManager()
                    network_filter.typed_config.Unpack(hcm)
                    if hcm.HasField("route_config"):
                        inline.setdefault(hcm.route_config.name, []).append((listener, index, hcm))
    routes = resources[names.ROUTE]
    for name, users in inline.items():
        shared = len({id(listener) for listener, _, _ in users}) == 1
        for listener, index, hcm in users:
            chosen = name if shared else listener.name
            config = hcm.route_config
            existing = routes.get(chosen)
            if existing is not None and existing.SerializeToString(deterministic=True) != \
                    config.SerializeToString(deterministic=True):
                # chains of one listener whose routes differ (a plugin edited only some): one each
                chosen = f"{chosen}:{index}"
            config.name = chosen
            routes[chosen] = route_pb2.RouteConfiguration()
            routes[chosen].CopyFrom(config)
            hcm.rds.CopyFrom(rds(chosen))
            for network_filter in listener.filter_chains[index].filters:
                if network_filter.name == names.HCM_FILTER:
                    network_filter.typed_config.Pack(hcm, deterministic=True)
