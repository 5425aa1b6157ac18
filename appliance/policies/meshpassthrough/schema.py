"""MeshPassthrough: which destinations outside the mesh a sidecar's app may reach through its outbound
passthrough listener (transparent proxying), by domain, IP or CIDR and port (Kuma v2.14.3)."""
from __future__ import annotations

import re
from typing import Any

from appliance.gocompat import is_dns_name, is_ip, parse_ip
from appliance.policies._common import Errors, arr, as_dict, as_list, as_str, enum, index, join, obj
from appliance.policies._tls import must_be_one_of
from appliance.policies._targetref import (
    DATAPLANE, MESH, MESH_SUBSET, TARGET_REF, top_level_deprecations, validate_target_ref,
)

KIND = "MeshPassthrough"
PATH = "meshpassthroughs"
SHORT_NAME = "mp"
TARGETS = {"is_target_ref": True, "has_to": False, "has_from": False, "has_rules": False, "is_from_as_rules": False}
# Kuma's `+kuma:policy:order`: plugins run in ascending order, each on what the previous ones built.
ORDER = 500
HAS_PLUGIN = True

PROTOCOLS = ("tcp", "tls", "grpc", "http", "http2", "mysql")
_L7 = ("grpc", "http", "http2")          # one port, one of these protocols (notAllowedProtocolsOnTheSamePort)
_MATCH = obj({
    "port": {"type": "integer", "format": "int32"},
    "protocol": {"type": "string", "default": "tcp", "enum": list(PROTOCOLS)},
    "type": enum("Domain", "IP", "CIDR"),
    "value": {"type": "string"},
}, required=("type", "value"))
SPEC_SCHEMA: dict[str, Any] = obj({
    "default": obj({"appendMatch": arr(_MATCH), "passthroughMode": enum("All", "Matched", "None")}),
    "targetRef": TARGET_REF,
})

_TOP_KINDS = (MESH, MESH_SUBSET, DATAPLANE)
_PARTIAL_WILDCARD = re.compile(r"^\*[^.]+")


def validate(spec: dict[str, Any]) -> Errors:
    out: Errors = []
    if spec.get("targetRef") is not None:
        out += validate_target_ref(spec["targetRef"], "spec.targetRef", _TOP_KINDS)
    return out + _validate_default(as_dict(spec.get("default")))


def _is_cidr(value: str) -> bool:
    """govalidator.IsCIDR: net.ParseCIDR, an address and a prefix length in its family's range."""
    address, slash, length = value.partition("/")
    ip = parse_ip(address)
    if not slash or ip is None or not length.isdigit() or (len(length) > 1 and length[0] == "0"):
        return False
    return int(length) <= (32 if ip.version == 4 else 128)


def _validate_default(conf: dict[str, Any]) -> Errors:
    out: Errors = []
    protocol_of_port: dict[int, str] = {}
    values: dict[tuple[int, str], set[str]] = {}
    for i, match in enumerate(as_list(conf.get("appendMatch"))):
        match = as_dict(match)
        path = index("spec.default.appendMatch", i)
        protocol, port, value = as_str(match.get("protocol")) or "tcp", match.get("port"), as_str(match.get("value"))
        if protocol == "mysql" and port is None:
            out.append((join(path, "port"), "port must be defined for Mysql protocol"))
        if port is not None and not 0 < port <= 65535:
            out.append((join(path, "port"), "port must be a valid (1-65535)"))
        if port is not None:
            if port in protocol_of_port and protocol_of_port[port] != protocol and protocol in _L7:
                out.append((join(path, "port"), "using the same port in multiple matches requires the same protocol "
                                                "for the following protocols: [grpc http http2]"))
            else:
                protocol_of_port[port] = protocol
            seen = values.setdefault((port, protocol), set())
            if value in seen:
                out.append((join(path, "value"), f"value {value} is already defiend for this port and protocol"))
            seen.add(value)
        if protocol not in PROTOCOLS:
            out.append((join(path, "protocol"), must_be_one_of("protocol", PROTOCOLS)))
        out += _validate_value(path, as_str(match.get("type")), value, protocol, port)
    return out


def _validate_value(path: str, kind: str, value: str, protocol: str, port: Any) -> Errors:
    if kind == "CIDR":
        return [] if _is_cidr(value) else [(join(path, "value"), "provided CIDR has incorrect value")]
    if kind == "IP":
        return [] if is_ip(value) else [(join(path, "value"), "provided IP has incorrect value")]
    if kind != "Domain":
        return [(join(path, "type"), f"provided type {kind} is not supported, one of Domain, IP, or CIDR is supported")]
    out: Errors = []
    if protocol in ("tcp", "mysql"):
        out.append((join(path, "protocol"), f"protocol {protocol} is not supported for a domain"))
    if _PARTIAL_WILDCARD.match(value):
        out.append((join(path, "value"), "provided DNS has incorrect value, partial wildcard is currently not supported"))
    if port is None and value.startswith("*") and protocol in _L7:
        out.append((join(path, "port"), "wildcard domains doesn't work for all ports and layer 7 protocol"))
    bare = value[2:] if value.startswith("*.") else value
    if not bare.startswith("*") and not is_dns_name(bare):
        out.append((join(path, "value"), "provided DNS has incorrect value"))
    return out


def deprecations(spec: dict[str, Any]) -> list[str]:
    """Warnings Kuma returns with a successful create or update."""
    return top_level_deprecations(spec.get("targetRef"))


def mesh_defaults(mesh: str) -> list[tuple[str, dict[str, Any]]]:
    return []
