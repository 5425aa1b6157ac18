"""Kuma 2.14's views of one proxy by KRI, served when its mesh's `meshServices.mode` is Exclusive:

- `/meshes/{m}/dataplanes/{n}/_layout`: its inbounds, the outbounds it gets to MeshService ports and
  MeshExternalServices, and its zone proxy listeners, each with its KRI;
- `.../_policies`: the proxy-wide confs; `.../_outbounds/{kri}/_policies` and `.../_inbounds/{kri}/_policies`:
  what the policies configure on one outbound or inbound (rules_view).

Built from the snapshot the proxy's resources are generated from, and its outbounds as generation resolves them
(xds.generate.resolve_outbounds), so `_layout` lists what the proxy gets: Kuma lists every backend the proxy may
reach, which here is only what has a VIP (a transparent proxy) or a Dataplane outbound by `backendRef`.
`.../_outbounds/{kri}/_routes` and `.../_routes/{kri}/_policies`: the routes of an outbound and what the other
policies configure on the rules of one of them.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable

import falcon

from appliance.api import codec, rules_view
from appliance.api.errors import KumaError, bad_request
from appliance.api.inspect_views import KINDS, _require_mesh
from appliance.api.resources import _reply
from appliance.core.manager import ResourceManager
from appliance.core.resources import registry
from appliance.core.resources.model import Resource
from appliance.gocompat import go_quote
from appliance.model import meshservices
from appliance.model.proxy import MeshSnapshot, Proxy
from appliance.xds.generate import resolve_outbounds
from appliance.xds.snapshot import build_snapshot, proxy_from_dataplane

_LISTENER_NAMES = {"ZoneIngress": "self_zoneingress_dp_", "ZoneEgress": "self_zoneegress_dp_"}


@dataclass(frozen=True)
class Kri:
    short_name: str
    mesh: str
    zone: str
    namespace: str
    name: str
    section: str


def parse_kri(text: str) -> Kri:
    """kri.FromString, refusing as Kuma's handlers do (a 400 with its words)."""
    parts = text.split("_")
    if len(parts) < 7:
        raise bad_request(f"bad request: invalid identifier string: {go_quote(text)}")
    if parts[0] != "kri":
        raise bad_request(f"bad request: identifier must start with 'kri': {go_quote(text)}")
    if parts[1] not in registry.BY_SHORT_NAME:
        raise bad_request(f"bad request: unknown short name of resource type: {go_quote(parts[1])}")
    return Kri(parts[1], parts[2], parts[3], parts[4], parts[5], "".join(parts[6:]))


@dataclass(frozen=True)
class OutboundTarget:
    """What an outbound to a real resource goes to: a MeshService port or a MeshExternalService."""
    kri: str
    service: str        # its legacy name: the outbound's `service`, its cluster
    port: int
    protocol: str


def outbound_targets(snapshot: MeshSnapshot) -> dict[str, OutboundTarget]:
    """Every MeshService port and MeshExternalService of the mesh, by its legacy name."""
    out = {d.name: OutboundTarget(d.kri, d.name, d.port, d.protocol) for d in snapshot.destinations.values()}
    for m in snapshot.mesh_external_services.values():
        out[m.destination] = OutboundTarget(m.kri, m.destination, m.port, m.protocol.lower())
    return out


def _section(entry: dict[str, Any]) -> str:
    """GetSectionName: its name, else its port."""
    return str(entry.get("name") or entry.get("port") or 0)


