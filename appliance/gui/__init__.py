"""A read-only web GUI at /gui on the API port: server-rendered HTML, one small script that refreshes it.

Everything it serves (templates, stylesheet, script) is a file of this package, so an air-gapped host and
the frozen binary have it all. Its routes share the API's authenticator and access rules.

Where it answers and how its links are written follow Kuma's `apiServer.gui`: `basePath` is where it is
served, `rootUrl` (behind a reverse proxy) is where the browser reaches it, so links use its path;
`enabled: false` leaves a page that says so (Kuma's no-gui.html) and nothing else.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

import falcon

from appliance.api.inspect import XdsInspector
from appliance.core.manager import ResourceManager

PATH = "/gui"   # Kuma's apiServer.gui.basePath default


@dataclass(frozen=True)
class Location:
    """`apiServer.gui` as the API uses it."""
    enabled: bool = True
    base_path: str = PATH   # where the routes are
    root_url: str = ""      # where a browser reaches them, when a reverse proxy sits in front

    @property
    def served_at(self) -> str:
        return "/" + self.base_path.strip("/")

    @property
    def link_base(self) -> str:
        """The path links start with: rootUrl's path when given (Kuma's BaseGuiPath), else basePath."""
        return "/" + urlsplit(self.root_url).path.strip("/") if self.root_url else self.served_at

    @property
    def index_url(self) -> str:
        """What `GET /` says in `gui`: empty when there is none, rootUrl over basePath (as Kuma)."""
        return "" if not self.enabled else self.root_url or self.base_path


def add_routes(app: falcon.App, manager: ResourceManager, inspector: XdsInspector | None, instance_id: str,
               location: Location = Location()) -> None:
    from appliance.gui import pages
    base = location.served_at
    if not location.enabled:
        app.add_sink(pages.Disabled(), re.compile("^" + re.escape(base) + "(/.*)?$"))
        return
    shared = pages.Pages(manager, instance_id, location.link_base)
    app.add_route(base, pages.Overview(shared))
    app.add_route(f"{base}/static/{{name}}", pages.Static())
    app.add_route(f"{base}/meshes", pages.ToOverview(shared))
    app.add_route(f"{base}/meshes/{{mesh}}", pages.MeshPage(shared))
    app.add_route(f"{base}/meshes/{{mesh}}/dataplanes/{{name}}", pages.DataplanePage(shared, inspector))
    app.add_route(f"{base}/meshes/{{mesh}}/policies/{{type}}", pages.PolicyList(shared))
    app.add_route(f"{base}/meshes/{{mesh}}/policies/{{type}}/{{name}}", pages.PolicyPage(shared))
    app.add_route(f"{base}/zoneegresses", pages.EgressList(shared))
