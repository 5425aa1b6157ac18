"""MeshGateway: mesh-scoped, flat body (selectors, tags, conf.listeners): what a builtin gateway proxy serves.

Kuma v2.14.3's MeshGatewayResource.Validate (gateway_validator.go), messages and field paths word for word.
"""
from __future__ import annotations

import re
from typing import Any

from appliance.core.resources.proto_validation import (
    BOOL, SERVICE_TAG, STRING, TAGS, UINT32, enum, message, port_errors, repeated, tag_errors, top, uint,
    without_nulls,
)
from appliance.core.resources.secret import DATA_SOURCE, refused_source_errors
from appliance.core.validation import Violations, join
from appliance.model.proxy import SERVED_GATEWAY_PROTOCOLS

PROTOCOLS = ("NONE", "TCP", "TLS", "HTTP", "HTTPS")
TLS_MODES = ("NONE", "TERMINATE", "PASSTHROUGH")
WILDCARD = "*"
# Tags a Dataplane owns: a gateway's (or listener's) tags must not claim them.
_RESERVED_TAGS = ("kuma.io/external-service-name", "kuma.io/protocol", SERVICE_TAG, "kuma.io/zone")
_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DOMAIN = re.compile(rf"{_DNS_LABEL}(\.{_DNS_LABEL})*")

_LISTENER = message(
    hostname=STRING, port=UINT32, protocol=enum(*PROTOCOLS),
    tls=message(mode=enum(*TLS_MODES), certificates=repeated(DATA_SOURCE), options=message()),
    tags=TAGS, crossMesh=BOOL, resources=message(connectionLimit=UINT32))
SHAPE: dict[str, Any] = top(
    selectors=repeated(message(match=TAGS)),
    tags=TAGS,
    conf=message(listeners=repeated(_LISTENER)),
)



def data_sources(content: dict[str, Any]) -> list[tuple[str, Any]]:
    out = []
    for i, listener in enumerate(((content.get("conf") or {}).get("listeners")) or []):
        for j, cert in enumerate(((listener or {}).get("tls") or {}).get("certificates") or []):
            out.append((f"conf.listeners[{i}].tls.certificates[{j}]", cert))
    return out


def listener_hostname(listener: dict[str, Any]) -> str:
    """GetNonEmptyHostname: an empty hostname serves every host."""
    return listener.get("hostname") or WILDCARD


def validate(content: dict[str, Any], out: Violations) -> None:
    gw = without_nulls(SHAPE, content)
    selectors = gw.get("selectors") or []
    cross_mesh = any((l or {}).get("crossMesh") for l in ((gw.get("conf") or {}).get("listeners") or []))
    if not selectors:
        out.add("selectors", "must have at least one element")
    for i, selector in enumerate(selectors):
        tag_errors(f"selectors[{i}].match", selector.get("match") or {}, out, selector=True,
                   require_service=True, at_least_one=True)
        if i > 0 and cross_mesh:
            out.add(f"selectors[{i}]", "there can be at most one selector")
    tag_errors("tags", gw.get("tags") or {}, out, selector=True, forbidden_keys=_RESERVED_TAGS)
    _conf_errors(gw.get("conf"), out)
    refused_source_errors(data_sources(gw), out)


def _hostname_errors(path: str, hostname: str, out: Violations) -> None:
    if hostname == WILDCARD:
        return
    if len(hostname) > 253:
        out.add(path, "must be at most 253 characters")
    if hostname.startswith("*."):
        if not _DOMAIN.fullmatch(hostname[2:]):
            out.add(path, "invalid wildcard domain")
        return
    if not _DOMAIN.fullmatch(hostname):
        out.add(path, "invalid hostname")


