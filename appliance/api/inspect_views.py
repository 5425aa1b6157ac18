"""Kuma's inspect routes: a proxy's rules, a policy's proxies, a MeshService's proxies, service and global insights.

Thin handlers: the store in, rules_view / insights_view out. Reads are open to every user, as in Kuma
(its access rules guard only the Envoy admin views: config dump, stats, clusters).
"""
from __future__ import annotations

from typing import Any, Callable

import falcon

from appliance import policies as policy_modules
from appliance.api import gateway_view, insights_view, rules_view
from appliance.api.errors import KumaError, bad_request
from appliance.api.inspect import dataplanes_with_insights, mesh_insight
from appliance.api.resources import _page, _reply, next_link
from appliance.core.manager import ResourceManager
from appliance.core.resources import registry
from appliance.core.resources.model import Resource
from appliance.model import meshservices
from appliance.model.proxy import Policy
from appliance.policies import _rules
from appliance.store import ListQuery
from appliance.store.base import now_rfc3339
from appliance.xds.snapshot import build_snapshot, mesh_gateways, proxy_from_dataplane

# (kind, is_from_as_rules) in Kuma's plugin order: the order of `rules` in `_rules`
KINDS: tuple[tuple[str, bool], ...] = tuple(
    (m.KIND, m.TARGETS["is_from_as_rules"]) for m in sorted(policy_modules.ALL, key=lambda m: m.ORDER))


def _require_mesh(manager: ResourceManager, mesh: str) -> Resource:
    found = manager.get("Mesh", "", mesh)
    if found is None:
        raise KumaError(404, "Failed to retrieve Mesh", "Not found")
    return found


def _require(manager: ResourceManager, kind: str, mesh: str, name: str, title: str) -> Resource:
    """The resource of a mesh, or Kuma's 404 for the mesh or for it (`title` as Kuma words it per view)."""
    _require_mesh(manager, mesh)
    found = manager.get(kind, mesh, name)
    if found is None:
        raise KumaError(404, title, "Not found")
    return found


def mesh_policies(manager: ResourceManager, mesh: str) -> rules_view.MeshPolicies:
    """Every policy of the mesh as the snapshot holds them (by kind, sorted by name), with their labels."""
    by_kind: dict[str, tuple[Policy, ...]] = {}
    labels: dict[tuple[str, str], dict[str, str]] = {}
    for kind in registry.POLICY_MODULES:
        items = sorted(manager.list(ListQuery(type=kind, mesh=mesh)).items, key=lambda r: r.name)
        by_kind[kind] = tuple(Policy(kind, r.name, r.spec) for r in items)
        labels.update({(kind, r.name): dict(r.labels) for r in items})
    services = tuple(r.name for r in manager.list(ListQuery(type="MeshService", mesh=mesh)).items)
    return rules_view.MeshPolicies(mesh, by_kind, labels, services, mesh_gateways(manager.store, mesh))


def _dataplane_meta(dp: Resource) -> dict[str, Any]:
    return rules_view.meta("Dataplane", dp.mesh, dp.name, dp.labels)


class DataplaneRules:
    """`GET /meshes/{mesh}/dataplanes/{name}/_rules`."""

    def __init__(self, manager: ResourceManager) -> None:
        self.manager = manager

    def on_get(self, req: falcon.Request, resp: falcon.Response, mesh: str, name: str) -> None:
        dp = _require(self.manager, "Dataplane", mesh, name, "Could not retrieve Dataplane")
        _reply(resp, rules_view.inspect_rules(KINDS, proxy_from_dataplane(dp), mesh_policies(self.manager, mesh),
                                              _dataplane_meta(dp)))


def _dataplanes_page(req: falcon.Request, resp: falcon.Response, manager: ResourceManager, mesh: str,
                     hits: Callable[[Resource], bool]) -> None:
    """matchingDataplanesForFilter: the mesh's Dataplanes that `hits`, filtered by `name`, one page."""
    size, offset = _page(req)
    page = manager.list(ListQuery(type="Dataplane", mesh=mesh, name_contains=req.get_param("name") or "",
                                  predicate=hits, offset=offset, size=size))
    body: dict[str, Any] = {"items": [_dataplane_meta(d) for d in page.items], "total": page.total}
    link = next_link(req, page.next_offset)
    if link:
        body["next"] = link
    _reply(resp, body)


