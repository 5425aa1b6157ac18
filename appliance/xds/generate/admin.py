"""The `kuma:envoy:admin` listener: the control plane's way to a proxy's Envoy admin API (Kuma 2.14's
AdminProxyGenerator, narrowed).

Envoy's admin API listens only on 127.0.0.1 or a Unix socket of the proxy's host. kuma-dp announces where
(node metadata `dataplane.admin.port`, `dataplane.admin.address`, `dataplane.admin.socketPath`), and the
proxy gets a listener on its own address at the admin port that forwards to it, as in Kuma, except that:
- there is one filter chain, TLS only: a plaintext client matches none and is closed (Kuma's plaintext
  chain serves kuma-dp's readiness, which we do not have);
- the client must show a certificate from the Envoy admin CA with the DNS SAN `kuma-cp` (only the control
  plane holds one), and gets only `GET` of `/config_dump`, `/stats` and `/clusters` (Kuma forwards `/`,
  `/quitquitquit` included): the three views the API serves.
The server certificate and key travel as the SDS secret `kuma:envoy:admin` (certificates are never
inlined into listeners); the CA certificate is public and inline.

A proxy whose address is the admin address itself (127.0.0.1) gets no listener, as in Kuma: it would
collide with Envoy's own admin socket; the control plane talks to such a proxy's admin directly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from envoy.type.matcher.v3 import string_pb2
from google.protobuf.message import Message

from appliance.ca.envoy_admin import CLIENT_SAN
from appliance.model import names
from appliance.xds.generate._proto import ads_source, pack, seconds
from appliance.xds.generate.listeners import TLS_INSPECTOR, network_filter, socket_address

NAME = "kuma:envoy:admin"                 # the listener, the cluster and the secret (Kuma's names)
STAT_PREFIX = "kuma_envoy_admin"
PATHS = ("/config_dump", "/stats", "/clusters")
_LOOPBACK = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "127.0.0.1": "127.0.0.1", "::": "::1", "::1": "::1"}
_CONNECT_TIMEOUT = 5


@dataclass(frozen=True)
class AdminEndpoint:
    """Where the proxy's Envoy admin API listens, from its node metadata."""
    port: int                 # the admin port: the listener's port (and Envoy's, over TCP)
    address: str = "127.0.0.1"
    socket_path: str = ""     # Envoy's admin on a Unix socket (Kuma's envoyAdminUnixSocket)


def admin_endpoint(metadata: Mapping[str, object]) -> AdminEndpoint | None:
    """The admin endpoint a proxy announces; None without a usable port, or with an admin address that is
    not a loopback one (as Kuma: the address is not trusted, or the listener would forward elsewhere)."""
    try:
        port = int(str(metadata.get("dataplane.admin.port") or 0))
    except ValueError:
        return None
    address = _LOOPBACK.get(str(metadata.get("dataplane.admin.address") or ""))
    if not 0 < port < 65536 or address is None:
        return None
    return AdminEndpoint(port, address, str(metadata.get("dataplane.admin.socketPath") or ""))


def needs_listener(proxy_address: str, admin: AdminEndpoint) -> bool:
    return bool(proxy_address) and proxy_address != admin.address


def _cluster(admin: AdminEndpoint) -> cluster_pb2.Cluster:
    cluster = cluster_pb2.Cluster(name=NAME, type=cluster_pb2.Cluster.STATIC, alt_stat_name=STAT_PREFIX,
                                  connect_timeout=seconds(_CONNECT_TIMEOUT))
    cluster.load_assignment.cluster_name = NAME
    address = cluster.load_assignment.endpoints.add().lb_endpoints.add().endpoint.address
    if admin.socket_path:
        address.CopyFrom(address_pb2.Address(pipe=address_pb2.Pipe(path=admin.socket_path)))
    else:
        address.CopyFrom(socket_address(admin.address, admin.port))
    return cluster


def _routes() -> route_pb2.RouteConfiguration:
    config = route_pb2.RouteConfiguration(name=NAME, validate_clusters={"value": False})
    host = config.virtual_hosts.add(name=NAME, domains=["*"])
    for path in PATHS:
        route = host.routes.add()
        route.match.path = path
        route.match.headers.add(name=":method", string_match=string_pb2.StringMatcher(exact="GET"))
        route.route.cluster = NAME
    return config


def _tls(ca_pem: bytes) -> base_pb2.TransportSocket:
    context = tls_pb2.DownstreamTlsContext()
    context.require_client_certificate.value = True
    common = context.common_tls_context
    common.tls_params.tls_minimum_protocol_version = common_pb2.TlsParameters.TLSv1_2
    common.tls_certificate_sds_secret_configs.add(name=NAME, sds_config=ads_source())
    common.validation_context.trusted_ca.inline_bytes = ca_pem
    common.validation_context.match_typed_subject_alt_names.add(
        san_type=common_pb2.SubjectAltNameMatcher.DNS, matcher=string_pb2.StringMatcher(exact=CLIENT_SAN))
    return base_pb2.TransportSocket(name=names.TLS_TRANSPORT_SOCKET, typed_config=pack(context))


def _listener(proxy_address: str, admin: AdminEndpoint, ca_pem: bytes) -> listener_pb2.Listener:
    listener = listener_pb2.Listener(name=NAME, address=socket_address(proxy_address, admin.port),
                                     traffic_direction=base_pb2.INBOUND, listener_filters=[TLS_INSPECTOR])
    listener.enable_reuse_port.value = False   # a second proxy on this address and port must fail, not share
    hcm = hcm_pb2.HttpConnectionManager(stat_prefix=STAT_PREFIX, route_config=_routes(), normalize_path={"value": True})
    hcm.http_filters.add(name=names.ROUTER_FILTER, typed_config=pack(router_pb2.Router()))
    chain = listener.filter_chains.add()
    chain.filter_chain_match.transport_protocol = "tls"
    chain.filters.append(network_filter(names.HCM_FILTER, hcm))
    chain.transport_socket.CopyFrom(_tls(ca_pem))
    return listener


def admin_resources(proxy_address: str, admin: AdminEndpoint, server_cert_pem: bytes, server_key_pem: bytes,
                    ca_pem: bytes) -> dict[str, dict[str, Message]]:
    """The listener, its cluster and its secret, by type URL; nothing for a proxy at the admin address."""
    if not needs_listener(proxy_address, admin):
        return {}
    secret = secret_pb2.Secret(name=NAME)
    secret.tls_certificate.certificate_chain.inline_bytes = server_cert_pem
    secret.tls_certificate.private_key.inline_bytes = server_key_pem
    return {names.LISTENER: {NAME: _listener(proxy_address, admin, ca_pem)},
            names.CLUSTER: {NAME: _cluster(admin)},
            names.SECRET: {NAME: secret}}


__all__ = ["AdminEndpoint", "NAME", "PATHS", "admin_endpoint", "admin_resources", "needs_listener"]
