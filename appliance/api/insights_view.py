"""Kuma's computed insights, from the store when asked: a proxy's status, ServiceInsight, GlobalInsight.

Kuma keeps ServiceInsight and MeshInsight as resources a resyncer rewrites every few seconds; we compute
them from the Dataplanes and their DataplaneInsights on each request, so they are never stale.
"""
from __future__ import annotations

from typing import Any, Iterable

from appliance.core.resources.model import Resource

ONLINE, OFFLINE, PARTIALLY_DEGRADED = "Online", "Offline", "Partially degraded"
# dnsServer.domain and dnsServer.serviceVipPort defaults: where a service's VIP answers (`addressPort`)
DNS_DOMAIN, SERVICE_VIP_PORT = "mesh", 80


def is_online(insight: Resource | None) -> bool:
    """DataplaneInsight.IsOnline: some subscription connected and not disconnected."""
    subs = (insight.content.get("subscriptions") if insight else None) or []
    return any(s.get("connectTime") and not s.get("disconnectTime") for s in subs)


def dataplane_status(dataplane: Resource, insight: Resource | None) -> str:
    """DataplaneOverviewResource.Status: offline when disconnected or no inbound is ready, partially degraded
    when some are not."""
    networking = dataplane.content.get("networking") or {}
    online = is_online(insight)
    if networking.get("gateway") is not None:
        return ONLINE if online else OFFLINE
    inbounds = networking.get("inbound") or []
    ready = sum(1 for i in inbounds if _inbound_ready(i))
    if not online or ready == 0:
        return OFFLINE
    return PARTIALLY_DEGRADED if ready < len(inbounds) else ONLINE


def _inbound_ready(inbound: dict[str, Any]) -> bool:
    health = inbound.get("health")
    if isinstance(health, dict) and not health.get("ready", False):
        return False
    return inbound.get("state") != "NotReady"


def _issued_backend(insight: Resource | None) -> str:
    return (((insight.content.get("mTLS") if insight else None) or {}).get("issuedBackend")) or ""


def service_stats(dataplanes: Iterable[tuple[Resource, Resource | None]],
                  external_services: Iterable[Resource]) -> dict[str, dict[str, Any]]:
    """The `services` of Kuma's ServiceInsight for a mesh (resyncer.createOrUpdateServiceInsight), by name."""
    services: dict[str, dict[str, Any]] = {}

    def add(name: str, service_type: str, status: str, backend: str = "", address_port: str = "") -> None:
        if not name:
            return
        svc = services.setdefault(name, {"type": service_type, "online": 0, "offline": 0, "backends": {},
                                         "addressPort": address_port})
        if backend:
            svc["backends"][backend] = svc["backends"].get(backend, 0) + 1
        if status == ONLINE:
            svc["online"] += 1
        elif status in (OFFLINE, PARTIALLY_DEGRADED):
            svc["offline"] += 1

    for dp, insight in dataplanes:
        status = dataplane_status(dp, insight)
        networking = dp.content.get("networking") or {}
        gateway = networking.get("gateway")
        if gateway is not None:
            kind = "gateway_builtin" if gateway.get("type") == "BUILTIN" else "gateway_delegated"
            add((gateway.get("tags") or {}).get("kuma.io/service", ""), kind, status, _issued_backend(insight))
            continue
        for inbound in networking.get("inbound") or []:
            if inbound.get("state") == "Ignored":
                continue
            add((inbound.get("tags") or {}).get("kuma.io/service", ""), "internal", status, _issued_backend(insight))
    for es in external_services:
        networking = es.content.get("networking") or {}
        add((es.content.get("tags") or {}).get("kuma.io/service", ""), "external", "",
            address_port=str(networking.get("address") or ""))
    return services


def _service_status(svc: dict[str, Any]) -> str:
    online, total = svc["online"], svc["online"] + svc["offline"]
    if svc["type"] == "external":
        return "not_available"
    if online == 0:
        return "offline"
    return "online" if online == total else "partially_degraded"


def service_insight(mesh: Resource, name: str, svc: dict[str, Any] | None) -> dict[str, Any]:
    """One service as Kuma's REST API answers it (serviceInsightEndpoints.fillStaticInfo): named by the
    service, dated by the mesh, internal services with the VIP they answer on."""
    svc = svc or {"type": "internal", "online": 0, "offline": 0, "backends": {}, "addressPort": ""}
    out: dict[str, Any] = {"type": "ServiceInsight", "mesh": mesh.name, "name": name,
                           "creationTime": mesh.creation_time, "modificationTime": mesh.modification_time,
                           "status": _service_status(svc),
                           "dataplanes": {"total": svc["online"] + svc["offline"], "online": svc["online"],
                                          "offline": svc["offline"]}}
    if svc["backends"]:
        out["issuedBackends"] = dict(svc["backends"])
    if svc["type"] == "internal":
        out["addressPort"] = f"{name}.{DNS_DOMAIN}:{SERVICE_VIP_PORT}"
    else:
        if svc["addressPort"]:
            out["addressPort"] = svc["addressPort"]
        out["serviceType"] = svc["type"]
    return out


SERVICE_TYPES = ("internal", "external", "gateway_delegated", "gateway_builtin")


def _full() -> dict[str, int]:
    return {"offline": 0, "online": 0, "partiallyDegraded": 0, "total": 0}


def global_insight(created_at: str, meshes: list[dict[str, Any]], services: Iterable[dict[str, Any]],
                   egresses: Iterable[bool]) -> dict[str, Any]:
    """Kuma's GlobalInsight (globalinsight.GetGlobalInsight) from the MeshInsights, every service's insight and
    whether each zone egress is online. A single-zone control plane has no zones and no zone ingresses."""
    dataplanes = {"gatewayBuiltin": _full(), "gatewayDelegated": _full(), "standard": _full()}
    policies = 0
    resources: dict[str, dict[str, int]] = {}
    for insight in meshes:
        for kind, stats in insight["dataplanesByType"].items():
            target = dataplanes.get(kind)
            if target is not None:
                for key in target:
                    target[key] += stats.get(key, 0)
        policies += sum(p["total"] for p in insight["policies"].values())
        for name, stat in insight["resources"].items():
            resources.setdefault(name, {"total": 0})["total"] += stat["total"]
    by_type = {"internal": _full(), "gatewayBuiltin": _full(), "gatewayDelegated": _full()}
    external = 0
    for svc in services:
        kind = svc.get("serviceType", "internal")
        if kind == "external":
            external += 1
            continue
        stats = by_type["internal" if kind == "internal" else
                        "gatewayBuiltin" if kind == "gateway_builtin" else "gatewayDelegated"]
        stats["total"] += 1
        key = {"online": "online", "offline": "offline", "partially_degraded": "partiallyDegraded"}.get(svc["status"])
        if key:
            stats[key] += 1
    egress = list(egresses)
    return {"createdAt": created_at, "dataplanes": dataplanes, "meshes": {"total": len(meshes)},
            "policies": {"total": policies}, "resources": resources,
            "services": {"external": {"total": external}, **by_type},
            "zones": {"controlPlanes": {"online": 0, "total": 0},
                      "zoneEgresses": {"online": sum(egress), "total": len(egress)},
                      "zoneIngresses": {"online": 0, "total": 0}}}
