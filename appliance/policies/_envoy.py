"""What policy plugins share to edit generated Envoy resources in place.

Generated resources arrive as `Resources` (type URL -> name -> message), with filter configs packed in
`Any`; these helpers unpack one filter, let a plugin change it and pack it back deterministically.
"""
from __future__ import annotations

import ipaddress
import threading
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, Callable, Iterator, TypeVar

from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

from appliance.gocompat import duration_or_none
# The names the plugins find resources by are the generators' (appliance.model.names), re-exported here.
from appliance.model.names import (
    CLUSTER, ENDPOINT, HCM_FILTER, HTTP_PROTOCOL_OPTIONS, HTTP_PROTOCOLS, KUMA_ALPN, LISTENER, ROUTE, ROUTER_FILTER,
    TCP_PROXY_FILTER, TLS_INSPECTOR, TLS_TRANSPORT_SOCKET, Resources, local_cluster, sanitize_metric,
)

M = TypeVar("M", bound=Message)


@lru_cache(maxsize=64)
def _cidr_ranges(cidrs: tuple[str, ...], ipv6: bool) -> tuple[tuple[str, int], ...]:
    ranges = []
    for cidr in cidrs:
        interface = ipaddress.ip_interface(cidr)  # Kuma keeps the address as written, not the network's
        if interface.version == 4 or ipv6:  # as Kuma: IPv6 ranges only for proxies with IPv6 enabled
            ranges.append((str(interface.ip), interface.network.prefixlen))
    return tuple(ranges)


def internal_addresses(hcm: hcm_pb2.HttpConnectionManager, cidrs: tuple[str, ...], ipv6: bool) -> None:
    """Clients in these CIDRs (kuma-cp `ipam.knownInternalCIDRs`) count as internal (Envoy then keeps
    internal-only headers)."""
    for prefix, length in _cidr_ranges(cidrs, ipv6):
        hcm.internal_address_config.cidr_ranges.add(address_prefix=prefix).prefix_len.value = length


def original_dst_cluster(name: str) -> cluster_pb2.Cluster:
    """A cluster to wherever the connection was headed before iptables redirected it (Kuma's
    PassThroughCluster with the default 5 s connect timeout)."""
    cluster = cluster_pb2.Cluster(name=name, alt_stat_name=sanitize_metric(name), type=cluster_pb2.Cluster.ORIGINAL_DST,
                                  lb_policy=cluster_pb2.Cluster.CLUSTER_PROVIDED)
    cluster.connect_timeout.seconds = 5
    return cluster


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


class _Held(threading.local):
    """Network filters unpacked during this thread's `packed_once` pass: id(filter) -> (filter, its config).
    Several plugins edit one HTTP connection manager in turn; it is unpacked on the first edit and packed
    once at the end."""
    filters: dict[int, tuple[listener_components_pb2.Filter, Message]] | None = None


_held = _Held()


@contextmanager
def packed_once() -> Iterator[None]:
    """Within it, `update_hcm` and `update_tcp_proxy` keep each filter's config unpacked across edits; on
    exit (and at `pack_held`) they are packed back. The bytes are those of packing after every edit
    (deterministic serialization of the same message). Code that reads or copies a filter's typed_config
    inside must call `pack_held` first."""
    outer, _held.filters = _held.filters, {}
    try:
        yield
    finally:
        pack_held()
        _held.filters = outer


def pack_held() -> None:
    """Pack the configs held by the current `packed_once` pass back into their filters."""
    held = _held.filters
    if held:
        for network_filter, config in held.values():
            network_filter.typed_config.CopyFrom(pack(config))
        held.clear()


def _update(chain: listener_components_pb2.FilterChain, name: str, message_type: type[M],
            update: Callable[[M], None]) -> bool:
    for network_filter in chain.filters:
        if network_filter.name == name:
            held = _held.filters
            # held filters stay alive, so their ids are not reused meanwhile
            hit = held.get(id(network_filter)) if held is not None else None
            if hit is not None:
                config = hit[1]
            else:
                config = message_type()
                network_filter.typed_config.Unpack(config)
            update(config)
            if held is None:
                network_filter.typed_config.CopyFrom(pack(config))
            elif hit is None:
                held[id(network_filter)] = (network_filter, config)
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


def mtls_chain(listener: listener_pb2.Listener) -> listener_components_pb2.FilterChain | None:
    """The filter chain of an inbound that terminates mesh mTLS (the one with a TLS transport socket)."""
    for chain in listener.filter_chains:
        if chain.transport_socket.name == TLS_TRANSPORT_SOCKET:
            return chain
    return None


def set_inbound_mtls_mode(listener: listener_pb2.Listener, permissive: bool) -> None:
    """Lay out an mTLS inbound's filter chains for a mode, around its mesh mTLS chain (kept as it is).

    Strict: the mTLS chain alone. Permissive: plaintext, foreign TLS and mesh mTLS (TLS with ALPN `kuma`)
    chains side by side, told apart by the TLS inspector; the first two carry the mTLS chain's filters.
    An inbound without an mTLS chain is left alone: a mode only ever narrows what mTLS would accept.
    """
    pack_held()   # the chains' filters are copied below
    secured = mtls_chain(listener)
    if secured is None:
        return
    kept = listener_components_pb2.FilterChain()
    kept.CopyFrom(secured)
    del listener.filter_chains[:]
    inspectors = [f for f in listener.listener_filters if f.name == TLS_INSPECTOR]
    for inspector in inspectors:
        listener.listener_filters.remove(inspector)
    kept.ClearField("filter_chain_match")
    if permissive:
        listener.listener_filters.add(name=TLS_INSPECTOR, typed_config=pack(tls_inspector_pb2.TlsInspector()))
        for transport in ("raw_buffer", "tls"):   # tls without the `kuma` ALPN: the application's own TLS
            chain = listener.filter_chains.add()
            chain.filter_chain_match.transport_protocol = transport
            chain.filters.extend(kept.filters)
        kept.filter_chain_match.transport_protocol = "tls"
        kept.filter_chain_match.application_protocols.append(KUMA_ALPN)
    listener.filter_chains.append(kept)