def layout(dp: Resource, proxy: Proxy, snapshot: MeshSnapshot) -> dict[str, Any]:
    """Kuma's DataplaneNetworkingLayout of a Dataplane; `proxy`: its outbounds resolved as generated."""
    base = codec.kri(registry.get("Dataplane"), dp) or ""
    net = dp.content.get("networking") or {}
    inbounds = [{"kri": base + _section(i), "port": int(i.get("port") or 0),
                 "protocol": str(i.get("protocol") or (i.get("tags") or {}).get("kuma.io/protocol") or ""),
                 "proxyResourceName": f"self_inbound_dp_{_section(i)}"} for i in net.get("inbound") or []]
    listeners = [{"kri": base + _section(entry), "port": int(entry.get("port") or 0),
                  "proxyResourceName": _LISTENER_NAMES[entry["type"]] + _section(entry), "type": entry["type"]}
                 for entry in net.get("listeners") or [] if entry.get("type") in _LISTENER_NAMES]
    targets = outbound_targets(snapshot)
    outbounds = {t.kri: {"kri": t.kri, "port": t.port, "protocol": t.protocol, "proxyResourceName": t.kri}
                 for o in proxy.outbounds if (t := targets.get(o.service)) is not None}
    return {"inbounds": inbounds, "kri": base, "labels": dict(dp.labels), "listeners": listeners,
            "outbounds": [outbounds[k] for k in sorted(outbounds)]}


def policies_of(snapshot: MeshSnapshot) -> rules_view.MeshPolicies:
    """The mesh's policies as the snapshot holds them, what the plugins read."""
    labels = {(p.kind, p.name): dict(p.labels) for ps in snapshot.policies.values() for p in ps}
    services = tuple(sorted({d.service for d in snapshot.destinations.values()}))
    return rules_view.MeshPolicies(snapshot.mesh, dict(snapshot.policies), labels, services, snapshot.gateways)


def _kri_of(policies: rules_view.MeshPolicies) -> Callable[[str, str], str]:
    def kri(kind: str, name: str) -> str:
        resource = Resource(kind, policies.mesh, name, {}, labels=policies.labels.get((kind, name)) or {})
        return codec.kri(registry.get(kind), resource) or ""
    return kri


class _ProxyView:
    """What every view here does first, in Kuma's order for its handler of `_policies` and the views under it:
    the Dataplane (404), then the mesh's mode (400)."""

    endpoint = "_policies"
    not_found = "Could not retrieve Dataplane"

    def __init__(self, manager: ResourceManager) -> None:
        self.manager = manager

    def _dataplane(self, mesh: str, name: str) -> Resource:
        dp = self.manager.get("Dataplane", mesh, name)
        if dp is None:
            raise KumaError(404, self.not_found, "Not found")
        return dp

    def _exclusive(self, found: Resource) -> None:
        if meshservices.mode(found.content) != "Exclusive":
            raise bad_request(f"bad request: can't use {self.endpoint} endpoint without meshService enabled")

    def _checked(self, mesh: str, name: str) -> Resource:
        """The Dataplane, once the mesh, the Dataplane and the mode are checked."""
        found = _require_mesh(self.manager, mesh)
        dp = self._dataplane(mesh, name)
        self._exclusive(found)
        return dp

    def _load(self, mesh: str, name: str) -> tuple[Resource, MeshSnapshot, Proxy]:
        dp = self._checked(mesh, name)
        snapshot = build_snapshot(self.manager.store, mesh, 0)
        if snapshot is None:   # the mesh went away meanwhile
            raise KumaError(404, "Failed to retrieve Mesh", "Not found")
        return dp, snapshot, resolve_outbounds(snapshot, proxy_from_dataplane(dp))


class DataplaneLayout(_ProxyView):
    """`GET /meshes/{mesh}/dataplanes/{name}/_layout`."""

    endpoint = "_layout"
    not_found = "Failed to retrieve Dataplane"

    def _checked(self, mesh: str, name: str) -> Resource:
        self._exclusive(_require_mesh(self.manager, mesh))   # Kuma checks the mode before it reads the Dataplane
        return self._dataplane(mesh, name)

    def on_get(self, req: falcon.Request, resp: falcon.Response, mesh: str, name: str) -> None:
        dp, snapshot, proxy = self._load(mesh, name)
        _reply(resp, layout(dp, proxy, snapshot))


class ProxyPolicies(_ProxyView):
    """`GET /meshes/{mesh}/dataplanes/{name}/_policies`."""

    def on_get(self, req: falcon.Request, resp: falcon.Response, mesh: str, name: str) -> None:
        _, snapshot, proxy = self._load(mesh, name)
        policies = policies_of(snapshot)
        _reply(resp, rules_view.proxy_policies(KINDS, proxy, policies, _kri_of(policies)))


