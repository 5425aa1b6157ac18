"""The filter chains a MeshPassthrough's `appendMatch` makes, in the order Envoy must try them (Kuma's
GetOrderedMatchers): TLS first, then TCP, HTTP, HTTP/2, gRPC; within a protocol IPs before CIDRs before
domains (exact before wildcard), specific ports before any port, longer domains and narrower ranges first.

HTTP-like matches on domains share one chain per (protocol, port), a virtual host each. A match for any
port is repeated on every port some other match names: Envoy picks the port first, and would otherwise
find no chain for that address on that port.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from appliance.gocompat import parse_ip

WILDCARD_DOMAIN, DOMAIN, CIDR, CIDR_V6, IP, IP_V6 = 1, 2, 3, 4, 5, 6
L7 = ("http", "http2", "grpc")
_PROTOCOL_ORDER = {"tls": 0, "tcp": 1, "http": 2, "http2": 3, "grpc": 4}


@dataclass(frozen=True)
class Route:
    value: str
    match_type: int


@dataclass(frozen=True)
class ChainMatch:
    protocol: str
    port: int                      # 0: any port
    match_type: int
    value: str                     # "" for an HTTP-like chain of domains (its routes hold them)
    routes: tuple[Route, ...] = ()


def _match_type(match: dict[str, Any], protocol: str) -> tuple[int, bool]:
    """(type, is an HTTP-like wildcard domain, which goes with the exact domains of its chain)."""
    kind, value = match.get("type"), str(match.get("value") or "")
    if kind == "Domain":
        if value.startswith("*"):
            return (DOMAIN, True) if protocol in L7 else (WILDCARD_DOMAIN, False)
        return DOMAIN, False
    if kind == "IP":
        ip = parse_ip(value)
        return (IP_V6 if ip is not None and ip.version == 6 else IP), False
    ip = parse_ip(value.split("/")[0])
    return (CIDR_V6 if ip is not None and ip.version == 6 else CIDR), False


def _domain_key(value: str) -> tuple[int, str]:
    """sortDomains: more labels first, then by name."""
    return -len(value.split(".")), value


def network(cidr: str) -> tuple[str, int]:
    """getIpAndMask: the network address and prefix length of a CIDR."""
    parsed = ipaddress.ip_network(cidr, strict=False)
    return str(parsed.network_address), parsed.prefixlen


def _chain_key(m: ChainMatch) -> tuple:
    value_key: tuple = ()
    if m.match_type in (DOMAIN, WILDCARD_DOMAIN):
        value_key = _domain_key(m.value)
    elif m.match_type in (CIDR, CIDR_V6):
        address, length = network(m.value)
        value_key = (-length, _Reverse(address))
    elif m.match_type in (IP, IP_V6):
        value_key = (_Reverse(m.value),)
    return (_PROTOCOL_ORDER.get(m.protocol, 0), -m.match_type, -m.port, value_key, -len(m.routes))


class _Reverse(str):
    """A string that sorts in reverse (Kuma orders addresses as strings, descending)."""
    def __lt__(self, other: str) -> bool:
        return str.__gt__(self, other)


def ordered_matches(append_match: list[dict[str, Any]]) -> list[ChainMatch]:
    """The chains in Envoy's order. ValueError when one port mixes HTTP, HTTP/2 and gRPC (Envoy cannot
    tell them apart there)."""
    with_routes: dict[tuple[str, int, int, str], set[Route]] = {}
    protocols_of_port: dict[int, set[str]] = {}
    for match in append_match:
        port, protocol = int(match.get("port") or 0), str(match.get("protocol") or "tcp")
        match_type, wildcard = _match_type(match, protocol)
        protocols_of_port.setdefault(port, set()).add(protocol)
        value = str(match.get("value") or "")
        if protocol in L7 and match_type == DOMAIN:
            route = Route(value, WILDCARD_DOMAIN if wildcard else DOMAIN)
            with_routes.setdefault((protocol, port, match_type, ""), set()).add(route)
        else:
            with_routes[(protocol, port, match_type, value)] = set()
    clashes = sorted(port for port, found in protocols_of_port.items() if len(found & set(L7)) > 1)
    if clashes:
        raise ValueError("; ".join(f"you cannot configure http, http2, grpc on the same port {p}" for p in clashes))
    expanded: dict[tuple[str, int, int, str], set[Route]] = {}
    for key, routes in with_routes.items():
        expanded.setdefault(key, set()).update(routes)
        protocol, port, match_type, value = key
        if port == 0:
            for other in protocols_of_port:
                if other:
                    expanded.setdefault((protocol, other, match_type, value), set()).update(routes)
    chains = [ChainMatch(protocol, port, match_type, value, _ordered_routes(routes))
              for (protocol, port, match_type, value), routes in expanded.items()]
    # Kuma sorts a map's entries stably; sorting all keys fully makes the result independent of input order
    return sorted(chains, key=_chain_key)


def _ordered_routes(routes: set[Route]) -> tuple[Route, ...]:
    """getOrderedRoutes: exact domains before wildcard ones, longer first, then by name."""
    return tuple(sorted(routes, key=lambda r: (-r.match_type, _domain_key(r.value))))
