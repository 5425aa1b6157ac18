"""What policy plugins share to edit generated Envoy resources in place.

Generated resources arrive as `Resources` (type URL -> name -> message), with filter configs packed in
`Any`; these helpers unpack one filter, let a plugin change it and pack it back deterministically.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Callable, Iterator, TypeVar

from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

from appliance.gocompat import duration_or_none
# The names the plugins find resources by are the generators' (appliance.model.names), re-exported here.
from appliance.model.names import (
    CLUSTER, ENDPOINT, HCM_FILTER, HTTP_PROTOCOL_OPTIONS, HTTP_PROTOCOLS, LISTENER, ROUTE, ROUTER_FILTER,
    TCP_PROXY_FILTER, TLS_TRANSPORT_SOCKET, Resources, local_cluster, sanitize_metric,
)

M = TypeVar("M", bound=Message)


def pack(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message, deterministic=True)
    return packed


@lru_cache(maxsize=1024)
def _nanos(text: str) -> int | None:
    # Policies repeat the same few strings ("5s", "1h0m0s") for every proxy; parsing them is not free.
    return duration_or_none(text)


def duration(text: Any, default_seconds: float) -> duration_pb2.Duration:
    """A Go duration string from a policy spec (validated on write), or Kuma's default when absent."""
    nanos = _nanos(text) if isinstance(text, str) else None
    if nanos is None:
        nanos = int(default_seconds * 10**9)
    return duration_pb2.Duration(seconds=nanos // 10**9, nanos=nanos % 10**9)


def _update(chain: listener_components_pb2.FilterChain, name: str, message_type: type[M],
            update: Callable[[M], None]) -> bool:
    for network_filter in chain.filters:
        if network_filter.name == name:
            config = message_type()
            network_filter.typed_config.Unpack(config)
            update(config)
            network_filter.typed_config.CopyFrom(pack(config))
            return True
    return False


def update_hcm(chain: listener_components_pb2.FilterChain,
               update: Callable[[hcm_pb2.HttpConnectionManager], None]) -> bool:
    return _update(chain, HCM_FILTER, hcm_pb2.HttpConnectionManager, update)


def update_tcp_proxy(chain: listener_components_pb2.FilterChain,
                     update: Callable[[tcp_proxy_pb2.TcpProxy], None]) -> bool:
    return _update(chain, TCP_PROXY_FILTER, tcp_proxy_pb2.TcpProxy, update)


def insert_before_router(hcm: hcm_pb2.HttpConnectionManager, *filters: hcm_pb2.HttpFilter) -> None:
    """Kuma's InsertHTTPFiltersBeforeRouter: the filters, in order, right before the router (found by name,
    so filters other plugins put first, such as RBAC, stay ahead of them). Without a router, nothing."""
    for index, existing in enumerate(hcm.http_filters):
        if existing.name == ROUTER_FILTER:
            for offset, http_filter in enumerate(filters):
                hcm.http_filters.insert(index + offset, http_filter)
            return


def routes(hcm: hcm_pb2.HttpConnectionManager) -> Iterator[route_components_pb2.Route]:
    """The routes of an inline route configuration."""
    for virtual_host in hcm.route_config.virtual_hosts:
        yield from virtual_host.routes


def update_http_protocol_options(cluster: cluster_pb2.Cluster,
                                 update: Callable[[http_protocol_options_pb2.HttpProtocolOptions], None]) -> None:
    options = http_protocol_options_pb2.HttpProtocolOptions()
    existing = cluster.typed_extension_protocol_options
    if HTTP_PROTOCOL_OPTIONS in existing:
        existing[HTTP_PROTOCOL_OPTIONS].Unpack(options)
    update(options)
    existing[HTTP_PROTOCOL_OPTIONS].CopyFrom(pack(options))


def listener(resources: Resources, name: str) -> listener_pb2.Listener | None:
    found = resources.get(LISTENER, {}).get(name)
    return found if isinstance(found, listener_pb2.Listener) else None


def cluster(resources: Resources, name: str) -> cluster_pb2.Cluster | None:
    found = resources.get(CLUSTER, {}).get(name)
    return found if isinstance(found, cluster_pb2.Cluster) else None


def listeners_by_address(resources: Resources, direction: int) -> dict[tuple[str, int], listener_pb2.Listener]:
    """Kuma's GatherListeners: the generated listeners of one traffic direction, by (address, port)."""
    index = {}
    for found in resources.get(LISTENER, {}).values():
        if isinstance(found, listener_pb2.Listener) and found.traffic_direction == direction:
            socket = found.address.socket_address
            index[(socket.address, socket.port_value)] = found
    return index
