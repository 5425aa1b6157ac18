"""A read-only web GUI at /gui on the API port: server-rendered HTML, one small script that refreshes it.

Everything it serves (templates, stylesheet, script) is a file of this package, so an air-gapped host and
the frozen binary have it all. Its routes share the API's authenticator and access rules.
"""
from __future__ import annotations

import falcon

from appliance.api.inspect import XdsInspector
from appliance.core.manager import ResourceManager

PATH = "/gui"   # Kuma's apiServer.gui.basePath default


def add_routes(app: falcon.App, manager: ResourceManager, inspector: XdsInspector | None, instance_id: str) -> None:
    from appliance.gui import pages
    shared = pages.Pages(manager, instance_id)
    app.add_route(PATH, pages.Overview(shared))
    app.add_route(f"{PATH}/static/{{name}}", pages.Static())
    app.add_route(f"{PATH}/meshes", pages.ToOverview())
    app.add_route(f"{PATH}/meshes/{{mesh}}", pages.MeshPage(shared))
    app.add_route(f"{PATH}/meshes/{{mesh}}/dataplanes/{{name}}", pages.DataplanePage(shared, inspector))
    app.add_route(f"{PATH}/meshes/{{mesh}}/policies/{{type}}", pages.PolicyList(shared))
    app.add_route(f"{PATH}/meshes/{{mesh}}/policies/{{type}}/{{name}}", pages.PolicyPage(shared))
    app.add_route(f"{PATH}/zoneegresses", pages.EgressList(shared))
