"""`GET /meshes/{mesh}/{serviceType}/{name}/_hostnames`: the hostnames the HostnameGenerators give a service,
with the zone each is available in (Kuma 2.14's inspect_mesh_service.go, on a zone control plane).

Computed from the generators now, not read from the service's status: it shows what a generator would give
(a hostname that collides with another service's is listed too, as in Kuma). Any user may read it."""
from __future__ import annotations

from typing import Any

import falcon

from appliance.api.errors import KumaError
from appliance.api.resources import _reply
from appliance.core.manager import ResourceManager
from appliance.model import hostnames
from appliance.store import ListQuery

# path segment -> (type, the generator selector that applies to it)
SERVICE_TYPES = {"meshservices": ("MeshService", "meshService"),
                 "meshexternalservices": ("MeshExternalService", "meshExternalService"),
                 "meshmultizoneservices": ("MeshMultiZoneService", "meshMultiZoneService")}


class ServiceHostnames:
    def __init__(self, manager: ResourceManager) -> None:
        self.manager = manager

    def on_get(self, req: falcon.Request, resp: falcon.Response, mesh: str, service_type: str, name: str) -> None:
        if service_type not in SERVICE_TYPES:
            raise KumaError(400, f'only "{",".join(SERVICE_TYPES)}" are available for inspection',
                            "Resource is not valid")
        type_name, selector_kind = SERVICE_TYPES[service_type]
        # MeshMultiZoneService is not a type here: there is none to find
        service = self.manager.store.get(type_name, mesh, name) if type_name != "MeshMultiZoneService" else None
        if service is None:
            raise KumaError(404, "could not retrieve service", "Not found")
        zone = service.labels.get("kuma.io/zone", "")
        zones_by_hostname: dict[str, set[str]] = {}
        for generator in self.manager.store.list(ListQuery(type=hostnames.TYPE)).items:
            if not hostnames.matches(generator, selector_kind, service.labels):
                continue
            try:
                generated = hostnames.hostname(str(generator.spec.get("template") or ""), service, zone,
                                               validate_dns=False)
            except hostnames.TemplateError as e:
                raise KumaError(500, "could not generate hostname", str(e))
            if generated:
                zones_by_hostname.setdefault(generated, set()).add(zone)
        items: list[dict[str, Any]] = [{"hostname": h, "zones": [{"name": z} for z in sorted(zones_by_hostname[h])]}
                                       for h in sorted(zones_by_hostname)]
        _reply(resp, {"items": items or None, "total": len(items)})


def add_routes(app: falcon.App, manager: ResourceManager) -> None:
    app.add_route("/meshes/{mesh}/{service_type}/{name}/_hostnames", ServiceHostnames(manager))
