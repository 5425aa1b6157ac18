"""Dataplane: mesh-scoped, flat body (networking.address, inbound, outbound, admin, ...).

Kuma v2.14.3's DataplaneResource.Validate, messages and field paths word for word; that includes
its `networking.transparentProxing` spelling. A sidecar, a delegated gateway and a builtin gateway
each get their own set of checks, as in Kuma.
"""
from __future__ import annotations

import copy
import re
from typing import Any

from appliance.core.resources.proto_validation import (
    BOOL, DURATION, METRICS_BACKEND, PROTOCOLS_HINT, PROTOCOL_TAG, SERVICE_TAG, STRING, TAGS, UINT32,
    address_errors, duration_errors, enum, inbound_protocol_errors, is_loopback_overlap,
    key, known_protocol, message, port_errors, repeated, request_uri_host, tag_errors, top, uint,
    without_nulls,
)
from appliance.core.resources.mesh import prometheus_errors
from appliance.core.validation import Violations
from appliance.gocompat import duration_or_none, go_quote, parse_ip

_BACKEND_KINDS = ("MeshExternalService", "MeshMultiZoneService", "MeshService")
_KINDS_HINT = f"invalid value. Available values are: {','.join(_BACKEND_KINDS)}"
_IDENTIFIER = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")

_INBOUND = message(
    port=UINT32, servicePort=UINT32, serviceAddress=STRING, address=STRING, tags=TAGS,
    health=message(ready=BOOL),
    serviceProbe=message(interval=DURATION, timeout=DURATION, unhealthyThreshold=UINT32,
                         healthyThreshold=UINT32, tcp=message()),
    state=enum("Ready", "NotReady", "Ignored"), name=STRING, protocol=STRING)
_OUTBOUND = message(address=STRING, port=UINT32, tags=TAGS,
                    backendRef=message(kind=STRING, name=STRING, port=UINT32, labels=TAGS))
_TRANSPARENT_PROXYING = message(
    redirectPortInbound=UINT32, redirectPortOutbound=UINT32, directAccessServices=repeated(STRING),
    reachableServices=repeated(STRING), ipFamilyMode=enum("UnSpecified", "DualStack", "IPv4", "IPv6"),
    reachableBackends=message(refs=repeated(message(
        kind=STRING, name=STRING, namespace=STRING, port=UINT32, labels=TAGS))))
_LISTENER = message(type=enum("Unspecified", "ZoneIngress", "ZoneEgress"), address=STRING, port=UINT32,
                    name=STRING, state=enum("Ready", "NotReady"))

SHAPE: dict[str, Any] = top(
    networking=message(
        address=STRING, advertisedAddress=STRING, inbound=repeated(_INBOUND), outbound=repeated(_OUTBOUND),
        gateway=message(tags=TAGS, type=enum("DELEGATED", "BUILTIN")),
        transparentProxying=_TRANSPARENT_PROXYING, admin=message(port=UINT32), listeners=repeated(_LISTENER)),
    metrics=METRICS_BACKEND,
    probes=message(port=UINT32, endpoints=repeated(message(inboundPort=UINT32, inboundPath=STRING, path=STRING))),
)


def validate(content: dict[str, Any], out: Violations) -> None:
    dp = without_nulls(SHAPE, content)
    if duration_errors(dp, "networking.inbound", ("serviceProbe.interval", "serviceProbe.timeout"), out):
        return
    net = dp.get("networking")
    if net is None:
        out.add("networking", "must be defined")
        return
    if (admin := net.get("admin")) is not None:
        port = uint(admin.get("port"))
        if _inbound_uses_loopback(net, port):
            out.add("networking.admin.port", "must differ from inbound")
        if any(port == uint(o.get("port")) and is_loopback_overlap(o.get("address") or "127.0.0.1")
               for o in net.get("outbound") or []):
            out.add("networking.admin.port", "must differ from outbound")
    gateway = net.get("gateway")
    kind = None if gateway is None else gateway.get("type", "DELEGATED").lower()
    if kind is None:
        _networking_errors(net, out)
        _probes_errors(dp.get("probes"), out)
        if (metrics := dp.get("metrics")) is not None:
            if metrics.get("type", "") != "prometheus":
                out.add("metrics.type", 'unknown backend type. Available backends: "prometheus"')
            else:
                prometheus_errors("metrics.conf", metrics.get("conf") or {}, out)
        _listener_errors(net, out)
        return
    if net.get("inbound"):
        out.add("networking.inbound", f"inbound cannot be defined for {kind} gateways")
    if kind == "builtin" and net.get("outbound"):
        out.add("networking.outbound", "outbound cannot be defined for builtin gateways")
    if net.get("listeners"):
        out.add("networking.listeners", f"listeners cannot be defined for {kind} gateways")
    if kind == "builtin" and dp.get("probes") is not None:
        out.add("networking.probes", "probes cannot be defined for builtin gateways")
    tags = gateway.get("tags") or {}
    tag_errors("networking.gateway.tags", tags, out, require_service=bool(tags), extra=_gateway_protocol_errors)
    _networking_errors(net, out)
    if kind == "delegated":
        _probes_errors(dp.get("probes"), out)


