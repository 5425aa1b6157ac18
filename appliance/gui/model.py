"""What the GUI pages show, read through the same functions the REST API answers with.

No rule of its own: a proxy's status is insights_view's, a service's health is the ServiceInsight's,
the policies on a proxy are rules_view's `_rules`, the proxies a policy hits are `_resources/dataplanes`'.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from appliance.api import insights_view, rules_view
from appliance.api.inspect import dataplanes_with_insights, mesh_insight
from appliance.api.inspect_views import KINDS, mesh_policies, mesh_services, policy_hits
from appliance.core.manager import ResourceManager
from appliance.core.resources import registry
from appliance.core.resources.model import Resource, ResourceType
from appliance.insights.dataplane import latest_subscription, open_subscriptions
from appliance.store import ListQuery
from appliance.xds.snapshot import proxy_from_dataplane


@dataclass(frozen=True)
class ProxyRow:
    """One proxy (Dataplane or ZoneEgress) as the tables show it."""
    name: str
    status: str
    address: str
    services: tuple[str, ...]
    envoy: str
    kuma_dp: str
    cert_expiry: str
    last_connect: str
    instance: str     # the control-plane instance holding its newest stream


def proxy_row(proxy: Resource, insight: Resource | None, status: str) -> ProxyRow:
    networking = proxy.content.get("networking") or {}
    sub = latest_subscription(insight) or {}
    version = sub.get("version") or {}
    services = tuple(sorted({str((i.get("tags") or {}).get("kuma.io/service", ""))
                             for i in networking.get("inbound") or []} - {""}))
    if networking.get("gateway"):
        services = (str((networking["gateway"].get("tags") or {}).get("kuma.io/service", "")),)
    mtls = (insight.content.get("mTLS") if insight else None) or {}
    return ProxyRow(proxy.name, status, str(networking.get("address") or ""), services,
                    str((version.get("envoy") or {}).get("version") or ""),
                    str((version.get("kumaDp") or {}).get("version") or ""),
                    str(mtls.get("certificateExpirationTime") or ""), str(sub.get("connectTime") or ""),
                    str(sub.get("controlPlaneInstanceId") or ""))


def policy_types() -> list[ResourceType]:
    """The policy kinds, in Kuma's plugin order (the order of `_rules`)."""
    return [registry.get(kind) for kind, _ in KINDS]


def policy_type(path: str) -> ResourceType | None:
    """A policy kind by its REST path (`meshtimeouts`)."""
    return next((t for t in policy_types() if t.path == path), None)


# --- overview ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Overview:
    meshes: list[dict[str, Any]]        # MeshInsights
    instances: dict[str, int]           # control-plane instance id -> proxies connected to it now
    egresses: tuple[int, int]           # (online, total)


def overview(manager: ResourceManager) -> Overview:
    meshes = sorted(manager.list(ListQuery(type="Mesh")).items, key=lambda m: m.name)
    instances: dict[str, int] = {}
    insights = manager.list(ListQuery(type="DataplaneInsight")).items + \
        manager.list(ListQuery(type="ZoneEgressInsight")).items
    for insight in insights:
        for held_by in {s.get("controlPlaneInstanceId") or "" for s in open_subscriptions(insight)}:
            instances[held_by] = instances.get(held_by, 0) + 1
    egress = [insights_view.is_online(manager.get("ZoneEgressInsight", "", ze.name))
              for ze in manager.list(ListQuery(type="ZoneEgress")).items]
    return Overview([mesh_insight(manager, m) for m in meshes], instances, (sum(egress), len(egress)))


# --- a mesh --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MeshView:
    mesh: Resource
    insight: dict[str, Any]
    services: list[dict[str, Any]]      # ServiceInsights
    proxies: list[ProxyRow]
    policy_counts: list[tuple[ResourceType, int]]


def mesh_view(manager: ResourceManager, mesh: Resource) -> MeshView:
    dataplanes = sorted(dataplanes_with_insights(manager, mesh.name), key=lambda pair: pair[0].name)
    rows = [proxy_row(dp, insight, insights_view.dataplane_status(dp, insight)) for dp, insight in dataplanes]
    counts = [(t, manager.store.count(t.name, mesh.name)) for t in policy_types()]
    return MeshView(mesh, mesh_insight(manager, mesh, dataplanes), mesh_services(manager, mesh, dataplanes),
                    rows, counts)


def secret_names(manager: ResourceManager, mesh: str) -> list[str]:
    """Names only: a Secret's payload is never shown, not even to admins."""
    return sorted(s.name for s in manager.list(ListQuery(type="Secret", mesh=mesh)).items)


# --- a proxy -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ProxyView:
    dataplane: Resource
    row: ProxyRow
    subscriptions: list[dict[str, Any]]
    rules: dict[str, Any]               # Kuma's InspectRules (`_rules`)


def proxy_view(manager: ResourceManager, dp: Resource) -> ProxyView:
    insight = manager.get("DataplaneInsight", dp.mesh, dp.name)
    row = proxy_row(dp, insight, insights_view.dataplane_status(dp, insight))
    rules = rules_view.inspect_rules(KINDS, proxy_from_dataplane(dp), mesh_policies(manager, dp.mesh),
                                     rules_view.meta("Dataplane", dp.mesh, dp.name, dp.labels))
    subs = list((insight.content.get("subscriptions") if insight else None) or [])
    return ProxyView(dp, row, subs, rules)


# --- policies ------------------------------------------------------------------------------------

def policies_of(manager: ResourceManager, rtype: ResourceType, mesh: str) -> list[Resource]:
    return sorted(manager.list(ListQuery(type=rtype.name, mesh=mesh)).items, key=lambda r: r.name)


def policy_dataplanes(manager: ResourceManager, policy: Resource) -> list[Resource]:
    """The proxies the policy's top-level targetRef selects (`_resources/dataplanes`)."""
    hits = policy_hits(manager, policy)
    return sorted(manager.list(ListQuery(type="Dataplane", mesh=policy.mesh, predicate=hits)).items,
                  key=lambda d: d.name)


# --- zone egresses -------------------------------------------------------------------------------

def egress_rows(manager: ResourceManager) -> list[ProxyRow]:
    rows = []
    for ze in sorted(manager.list(ListQuery(type="ZoneEgress")).items, key=lambda z: z.name):
        insight = manager.get("ZoneEgressInsight", "", ze.name)
        online = insights_view.ONLINE if insights_view.is_online(insight) else insights_view.OFFLINE
        rows.append(proxy_row(ze, insight, online))
    return rows