class _OutboundView(_ProxyView):
    """A view of one outbound, by the KRI of its MeshService port or MeshExternalService: computed whether or
    not this proxy has that outbound, as in Kuma, with `to` entries of kind MeshService resolved against every
    port of the mesh (as for a transparent proxy)."""

    def _outbound(self, mesh: str, name: str, outbound_kri: str
                  ) -> tuple[Proxy, rules_view.MeshPolicies, str, Callable[[str, str], str]]:
        """The proxy, the mesh's policies, the outbound's service ("" when the KRI names none) and the KRIs."""
        _, snapshot, proxy = self._load(mesh, name)
        parse_kri(outbound_kri)
        service = next((t.service for t in outbound_targets(snapshot).values() if t.kri == outbound_kri), "")
        policies = policies_of(snapshot)
        return replace(proxy, destinations=snapshot.destinations or None), policies, service, _kri_of(policies)


class OutboundPolicies(_OutboundView):
    """`GET /meshes/{mesh}/dataplanes/{name}/_outbounds/{kri}/_policies`."""

    def on_get(self, req: falcon.Request, resp: falcon.Response, mesh: str, name: str, outbound_kri: str) -> None:
        proxy, policies, service, kri = self._outbound(mesh, name, outbound_kri)
        _reply(resp, rules_view.outbound_policies(KINDS, proxy, policies, service, kri))


class OutboundRoutes(_OutboundView):
    """`GET /meshes/{mesh}/dataplanes/{name}/_outbounds/{kri}/_routes`."""

    def on_get(self, req: falcon.Request, resp: falcon.Response, mesh: str, name: str, outbound_kri: str) -> None:
        proxy, policies, service, kri = self._outbound(mesh, name, outbound_kri)
        _reply(resp, rules_view.outbound_routes(KINDS, proxy, policies, service, kri))


class RoutePolicies(_OutboundView):
    """`GET /meshes/{mesh}/dataplanes/{name}/_outbounds/{kri}/_routes/{route-kri}/_policies`."""

    def on_get(self, req: falcon.Request, resp: falcon.Response, mesh: str, name: str, outbound_kri: str,
               route_kri: str) -> None:
        proxy, policies, service, kri = self._outbound(mesh, name, outbound_kri)
        route = parse_kri(route_kri).name
        _reply(resp, rules_view.route_policies(KINDS, proxy, policies, service, route, kri))


class InboundPolicies(_ProxyView):
    """`GET /meshes/{mesh}/dataplanes/{name}/_inbounds/{kri}/_policies`: the inbound whose name (else port) is
    the KRI's section; none is Kuma's 500 ("inbound not found")."""

    def on_get(self, req: falcon.Request, resp: falcon.Response, mesh: str, name: str, inbound_kri: str) -> None:
        _, snapshot, proxy = self._load(mesh, name)
        section = parse_kri(inbound_kri).section
        inbound = next((i for i in proxy.inbounds if (i.name or str(i.port)) == section), None)
        if inbound is None:
            raise KumaError(500, "Failed building response", "Internal Server Error")
        policies = policies_of(snapshot)
        _reply(resp, rules_view.inbound_policies(KINDS, proxy, inbound, policies, _kri_of(policies)))


def add_routes(app: falcon.App, manager: ResourceManager) -> None:
    base = "/meshes/{mesh}/dataplanes/{name}"
    app.add_route(f"{base}/_layout", DataplaneLayout(manager))
    app.add_route(f"{base}/_policies", ProxyPolicies(manager))
    app.add_route(f"{base}/_outbounds/{{outbound_kri}}/_policies", OutboundPolicies(manager))
    app.add_route(f"{base}/_inbounds/{{inbound_kri}}/_policies", InboundPolicies(manager))
    app.add_route(f"{base}/_outbounds/{{outbound_kri}}/_routes", OutboundRoutes(manager))
    app.add_route(f"{base}/_outbounds/{{outbound_kri}}/_routes/{{route_kri}}/_policies", RoutePolicies(manager))
