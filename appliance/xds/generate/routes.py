"""Route configurations, inline in the HTTP connection managers as Kuma does for sidecars.

Route timeouts and retries start at Kuma's neutral values (`timeout: 0s`, no retries); the
MeshTimeout and MeshRetry plugins set them.
"""
from __future__ import annotations

import base64
import hashlib
from typing import Iterable

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_pb2

from appliance.model import names

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


def serialize_tags(tag_sets: Iterable[dict[str, str]]) -> str:
    """tags.Serialize of the proxy's tag set (all its inbounds' tags): `&key=v1,v2&` per key, sorted."""
    values: dict[str, set[str]] = {}
    for tags in tag_sets:
        for key, value in tags.items():
            values.setdefault(key, set()).add(value)
    return "".join(f"&{key}={','.join(sorted(values[key]))}&" for key in sorted(values))


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