def _inbound_uses_loopback(net: dict[str, Any], port: int) -> bool:
    """UsesInboundInterface(127.0.0.1, port), against both the proxy and the application side."""
    for inbound in net.get("inbound") or []:
        proxy_ip = inbound.get("address") or net.get("address", "")
        proxy_port = uint(inbound.get("port"))
        if port == proxy_port and is_loopback_overlap(proxy_ip):
            return True
        if port == (uint(inbound.get("servicePort")) or proxy_port) and \
                is_loopback_overlap(inbound.get("serviceAddress") or proxy_ip):
            return True
    return False


def _gateway_protocol_errors(path: str, tags: dict[str, str], out: Violations) -> None:
    value = tags.get(PROTOCOL_TAG)
    if value is not None and value.lower() != "tcp":
        out.add(key(path, PROTOCOL_TAG),
                f"other values than tcp are not allowed, provided value {go_quote(value)}")


def _networking_errors(net: dict[str, Any], out: Violations) -> None:
    address = net.get("address", "")
    address_errors("networking", address, out)
    used: set[str] = set()
    for i, inbound in enumerate(net.get("inbound") or []):
        path = f"networking.inbound[{i}]"
        _inbound_errors(path, inbound, address, out)
        # Kuma's validator lets two inbounds share address:port, and then one of them silently does
        # nothing (their listeners have the same name); we refuse it, in the words Kuma uses for listeners.
        where = f"{inbound.get('address') or address}:{uint(inbound.get('port'))}"
        if where in used:
            out.add(f"{path}.port", f"address:port {where} is already used by another inbound")
        used.add(where)
        # With inbound tags disabled an inbound has none; the service tag is required only with tags.
        tags = inbound.get("tags") or {}
        if tags and SERVICE_TAG not in tags:
            out.add(key(f"{path}.tags", SERVICE_TAG), "tag has to exist")
    for i, outbound in enumerate(net.get("outbound") or []):
        _outbound_errors(f"networking.outbound[{i}]", outbound, out)
    refs = ((net.get("transparentProxying") or {}).get("reachableBackends") or {}).get("refs") or []
    for i, ref in enumerate(refs):
        _reachable_backend_errors(f"networking.transparentProxing.reachableBackends.refs[{i}]", ref, out)


def _inbound_errors(path: str, inbound: dict[str, Any], dp_address: str, out: Violations) -> None:
    port, service_port = uint(inbound.get("port")), uint(inbound.get("servicePort"))
    port_errors(f"{path}.port", port, out)
    if service_port:
        port_errors(f"{path}.servicePort", service_port, out)
    clash = "serviceAddress and servicePort has to differ from address and port"
    service_address, address = inbound.get("serviceAddress", ""), inbound.get("address", "")
    if service_address:
        if parse_ip(service_address) is None:
            out.add(f"{path}.serviceAddress", "serviceAddress has to be valid IP address")
        if service_address == dp_address and service_port in (0, port):
            out.add(f"{path}.serviceAddress", clash)
    if address:
        if parse_ip(address) is None:
            out.add(f"{path}.address", "address has to be valid IP address")
        if address == service_address and service_port in (0, port):
            out.add(f"{path}.serviceAddress", clash)
    tag_errors(f"{path}.tags", inbound.get("tags") or {}, out, extra=inbound_protocol_errors)
    protocol = inbound.get("protocol", "")
    if protocol and not known_protocol(protocol):
        out.add(f"{path}.protocol", f"has an invalid value {go_quote(protocol)}. {PROTOCOLS_HINT}")
    if (probe := inbound.get("serviceProbe")) is not None:
        for field in ("interval", "timeout"):
            if field in probe and duration_or_none(probe[field]) == 0:
                out.add(f"{path}.serviceProbe.{field}", "must have a positive value")
        for field in ("unhealthyThreshold", "healthyThreshold"):
            if field in probe and uint(probe[field]) == 0:
                out.add(f"{path}.serviceProbe.{field}", "must have a positive value")