def policy_hits(manager: ResourceManager, found: Resource) -> Callable[[Resource], bool]:
    """Whether the stored policy's top-level targetRef selects a Dataplane (of the policy's mesh)."""
    policy = Policy(found.type, found.name, found.spec)
    routes, gateways = _routes(manager, found.mesh), mesh_gateways(manager.store, found.mesh)
    return lambda dp: rules_view.policy_selects(policy, proxy_from_dataplane(dp), routes, gateways)


class PolicyDataplanes:
    """`GET /meshes/{mesh}/{policy-path}/{name}/_resources/dataplanes`: the proxies the policy's top-level
    targetRef selects."""

    def __init__(self, manager: ResourceManager, kind: str) -> None:
        self.manager = manager
        self.kind = kind

    def on_get(self, req: falcon.Request, resp: falcon.Response, mesh: str, name: str) -> None:
        found = _require(self.manager, self.kind, mesh, name, "Could not retrieve policy")
        _dataplanes_page(req, resp, self.manager, mesh, policy_hits(self.manager, found))


class MeshServiceDataplanes:
    """`GET /meshes/{mesh}/meshservices/{name}/_dataplanes` (and the older `_resources/dataplanes`)."""

    def __init__(self, manager: ResourceManager) -> None:
        self.manager = manager

    def on_get(self, req: falcon.Request, resp: falcon.Response, mesh: str, name: str) -> None:
        found = _require(self.manager, "MeshService", mesh, name, "Could not retrieve policy")
        spec = found.spec
        _dataplanes_page(req, resp, self.manager, mesh, lambda dp: meshservices.selects(
            spec, dp.name, dp.labels, (i.tags for i in proxy_from_dataplane(dp).inbounds)))


# --- the older views kumactl reads (Kuma's inspect_endpoints.go) ---------------------------------

def _resource_meta(res: Resource) -> dict[str, Any]:
    """rest.From.Meta: labels only when there are some."""
    out: dict[str, Any] = {"type": res.type, "mesh": res.mesh, "name": res.name,
                           "creationTime": res.creation_time, "modificationTime": res.modification_time}
    if res.labels:
        out["labels"] = dict(res.labels)
    return out


_DATAPLANE_ATTACHMENT = {"type": "dataplane", "name": "", "service": ""}


def _routes(manager: ResourceManager, mesh: str) -> tuple[Policy, ...]:
    return tuple(Policy("MeshHTTPRoute", r.name, r.spec)
                 for r in manager.list(ListQuery(type="MeshHTTPRoute", mesh=mesh)).items)


class DataplanePolicies:
    """`GET /meshes/{mesh}/dataplanes/{name}/policies` (what `kumactl inspect dataplane NAME` prints): the
    policies whose top-level targetRef selects the proxy, by type. Kuma attaches targetRef policies to the
    proxy as a whole (the `dataplane` attachment); only its legacy policies had inbound/outbound ones."""

    def __init__(self, manager: ResourceManager) -> None:
        self.manager = manager

    def on_get(self, req: falcon.Request, resp: falcon.Response, mesh: str, name: str) -> None:
        dp = _require(self.manager, "Dataplane", mesh, name, "Could not get MatchedPolicies")
        proxy, routes = proxy_from_dataplane(dp), _routes(self.manager, mesh)
        if proxy.builtin_gateway:
            snapshot = build_snapshot(self.manager.store, mesh, 0)
            _reply(resp, gateway_view.gateway_dataplane(snapshot, proxy) if snapshot else {})
            return
        matched: dict[str, list[dict[str, Any]]] = {}
        for kind, _ in KINDS:
            by_name = {r.name: r for r in self.manager.list(ListQuery(type=kind, mesh=mesh)).items}
            hits = [p for p in (Policy(kind, r.name, r.spec) for r in by_name.values())
                    if rules_view.policy_selects(p, proxy, routes)]
            if hits:
                matched[kind] = [_resource_meta(by_name[p.name]) for p in _rules.sort_policies(hits)]
        items = [{**_DATAPLANE_ATTACHMENT, "matchedPolicies": dict(sorted(matched.items()))}] if matched else []
        _reply(resp, {"kind": "SidecarDataplane", "total": len(items), "items": items})


