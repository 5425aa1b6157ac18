"""Dataplane overviews (dataplane + its insight) and the xDS config a proxy gets (`_config`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import falcon
from google.protobuf.json_format import MessageToDict

from appliance.api import auth, codec, insights_view
from appliance.api.errors import KumaError
from appliance.api.resources import ResourceEndpoints, _page, _reply
from appliance.core.manager import ResourceManager
from appliance.core.resources import registry
from appliance.core.resources.mesh import CaUnavailable, ca_pair, enabled_backend
from appliance.model.proxy import GenerationError
from appliance.store import ListQuery


class XdsInspector(Protocol):
    def config_for(self, mesh: str, name: str) -> dict[str, dict[str, Any]]: ...


@dataclass(frozen=True)
class _Overview:
    """A proxy type whose overview is the proxy plus its insight (DataplaneOverview, ZoneEgressOverview)."""
    type: str
    insight: str
    kind: str          # "DataplaneOverview"
    spec_key: str      # "dataplane"
    insight_key: str   # "dataplaneInsight"


DATAPLANE = _Overview("Dataplane", "DataplaneInsight", "DataplaneOverview", "dataplane", "dataplaneInsight")
ZONE_EGRESS = _Overview("ZoneEgress", "ZoneEgressInsight", "ZoneEgressOverview", "zoneEgress", "zoneEgressInsight")


def _overview(manager: ResourceManager, kind: _Overview, proxy: Any) -> dict[str, Any]:
    item = codec.present(registry.get(kind.type), proxy)
    body = {k: item.pop(k) for k in list(item) if k not in ("type", "mesh", "name", "creationTime",
                                                             "modificationTime", "labels", "kri")}
    insight = manager.get(kind.insight, proxy.mesh, proxy.name)
    item["type"] = kind.kind
    item[kind.spec_key] = body
    item[kind.insight_key] = insight.content if insight else {"subscriptions": []}
    return item


class OverviewList:
    def __init__(self, manager: ResourceManager, kind: _Overview = DATAPLANE) -> None:
        self.manager = manager
        self.kind = kind
        self.endpoints = ResourceEndpoints(registry.get(kind.type), manager)

    def on_get(self, req: falcon.Request, resp: falcon.Response, mesh: str = "") -> None:
        if mesh:
            self.endpoints._check_mesh(mesh)
        size, offset = _page(req)
        page = self.manager.list(ListQuery(type=self.kind.type, mesh=mesh, name_contains=req.get_param("name") or "",
                                           offset=offset, size=size))
        next_link = None
        if page.next_offset is not None:
            next_link = f"{req.scheme}://{req.netloc}{req.path}?offset={page.next_offset}&size={size}"
        _reply(resp, {"total": page.total, "items": [_overview(self.manager, self.kind, d) for d in page.items],
                      "next": next_link})


class OverviewItem:
    def __init__(self, manager: ResourceManager, kind: _Overview = DATAPLANE) -> None:
        self.manager = manager
        self.kind = kind
        self.endpoints = ResourceEndpoints(registry.get(kind.type), manager)

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str, mesh: str = "") -> None:
        if mesh:
            self.endpoints._check_mesh(mesh)
        proxy = self.manager.get(self.kind.type, mesh, name)
        if proxy is None:
            raise KumaError(404, "Could not retrieve a resource", "Not found")
        _reply(resp, _overview(self.manager, self.kind, proxy))


class XdsConfig:
    def __init__(self, manager: ResourceManager, inspector: XdsInspector | None, type: str = "Dataplane") -> None:
        self.manager = manager
        self.inspector = inspector
        self.type = type
        self.endpoints = ResourceEndpoints(registry.get(type), manager)

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str, mesh: str = "") -> None:
        # Kuma checks viewConfigDump on Envoy's own config dump (.../xds), which we do not serve;
        # this is the config the proxy is sent, so the same people may see it.
        auth.require(req, auth.VIEW_CONFIG_DUMP, "envoy proxy info")
        if mesh:
            self.endpoints._check_mesh(mesh)
        if self.manager.get(self.type, mesh, name) is None:
            raise KumaError(404, "Could not retrieve a resource", "Not found")
        if self.inspector is None:
            raise KumaError(400, "Bad Request", "the DP server is not running on this control plane")
        try:
            xds = xds_config(self.inspector, mesh, name)
        except GenerationError as e:
            raise KumaError(500, "Could not generate the config of the proxy", str(e))
        _reply(resp, {"xds": xds})


def xds_config(inspector: XdsInspector, mesh: str, name: str) -> dict[str, list[dict[str, Any]]]:
    """The xDS resources the proxy gets now, as JSON by short type name (`_config`'s `xds`).
    Raises GenerationError when a policy cannot be applied (the proxy keeps its last good config)."""
    resources = inspector.config_for(mesh, name)
    return {type_url.rsplit(".", 1)[-1]: [
        {"@type": type_url, **MessageToDict(message, preserving_proto_field_name=False)}
        for _, message in sorted(items.items())] for type_url, items in sorted(resources.items())}


def dataplane_insights(manager: ResourceManager, mesh: str) -> dict[str, Any]:
    """The mesh's DataplaneInsights by name, in one read."""
    return {i.name: i for i in manager.list(ListQuery(type="DataplaneInsight", mesh=mesh)).items}


def dataplanes_with_insights(manager: ResourceManager, mesh: str) -> list[tuple[Any, Any]]:
    """The mesh's Dataplanes, each with its DataplaneInsight (or None), in two reads."""
    insights = dataplane_insights(manager, mesh)
    return [(d, insights.get(d.name)) for d in manager.list(ListQuery(type="Dataplane", mesh=mesh)).items]


def mesh_insight(manager: ResourceManager, mesh: Any,
                 dataplanes: list[tuple[Any, Any]] | None = None) -> dict[str, Any]:
    """Kuma's MeshInsight, computed from the store when asked (not a stored resource here).
    `dataplanes`: dataplanes_with_insights when the caller has read them already."""
    if dataplanes is None:
        dataplanes = dataplanes_with_insights(manager, mesh.name)
    statuses = [insights_view.dataplane_status(d, insight) for d, insight in dataplanes]
    counts = {"total": len(dataplanes), "online": statuses.count(insights_view.ONLINE),
              "offline": statuses.count(insights_view.OFFLINE),
              "partiallyDegraded": statuses.count(insights_view.PARTIALLY_DEGRADED)}
    policies: dict[str, dict[str, int]] = {}
    resources: dict[str, dict[str, int]] = {}
    for rtype in registry.ALL_TYPES:
        if rtype.scope != "Mesh" or rtype.read_only:
            continue
        total = manager.store.count(rtype.name, mesh.name)
        if not total:
            continue
        resources[rtype.name] = {"total": total}
        if rtype.policy:
            policies[rtype.name] = {"total": total}
    backend = ((mesh.content.get("mtls") or {}).get("enabledBackend")) or ""
    mtls: dict[str, Any] = {"issuedBackends": {backend: counts} if backend else {}}
    if problem := _mtls_problem(manager, mesh):
        mtls = {"issuedBackends": {}, "error": problem}   # ours: why the mesh's proxies fail closed
    return {"type": "MeshInsight", "name": mesh.name, "creationTime": mesh.creation_time,
            "modificationTime": mesh.modification_time, "lastSync": mesh.modification_time,
            "dataplanes": counts, "dataplanesByType": {"standard": counts},
            "policies": policies, "resources": resources,
            "mTLS": mtls}


def _mtls_problem(manager: ResourceManager, mesh: Any) -> str | None:
    """Why the enabled CA backend cannot be used (its proxies then get no listeners), or None."""
    backend = enabled_backend(mesh.content, "mtls")
    if backend is None:
        return None

    def secret_data(name: str) -> str | None:
        found = manager.get("Secret", mesh.name, name)
        return None if found is None else str(found.content.get("data") or "")
    try:
        ca_pair(mesh.name, backend, secret_data)
    except CaUnavailable as e:
        return str(e)
    return None


class MeshInsights:
    def __init__(self, manager: ResourceManager) -> None:
        self.manager = manager

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        meshes = self.manager.list(ListQuery(type="Mesh")).items
        _reply(resp, {"total": len(meshes), "items": [mesh_insight(self.manager, m) for m in meshes], "next": None})


class MeshInsightItem:
    def __init__(self, manager: ResourceManager) -> None:
        self.manager = manager

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        mesh = self.manager.get("Mesh", "", name)
        if mesh is None:
            raise KumaError(404, "Could not retrieve a resource", "Not found")
        _reply(resp, mesh_insight(self.manager, mesh))


def add_routes(app: falcon.App, manager: ResourceManager, inspector: XdsInspector | None) -> None:
    app.add_route("/meshes/{mesh}/dataplanes/_overview", OverviewList(manager))
    app.add_route("/meshes/{mesh}/dataplanes+insights", OverviewList(manager))
    app.add_route("/meshes/{mesh}/dataplanes/{name}/_overview", OverviewItem(manager))
    app.add_route("/meshes/{mesh}/dataplanes+insights/{name}", OverviewItem(manager))
    app.add_route("/meshes/{mesh}/dataplanes/{name}/_config", XdsConfig(manager, inspector))
    # Kuma serves zone egress overviews under both paths (zoneegressoverviews is the older one).
    app.add_route("/zoneegresses/_overview", OverviewList(manager, ZONE_EGRESS))
    app.add_route("/zoneegressoverviews", OverviewList(manager, ZONE_EGRESS))
    app.add_route("/zoneegresses/{name}/_overview", OverviewItem(manager, ZONE_EGRESS))
    app.add_route("/zoneegressoverviews/{name}", OverviewItem(manager, ZONE_EGRESS))
    app.add_route("/zoneegresses/{name}/_config", XdsConfig(manager, inspector, "ZoneEgress"))
    app.add_route("/mesh-insights", MeshInsights(manager))
    app.add_route("/mesh-insights/{name}", MeshInsightItem(manager))