def _outbound_errors(path: str, outbound: dict[str, Any], out: Violations) -> None:
    port_errors(f"{path}.port", uint(outbound.get("port")), out)
    address = outbound.get("address", "")
    if address and parse_ip(address) is None:
        out.add(f"{path}.address", "address has to be valid IP address")
    ref, tags = outbound.get("backendRef"), outbound.get("tags") or {}
    if ref is not None:
        kind = ref.get("kind", "")
        if kind not in _BACKEND_KINDS:
            out.add(f"{path}.backendRef.kind", _KINDS_HINT)
        if not ref.get("name") and not ref.get("labels"):
            out.add(f"{path}.backendRef", "either 'name' or 'labels' should be specified")
        # A MeshExternalService takes its port from its endpoints.
        if kind != "MeshExternalService":
            port_errors(f"{path}.backendRef.port", uint(ref.get("port")), out)
    elif not tags:
        out.add(f"{path}.tags", f"mandatory tag {go_quote(SERVICE_TAG)} is missing")
    else:
        tag_errors(f"{path}.tags", tags, out, require_service=True)
    if ref is not None and tags:
        out.add(f"{path}.backendRef", "both backendRef and tags/service cannot be defined")


def _reachable_backend_errors(path: str, ref: dict[str, Any], out: Violations) -> None:
    name, namespace, labels = ref.get("name", ""), ref.get("namespace", ""), ref.get("labels") or {}
    if ref.get("kind", "") not in _BACKEND_KINDS:
        out.add(f"{path}.kind", _KINDS_HINT)
    if len(name) > 253:
        out.add(f"{path}.name", "value length must less or equal 253")
    elif name and not _IDENTIFIER.fullmatch(name):
        out.add(f"{path}.name", "invalid characters. A lowercase RFC 1123 subdomain must consist of lower case "
                                "alphanumeric characters, '-' or '.', and must start and end with an alphanumeric "
                                "character")
    if not name and not namespace and not labels:
        out.add(f"{path}.name", "name or labels are required")
    if not name and namespace:
        out.add(f"{path}.name", "name is required, when namespace is defined")
    if (name or namespace) and labels:
        out.add(f"{path}.labels", "labels cannot be defined when name is specified")


def _probes_errors(probes: dict[str, Any] | None, out: Violations) -> None:
    if probes is None:
        return
    port_errors("probes.port", uint(probes.get("port")), out)
    for i, endpoint in enumerate(probes.get("endpoints") or []):
        path = f"probes.endpoints[{i}]"
        port_errors(f"{path}.inboundPort", uint(endpoint.get("inboundPort")), out)
        for field in ("inboundPath", "path"):
            if request_uri_host(endpoint.get(field, "")) is None:
                out.add(f"{path}.{field}", "should be a valid URL Path")


def _listener_errors(net: dict[str, Any], out: Violations) -> None:
    """Zone proxy listeners: unique names (with inbounds), one listener per address:port."""
    inbounds = net.get("inbound") or []
    names = {inbound.get("name") or str(uint(inbound.get("port"))) for inbound in inbounds}
    kinds: dict[str, str] = {}
    for i, listener in enumerate(net.get("listeners") or []):
        path, kind = f"networking.listeners[{i}]", listener.get("type", "Unspecified")
        if kind == "Unspecified":
            out.add(f"{path}.type", "type must be ZoneIngress or ZoneEgress")
        address_errors(path, listener.get("address", ""), out)
        port_errors(f"{path}.port", uint(listener.get("port")), out)
        if name := listener.get("name", ""):
            if name in names:
                out.add(f"{path}.name", f"name {go_quote(name)} must be unique across inbounds and listeners")
            names.add(name)
        where = f"{listener.get('address', '')}:{uint(listener.get('port'))}"
        if where in kinds:
            used = "is already used by another listener" if kinds[where] == kind else \
                "is used by listeners of different types"
            out.add(path, f"address:port {where} {used}")
        else:
            kinds[where] = kind
        if any(f"{inbound.get('address') or net.get('address', '')}:{uint(inbound.get('port'))}" == where
               for inbound in inbounds):
            out.add(path, f"address:port {where} collides with an inbound listener")