class PolicyAttachments:
    """`GET /meshes/{mesh}/{policy-path}/{name}/dataplanes` (what `kumactl inspect <policy> NAME` prints): each
    proxy the policy selects, attached as a whole. An unknown policy hits nobody (as in Kuma)."""

    def __init__(self, manager: ResourceManager, kind: str) -> None:
        self.manager = manager
        self.kind = kind

    def on_get(self, req: falcon.Request, resp: falcon.Response, mesh: str, name: str) -> None:
        _require_mesh(self.manager, mesh)
        found = self.manager.get(self.kind, mesh, name)
        items = []
        if found is not None:
            policy, routes = Policy(self.kind, found.name, found.spec), _routes(self.manager, mesh)
            for dp in self.manager.list(ListQuery(type="Dataplane", mesh=mesh)).items:
                if rules_view.policy_selects(policy, proxy_from_dataplane(dp), routes):
                    items.append({"kind": "SidecarDataplane", "dataplane": {"mesh": dp.mesh, "name": dp.name},
                                  "attachments": [dict(_DATAPLANE_ATTACHMENT)]})
        _reply(resp, {"total": len(items), "items": items})


class MeshGatewayRules:
    """`GET /meshes/{mesh}/meshgateways/{name}/_rules`: the rules of a builtin gateway proxy this MeshGateway
    would configure, one with the tags of its first selector (as Kuma computes them)."""

    def __init__(self, manager: ResourceManager) -> None:
        self.manager = manager

    def on_get(self, req: falcon.Request, resp: falcon.Response, mesh: str, name: str) -> None:
        found = _require(self.manager, "MeshGateway", mesh, name, "Could not retrieve MeshGateway")
        selectors = found.content.get("selectors") or []
        if not selectors:
            raise bad_request("no selectors on MeshGateway this is not supported")
        tags = (selectors[0] or {}).get("match") or {}
        dp = Resource("Dataplane", mesh, name, {"networking": {"gateway": {"type": "BUILTIN", "tags": tags}}},
                      labels=dict(found.labels))
        meta = rules_view.meta("MeshGateway", mesh, name, found.labels)
        _reply(resp, rules_view.inspect_rules(KINDS, proxy_from_dataplane(dp), mesh_policies(self.manager, mesh),
                                              meta))


class MeshGatewayDataplanes:
    """`GET /meshes/{mesh}/meshgateways/{name}/dataplanes` (what `kumactl inspect meshgateway NAME` prints): the
    builtin gateway proxies the MeshGateway configures."""

    def __init__(self, manager: ResourceManager) -> None:
        self.manager = manager

    def on_get(self, req: falcon.Request, resp: falcon.Response, mesh: str, name: str) -> None:
        _require(self.manager, "MeshGateway", mesh, name, "Could not find MeshGateway")
        [gateway] = [g for g in mesh_gateways(self.manager.store, mesh) if g.name == name]
        items = [{"dataplane": {"mesh": dp.mesh, "name": dp.name}}
                 for dp in self.manager.list(ListQuery(type="Dataplane", mesh=mesh)).items
                 if gateway_view.gateway_selects(gateway, proxy_from_dataplane(dp))]
        _reply(resp, {"total": len(items), "items": items})


# --- insights ------------------------------------------------------------------------------------

def mesh_services(manager: ResourceManager, mesh: Resource,
                  dataplanes: list[tuple[Resource, Resource | None]] | None = None) -> list[dict[str, Any]]:
    """Every service of a mesh as Kuma's ServiceInsight items, sorted by name.
    `dataplanes`: dataplanes_with_insights when the caller has read them already."""
    pairs = dataplanes_with_insights(manager, mesh.name) if dataplanes is None else dataplanes
    externals = manager.list(ListQuery(type="ExternalService", mesh=mesh.name)).items
    stats = insights_view.service_stats(pairs, externals)
    return [insights_view.service_insight(mesh, name, stats[name]) for name in sorted(stats)]


