"""What the inspect API shows of a builtin gateway proxy (Kuma 2.14's api-server inspect_endpoints.go for a
gateway Dataplane): pure functions over the generators' model, reading what the generators read, so that
what they show is what the proxy gets.

- `/meshes/{m}/dataplanes/{n}/policies` answers a `MeshGatewayDataplane`: the MeshGateway that configures the
  proxy, and per port the hosts, the routes on each host (named by the policies whose rules they hold, sorted,
  joined with `_`) and where each route sends traffic. The per-destination `policies` are Kuma's legacy
  policies (HealthCheck, Timeout, ...), which this control plane does not have: always `{}`; the same for the
  gateway-wide TrafficLog / TrafficTrace (left out, as Kuma leaves out an empty map).
- `/meshes/{m}/meshgateways/{n}/dataplanes`: the builtin gateway proxies a MeshGateway configures.

Where we differ from Kuma: Kuma lists a port's routes from its Envoy route entries, so a destination shows
once per entry that sends to it (a PathPrefix match is two entries: the prefix and the exact path); we list
each destination of a route once.
"""
from __future__ import annotations

from typing import Any, Sequence

from appliance.model.proxy import GatewayListener, MeshGateway, MeshSnapshot, Proxy
from appliance.policies import _rules
from appliance.policies._backends import Backend
from appliance.policies._gateway import select_gateway, to_entries_by_policy
from appliance.policies.meshhttproute.gateway import hostname_order, virtual_hosts
from appliance.policies.meshtcproute.gateway import listener_backends
from appliance.xds.generate.gateway import by_port


def _destination(found: Backend) -> dict[str, Any]:
    return {"tags": {_rules.SERVICE_TAG: found.service, **dict(found.tags)}, "policies": {}}


def _tags_key(tags: dict[str, str]) -> str:
    """tags.Tags.String(): what Kuma sorts a route's destinations by."""
    return ",".join(f"{k}={v}" for k, v in sorted(tags.items()))


def _route(origins: Sequence[str], backends: Sequence[Backend]) -> list[dict[str, Any]]:
    """One route entry (or none: Kuma lists only routes that send somewhere, not a redirect)."""
    destinations = list({_tags_key(d["tags"]): d for d in map(_destination, backends)}.values())
    if not destinations:
        return []
    return [{"route": "_".join(sorted(origins)),
             "destinations": sorted(destinations, key=lambda d: _tags_key(d["tags"]))}]


def _http_hosts(snapshot: MeshSnapshot, proxy: Proxy, gateway: MeshGateway, protocol: str,
                listeners: list[GatewayListener]) -> list[dict[str, Any]]:
    # as generated (xds/generate/gateway.py): an HTTP port's listeners share virtual hosts, an HTTPS port has
    # them per listener (each on its own filter chain)
    groups = [listeners] if protocol == "HTTP" else [[l] for l in sorted(listeners, key=lambda l: hostname_order(
        l.hostname))]
    return [{"hostName": host.hostname, "routes": _route(host.origins, host.routes.backends)}
            for group in groups for host in virtual_hosts(snapshot, proxy, gateway, group)]


def _tcp_hosts(snapshot: MeshSnapshot, proxy: Proxy, gateway: MeshGateway,
               listeners: list[GatewayListener]) -> list[dict[str, Any]]:
    routes = snapshot.policies.get("MeshTCPRoute", ())
    out = []
    for listener in listeners:
        origins = {name for name, _ in to_entries_by_policy(routes, proxy, gateway, listener)}
        out.append({"hostName": listener.hostname,
                    "routes": _route(sorted(origins), listener_backends(snapshot, proxy, gateway, listener))})
    return out


def gateway_dataplane(snapshot: MeshSnapshot, proxy: Proxy) -> dict[str, Any]:
    """Kuma's GatewayDataplaneInspectResult (with its `kind`) for a builtin gateway proxy. Without a MeshGateway
    for it, Kuma's empty result: no gateway name, no listeners."""
    gateway = select_gateway(snapshot.gateways, proxy.gateway_tags or {})
    if gateway is None:
        return {"kind": "MeshGatewayDataplane", "gateway": {"mesh": "", "name": ""}, "listeners": []}
    listeners = []
    for (protocol, port), served in sorted(by_port(gateway).items(), key=lambda item: item[0][1]):
        if protocol in ("HTTP", "HTTPS"):
            hosts = _http_hosts(snapshot, proxy, gateway, protocol, served)
        else:
            hosts = _tcp_hosts(snapshot, proxy, gateway, served)
        listeners.append({"port": port, "protocol": protocol,
                          "hosts": sorted(hosts, key=lambda h: h["hostName"])})
    return {"kind": "MeshGatewayDataplane", "gateway": {"mesh": snapshot.mesh, "name": gateway.name},
            "listeners": listeners}


def gateway_selects(gateway: MeshGateway, proxy: Proxy) -> bool:
    """Whether the MeshGateway configures this proxy: a builtin gateway whose tags its selectors pick best."""
    if not proxy.builtin_gateway:
        return False
    return select_gateway((gateway,), proxy.gateway_tags or {}) is not None
