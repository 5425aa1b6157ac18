"""MeshPassthrough on a transparent proxy's outbound capture listeners (Kuma's meshpassthrough plugin).

`passthroughMode`: `All` lets every destination outside the mesh through (even when the Mesh turns
passthrough off), `None` none (even when the Mesh allows it), `Matched` (the default) only those of
`appendMatch`: the capture listener (`outbound:passthrough:ipv4`/`ipv6`) then gets one filter chain per
match, found by destination address / TLS server name / HTTP Host and port, each to an ORIGINAL_DST cluster
of its own (`meshpassthrough_<protocol>_<value>_<port>`); anything else finds no chain and is closed, and an
HTTP request to an unlisted host gets a 503 saying so. Proxies without transparent proxying and builtin
gateways are left alone, as in Kuma.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.listener.http_inspector.v3 import http_inspector_pb2
from envoy.extensions.filters.listener.original_dst.v3 import original_dst_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from appliance.model import names
from appliance.model.names import Resources
from appliance.model.proxy import GenerationError, MeshSnapshot, Proxy
from appliance.policies import _envoy, _merge, _rules
from appliance.policies._common import as_list
from appliance.policies.meshpassthrough._order import (
    CIDR, CIDR_V6, DOMAIN, IP, IP_V6, WILDCARD_DOMAIN, ChainMatch, network, ordered_matches,
)
from appliance.policies.meshpassthrough.schema import KIND

NO_MATCH = ("This response comes from Kuma Sidecar. No routes matched this domain - check configuration of your "
            "MeshPassthrough policy.\n")
_DEFAULT_CLUSTERS = ("outbound:passthrough:ipv4", "outbound:passthrough:ipv6")
_V4_ONLY, _V6_ONLY = (IP, CIDR), (IP_V6, CIDR_V6)


@dataclass(frozen=True)
class Matched:
    conf: dict[str, Any] | None             # the merged `default`; None: no policy, or a proxy it leaves alone
    mesh_passthrough: bool = True
    internal_cidrs: tuple[str, ...] = ()
    ipv6: bool = False                      # kuma-dp's ipv6Enabled (internal addresses of HTTP chains)
    to_key: tuple = ()                      # the capture listeners are the proxy's own: outbounds are untouched


NOTHING = Matched(None)


def match(snapshot: MeshSnapshot, proxy: Proxy) -> Matched:
    if not snapshot.policies.get(KIND) or proxy.builtin_gateway or proxy.transparent is None:
        return NOTHING
    selection = _rules.select(snapshot.policies[KIND], proxy)
    if not selection.proxy:
        return NOTHING
    return Matched(_merge.single_item_conf(selection.proxy), snapshot.passthrough, snapshot.known_internal_cidrs,
                   proxy.ipv6_enabled)


def apply(matched: Matched, resources: Resources) -> None:
    """Nothing per listener: the capture listeners are changed once, by `apply_to_proxy`."""


def apply_to_proxy(matched: Matched, resources: Resources) -> None:
    conf = matched.conf
    if conf is None or names.LISTENER not in resources:
        return
    mode = conf.get("passthroughMode") or "Matched"
    clusters = resources[names.CLUSTER]
    if mode == "All":
        for name in _DEFAULT_CLUSTERS:   # whatever the Mesh says (Kuma adds both families' clusters)
            clusters.setdefault(name, _envoy.original_dst_cluster(name))
        return
    for name in _DEFAULT_CLUSTERS:
        clusters.pop(name, None)
    if mode != "Matched" or not as_list(conf.get("appendMatch")):
        return
    try:
        chains = ordered_matches([m for m in as_list(conf.get("appendMatch")) if isinstance(m, dict)])
    except ValueError as e:
        raise GenerationError(f"MeshPassthrough: {e}") from None
    used: dict[str, str] = {}
    for family, skipped in (("ipv4", _V6_ONLY), ("ipv6", _V4_ONLY)):
        listener = resources[names.LISTENER].get(f"outbound:passthrough:{family}")
        if listener is None or all(c.match_type in skipped for c in chains):
            continue
        resources[names.LISTENER][listener.name] = _configured(listener, chains, family == "ipv6", matched, used)
    for name, protocol in sorted(used.items()):
        cluster = _envoy.original_dst_cluster(name)
        if protocol in ("grpc", "http2"):
            _envoy.update_http_protocol_options(
                cluster, lambda o: o.explicit_http_config.http2_protocol_options.SetInParent())
        clusters[name] = cluster


def _configured(listener: listener_pb2.Listener, chains: list[ChainMatch], ipv6: bool, matched: Matched,
                used: dict[str, str]) -> listener_pb2.Listener:
    out = listener_pb2.Listener()
    out.CopyFrom(listener)
    del out.filter_chains[:]
    skipped = _V4_ONLY if ipv6 else _V6_ONLY
    for chain in chains:
        if chain.match_type in skipped:
            continue
        if chain.protocol in ("tcp", "mysql", "tls"):
            out.filter_chains.append(_tcp_chain(chain, ipv6, used))
        else:
            out.filter_chains.append(_http_chain(chain, ipv6, matched, used))
    no_inspection = sorted({c.port for c in chains if c.protocol == "mysql"})   # MySQL servers speak first
    out.listener_filters.add(name=names.ORIGINAL_DST_FILTER).typed_config.CopyFrom(
        _envoy.pack(original_dst_pb2.OriginalDst()))
    for name, config in ((names.TLS_INSPECTOR, tls_inspector_pb2.TlsInspector()),
                         (names.HTTP_INSPECTOR, http_inspector_pb2.HttpInspector())):
        if any(f.name == name for f in out.listener_filters):
            continue
        found = out.listener_filters.add(name=name)
        found.typed_config.CopyFrom(_envoy.pack(config))
        _disable_on_ports(found, no_inspection)
    return out


def _disable_on_ports(found: listener_components_pb2.ListenerFilter, ports: list[int]) -> None:
    if len(ports) == 1:
        found.filter_disabled.destination_port_range.start = ports[0]
        found.filter_disabled.destination_port_range.end = ports[0] + 1
    for port in ports if len(ports) > 1 else ():
        rule = found.filter_disabled.or_match.rules.add()
        rule.destination_port_range.start, rule.destination_port_range.end = port, port + 1


def cluster_name(value: str, protocol: str, port: int) -> str:
    return f"meshpassthrough_{protocol}_{value}_{port or '*'}"


def chain_name(value: str, protocol: str, port: int) -> str:
    if value == protocol:
        return f"meshpassthrough_{value}_{port or '*'}"
    return f"meshpassthrough_{protocol}_{value}_{port or '*'}"


def _address_match(match: listener_components_pb2.FilterChainMatch, chain: ChainMatch, ipv6: bool) -> None:
    if chain.match_type in (CIDR, CIDR_V6):
        address, length = network(chain.value)
        match.prefix_ranges.add(address_prefix=address).prefix_len.value = length
    elif chain.match_type in (IP, IP_V6):
        match.prefix_ranges.add(address_prefix=chain.value).prefix_len.value = 128 if ipv6 else 32
    if chain.port:
        match.destination_port.value = chain.port


def _tcp_chain(chain: ChainMatch, ipv6: bool, used: dict[str, str]) -> listener_components_pb2.FilterChain:
    """TCP and MySQL by address and port; TLS by server name too (SNI, not decrypted)."""
    protocol = "tls" if chain.protocol == "tls" else "tcp"
    cluster = cluster_name(chain.value, protocol, chain.port)
    out = listener_components_pb2.FilterChain(name=chain_name(chain.value, protocol, chain.port))
    out.filters.add(name=names.TCP_PROXY_FILTER).typed_config.CopyFrom(_envoy.pack(
        tcp_proxy_pb2.TcpProxy(stat_prefix=names.sanitize_metric(cluster), cluster=cluster)))
    out.filter_chain_match.transport_protocol = "tls" if protocol == "tls" else "raw_buffer"
    _address_match(out.filter_chain_match, chain, ipv6)
    if protocol == "tls" and chain.match_type in (DOMAIN, WILDCARD_DOMAIN):
        out.filter_chain_match.server_names.append(chain.value)
    used[cluster] = chain.protocol
    return out


def _http_chain(chain: ChainMatch, ipv6: bool, matched: Matched,
                used: dict[str, str]) -> listener_components_pb2.FilterChain:
    """HTTP, HTTP/2 and gRPC: by address and port, and for domains by Host, a virtual host each."""
    by_domain = chain.match_type in (DOMAIN, WILDCARD_DOMAIN)
    name = chain_name(chain.protocol if by_domain else chain.value, chain.protocol, chain.port)
    hcm = hcm_pb2.HttpConnectionManager(stat_prefix=names.sanitize_metric(name))
    hcm.http_filters.add(name=names.ROUTER_FILTER).typed_config.CopyFrom(_envoy.pack(router_pb2.Router()))
    _envoy.internal_addresses(hcm, matched.internal_cidrs, matched.ipv6)
    config = hcm.route_config
    config.name = name
    if by_domain:
        for route in chain.routes:
            domains = [route.value] + ([f"{route.value}:{chain.port}"] if chain.port else [])
            if not chain.port and route.match_type == DOMAIN:
                domains.append(f"{route.value}:*")
            _virtual_host(config, route.value, domains, cluster_name(route.value, chain.protocol, chain.port))
            used[cluster_name(route.value, chain.protocol, chain.port)] = chain.protocol
        no_match = config.virtual_hosts.add(name="no_match", domains=["*"]).routes.add()
        no_match.match.prefix = "/"
        no_match.direct_response.status = 503
        no_match.direct_response.body.inline_string = NO_MATCH
    else:
        cluster = cluster_name(chain.value, chain.protocol, chain.port)
        _virtual_host(config, chain.value, ["*"], cluster)
        used[cluster] = chain.protocol
    out = listener_components_pb2.FilterChain(name=name)
    out.filters.add(name=names.HCM_FILTER).typed_config.CopyFrom(_envoy.pack(hcm))
    out.filter_chain_match.application_protocols.extend(["http/1.1", "h2c"])
    out.filter_chain_match.transport_protocol = "raw_buffer"
    _address_match(out.filter_chain_match, chain, ipv6)
    return out


def _virtual_host(config: Any, name: str, domains: list[str], cluster: str) -> None:
    route = config.virtual_hosts.add(name=name, domains=domains).routes.add()
    route.match.prefix = "/"
    route.route.cluster = cluster