def _service_types(req: falcon.Request) -> set[str]:
    raw = req.get_param("type") or ""
    wanted = {t.strip().lower() for t in raw.split(",")} if raw else set()
    if wanted - set(insights_view.SERVICE_TYPES):
        raise bad_request("bad request: unsupported service type")
    return wanted


class ServiceInsights:
    """`GET /service-insights` and `/meshes/{mesh}/service-insights`: one item per service, paged."""

    def __init__(self, manager: ResourceManager) -> None:
        self.manager = manager

    def on_get(self, req: falcon.Request, resp: falcon.Response, mesh: str = "") -> None:
        meshes = [_require_mesh(self.manager, mesh)] if mesh else \
            sorted(self.manager.list(ListQuery(type="Mesh")).items, key=lambda m: m.name)
        wanted = _service_types(req)
        contains = req.get_param("name") or ""
        items = [s for m in meshes for s in mesh_services(self.manager, m)
                 if contains in s["name"] and (not wanted or s.get("serviceType", "internal") in wanted)]
        size, offset = _page(req)
        page = items[offset:offset + size]
        more = offset + size < len(items)
        _reply(resp, {"total": len(items), "items": page, "next": next_link(req, offset + size if more else None)})


class ServiceInsightItem:
    """`GET /meshes/{mesh}/service-insights/{name}`: a service nobody serves is offline with no proxies."""

    def __init__(self, manager: ResourceManager) -> None:
        self.manager = manager

    def on_get(self, req: falcon.Request, resp: falcon.Response, mesh: str, name: str) -> None:
        found = _require_mesh(self.manager, mesh)
        item = next((s for s in mesh_services(self.manager, found) if s["name"] == name), None)
        _reply(resp, item or insights_view.service_insight(found, name, None))


class GlobalInsight:
    """`GET /global-insight`."""

    def __init__(self, manager: ResourceManager) -> None:
        self.manager = manager

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        meshes = self.manager.list(ListQuery(type="Mesh")).items
        insights = [mesh_insight(self.manager, m) for m in meshes]
        services = [s for m in meshes for s in mesh_services(self.manager, m)]
        egresses = [insights_view.is_online(self.manager.get("ZoneEgressInsight", "", ze.name))
                    for ze in self.manager.list(ListQuery(type="ZoneEgress")).items]
        _reply(resp, insights_view.global_insight(now_rfc3339(), insights, services, egresses))


def add_routes(app: falcon.App, manager: ResourceManager) -> None:
    app.add_route("/meshes/{mesh}/dataplanes/{name}/_rules", DataplaneRules(manager))
    app.add_route("/meshes/{mesh}/dataplanes/{name}/policies", DataplanePolicies(manager))
    for kind in registry.POLICY_MODULES:
        path = registry.get(kind).path
        app.add_route(f"/meshes/{{mesh}}/{path}/{{name}}/_resources/dataplanes", PolicyDataplanes(manager, kind))
        app.add_route(f"/meshes/{{mesh}}/{path}/{{name}}/dataplanes", PolicyAttachments(manager, kind))
    app.add_route("/meshes/{mesh}/meshgateways/{name}/_rules", MeshGatewayRules(manager))
    app.add_route("/meshes/{mesh}/meshgateways/{name}/dataplanes", MeshGatewayDataplanes(manager))
    app.add_route("/meshes/{mesh}/meshservices/{name}/_dataplanes", MeshServiceDataplanes(manager))
    app.add_route("/meshes/{mesh}/meshservices/{name}/_resources/dataplanes", MeshServiceDataplanes(manager))
    app.add_route("/service-insights", ServiceInsights(manager))
    app.add_route("/meshes/{mesh}/service-insights", ServiceInsights(manager))
    app.add_route("/meshes/{mesh}/service-insights/{name}", ServiceInsightItem(manager))
    app.add_route("/global-insight", GlobalInsight(manager))
