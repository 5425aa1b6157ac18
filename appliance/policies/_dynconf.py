"""The `_kuma:dynamicconfig` listener (Kuma's pkg/xds/dynconf): settings kuma-dp GETs from its Envoy.

One HTTP listener on a Unix socket in kuma-dp's work dir; each setting is a path answered with its JSON
(`/dns`: the DNS records, `/meshmetric`: the metrics settings), and 304 when kuma-dp's If-None-Match is
the body's sha256, which kuma-dp got as its Etag. Routes are added in the order the generators run.
"""
from __future__ import annotations

import hashlib

from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from appliance.model import names
from appliance.model.names import Resources
from appliance.policies._envoy import pack, pack_held


def local_hcm(stat_prefix: str, ipv6: bool) -> hcm_pb2.HttpConnectionManager:
    """An HTTP connection manager for the proxy's own listeners, where only this machine counts as
    internal (core_xds.LocalHostAddresses)."""
    hcm = hcm_pb2.HttpConnectionManager(stat_prefix=names.sanitize_metric(stat_prefix))
    hcm.http_filters.add(name=names.ROUTER_FILTER).typed_config.CopyFrom(pack(router_pb2.Router()))
    hcm.internal_address_config.cidr_ranges.add(address_prefix="127.0.0.1").prefix_len.value = 32
    if ipv6:
        hcm.internal_address_config.cidr_ranges.add(address_prefix="::1").prefix_len.value = 128
    return hcm


def _new_listener(socket: str, ipv6: bool) -> listener_pb2.Listener:
    hcm = local_hcm(names.DYNAMIC_CONFIG_LISTENER, ipv6)
    hcm.route_config.virtual_hosts.add(name=names.DYNAMIC_CONFIG_LISTENER, domains=["*"])
    chain = listener_components_pb2.FilterChain()
    chain.filters.add(name=names.HCM_FILTER).typed_config.CopyFrom(pack(hcm))
    listener = listener_pb2.Listener(name=names.DYNAMIC_CONFIG_LISTENER, filter_chains=[chain])
    listener.address.pipe.path = socket
    return listener


def add_config_route(resources: Resources, socket: str, path: str, body: bytes, ipv6: bool) -> None:
    """dynconf.AddConfigRoute: `path` answers `body` (creating the listener on `socket` when the proxy has
    none yet). The listener is rebuilt, never edited in place: generated messages may be shared."""
    pack_held()   # the listener is copied below
    listeners = resources[names.LISTENER]
    listener = listener_pb2.Listener()
    listener.CopyFrom(listeners.get(names.DYNAMIC_CONFIG_LISTENER) or _new_listener(socket, ipv6))
    hcm = hcm_pb2.HttpConnectionManager()
    listener.filter_chains[0].filters[0].typed_config.Unpack(hcm)
    etag = hashlib.sha256(body).hexdigest()
    config = hcm.route_config
    config.max_direct_response_body_size_bytes.value = max(config.max_direct_response_body_size_bytes.value, len(body))
    host = config.virtual_hosts[0]
    unchanged = host.routes.add()
    unchanged.match.path = path
    unchanged.match.headers.add(name="If-None-Match").string_match.exact = etag
    unchanged.direct_response.status = 304
    current = host.routes.add(name=f"{names.DYNAMIC_CONFIG_LISTENER}:{path}")
    current.match.path = path
    current.response_headers_to_add.add().header.CopyFrom(base_pb2.HeaderValue(key="Etag", value=etag))
    current.direct_response.status = 200
    current.direct_response.body.inline_string = body.decode()
    listener.filter_chains[0].filters[0].typed_config.CopyFrom(pack(hcm))
    listeners[names.DYNAMIC_CONFIG_LISTENER] = listener