def _conf_errors(conf: dict[str, Any] | None, out: Violations) -> None:
    if conf is None:
        out.add("conf", "cannot be empty")
        return
    path = "conf.listeners"
    listeners = conf.get("listeners") or []
    if not listeners:
        out.add(path, "cannot be empty")
    for i, listener in enumerate(listeners):
        at = f"{path}[{i}]"
        if listener.get("hostname"):
            _hostname_errors(join(at, "hostname"), listener["hostname"], out)
        port_errors(join(at, "port"), uint(listener.get("port")), out)
        protocol, tls, cross = listener.get("protocol") or "NONE", listener.get("tls"), listener.get("crossMesh")
        if protocol == "NONE":
            out.add(join(at, "protocol"), "cannot be empty")
        elif protocol == "HTTPS":
            if cross:
                out.add(join(at, "protocol"), "protocol is not supported with crossMesh")
            elif tls is None:
                out.add(join(at, "tls"), "cannot be empty")
            elif tls.get("mode") == "PASSTHROUGH":
                out.add(join(at, "tls.mode"), "mode is not supported on HTTPS listeners")
        if tls is not None and not cross:
            mode, certificates = tls.get("mode") or "NONE", tls.get("certificates") or []
            if mode == "NONE":
                out.add(join(at, "tls.mode"), "cannot be empty")
            elif mode == "TERMINATE" and not certificates:
                out.add(join(at, "tls.certificates"), "cannot be empty in TLS termination mode")
            elif mode == "TERMINATE" and len(certificates) > 2:
                out.add(join(at, "tls.certificates"), "cannot have more than 2 certificates")
        if tls is not None and cross and ((tls.get("mode") or "NONE") != "NONE" or tls.get("certificates")):
            out.add(join(at, "tls"), "must be empty with crossMesh")
        tag_errors(join(at, "tags"), listener.get("tags") or {}, out, selector=True, forbidden_keys=_RESERVED_TAGS)
    _collapsibility_errors(path, listeners, out)


def _collapsibility_errors(path: str, listeners: list[dict[str, Any]], out: Violations) -> None:
    """Listeners on one port become one Envoy listener: one protocol, one listener per hostname, one limit."""
    protocols: dict[int, dict[str, list[int]]] = {}
    hostnames: dict[int, dict[str, list[int]]] = {}
    limits: dict[int, tuple[set[int], list[int]]] = {}
    for i, listener in enumerate(listeners):
        port = uint(listener.get("port"))
        protocols.setdefault(port, {}).setdefault(listener.get("protocol") or "NONE", []).append(i)
        hostnames.setdefault(port, {}).setdefault(listener_hostname(listener), []).append(i)
        limit = uint((listener.get("resources") or {}).get("connectionLimit"))
        if limit:
            found = limits.setdefault(port, (set(), []))
            found[0].add(limit)
            found[1].append(i)
    # Kuma walks Go maps here, so its order is random; ours is by port, then by first appearance.
    for port in sorted(protocols):
        if len(protocols[port]) > 1:
            for indexes in protocols[port].values():
                for i in indexes:
                    out.add(f"{path}[{i}]", "protocol conflicts with other listeners on this port")
    for port in sorted(hostnames):
        for indexes in hostnames[port].values():
            if len(indexes) > 1:
                for i in indexes:
                    out.add(f"{path}[{i}]", "multiple listeners for hostname on this port")
    for port in sorted(limits):
        values, indexes = limits[port]
        if len(values) > 1:
            for i in indexes:
                out.add(f"{path}[{i}].resources.connectionLimit", "conflicting values for this port")


def warnings(content: dict[str, Any]) -> list[str]:
    """Nothing accepted silently does nothing: each field stored here that gateway proxies do not get yet.
    (`tags` and listener `tags` are applied: MeshHTTPRoutes pick listeners by them.)"""
    gw = without_nulls(SHAPE, content)
    out = []
    for i, listener in enumerate((gw.get("conf") or {}).get("listeners") or []):
        at = f"conf.listeners[{i}]"
        protocol = listener.get("protocol") or "NONE"
        if protocol not in SERVED_GATEWAY_PROTOCOLS:
            out.append(f"'{at}.protocol' {protocol} is stored but not yet applied to gateway proxies by this control "
                       f"plane: the listener gets no Envoy listener (only {', '.join(SERVED_GATEWAY_PROTOCOLS)} "
                       "are served)")
            continue
        if protocol == "TLS" and (listener.get("tls") or {}).get("mode") not in ("TERMINATE", "PASSTHROUGH"):
            out.append(f"'{at}.tls' is missing: a TLS listener is served only with tls.mode TERMINATE or PASSTHROUGH")
        # an HTTP crossMesh listener is served to every mesh's proxies (xds/cross_mesh.py)
        unused = (("crossMesh",) if protocol != "HTTP" else ()) + (("tls",) if protocol in ("HTTP", "TCP") else ())
        for name in unused:
            if listener.get(name):
                out.append(f"'{at}.{name}' is stored but not yet applied to gateway proxies by this control plane")
    return out