def workload(networking: dict[str, Any], inbound: dict[str, Any]) -> tuple[str, int]:
    """Where the application behind an inbound listens (Kuma 2.14's WorkloadIP, WorkloadPort): serviceAddress,
    else the inbound's own address, else the Dataplane's; servicePort, else the inbound's port."""
    address = inbound.get("address") or networking.get("address") or ""
    port = int(inbound.get("port") or 0)
    return str(inbound.get("serviceAddress") or address), int(inbound.get("servicePort") or port)


def inbound_ready(inbound: dict[str, Any]) -> bool:
    """Kuma's GetHealthyInbounds: the inbound's state is Ready (the default) and `health`, if set, says ready.
    Only ready inbounds are endpoints of their service."""
    health = inbound.get("health")
    if isinstance(health, dict) and not health.get("ready", False):
        return False
    return inbound.get("state", "Ready") == "Ready"


def not_ready_until_probed(content: dict[str, Any]) -> dict[str, Any]:
    """A new Dataplane's inbounds with a `serviceProbe` start not ready, so that no caller is sent to an
    application before its first probe passes (Kuma's dataplane manager on create; HDS marks them ready)."""
    inbounds = (content.get("networking") or {}).get("inbound") or []
    if not any(isinstance(ib, dict) and ib.get("serviceProbe") is not None for ib in inbounds):
        return content
    out = copy.deepcopy(content)
    for inbound in out["networking"]["inbound"]:
        if inbound.get("serviceProbe") is not None:
            inbound["state"] = "NotReady"
            inbound["health"] = {"ready": False}   # for clients of Kuma 2.5 and older, as Kuma writes it
    return out




def keep_probed_health(content: dict[str, Any], stored: dict[str, Any]) -> dict[str, Any]:
    """`content` (kuma-dp registering its proxy again) with the health the control plane found for its probed
    inbounds where inbound and application are the same as stored: a restarted kuma-dp does not send
    callers to an application whose probe failed, and an unchanged definition is not written again. Any other
    probed inbound starts not ready, as in a new Dataplane."""
    def probed(dp: dict[str, Any]) -> dict[tuple, dict[str, Any]]:
        networking = dp.get("networking") or {}
        return {(ib.get("address") or networking.get("address"), uint(ib.get("port")), workload(networking, ib)): ib
                for ib in networking.get("inbound") or []
                if isinstance(ib, dict) and ib.get("serviceProbe") is not None}
    out = not_ready_until_probed(content)
    if out is content:
        return content   # nothing probed
    before = probed(stored)
    for port_key, inbound in probed(out).items():
        if port_key in before:
            for field in ("health", "state"):
                inbound.pop(field, None)
                if field in before[port_key]:
                    inbound[field] = copy.deepcopy(before[port_key][field])
    return out


def warnings(content: dict[str, Any]) -> list[str]:
    """What a Dataplane write stores that no proxy gets (the `warnings` of its PUT)."""
    networking = content.get("networking") or {}
    tp = networking.get("transparentProxying") or {}
    out = []
    if tp.get("directAccessServices"):
        out.append("networking.transparentProxying.directAccessServices is stored but not yet applied to proxies by "
                   "this control plane")
    refs = (tp.get("reachableBackends") or {}).get("refs") or []
    if any(isinstance(r, dict) and r.get("kind") not in ("MeshService", "MeshExternalService") for r in refs):
        out.append("networking.transparentProxying.reachableBackends: refs of a kind other than MeshService and "
                   "MeshExternalService are stored but not applied (a single-zone control plane has no "
                   "MeshMultiZoneService outbounds)")
    for i, ob in enumerate(networking.get("outbound") or []):
        ref = (ob.get("backendRef") if isinstance(ob, dict) else None) or {}
        if ref.get("kind") == "MeshService" and (ref.get("labels") or not ref.get("port")):
            out.append(f"networking.outbound[{i}].backendRef: a MeshService by labels or without a port is not "
                       "resolved to MeshService resources by this control plane: the outbound goes to the "
                       "kuma.io/service named by `name`")
    if (tp.get("redirectPortInbound") or tp.get("redirectPortOutbound")) and networking.get("outbound"):
        out.append("networking.outbound is not used with transparentProxying (as in Kuma): the proxy gets an "
                   "outbound for every service of the mesh at its virtual IP")
    return out
