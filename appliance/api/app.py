"""The REST API application: every route, the authenticator and Kuma's error handling."""
from __future__ import annotations

import falcon

from appliance import gui
from appliance.api import (envoy_admin, errors, index, inspect, hostnames_view, inspect_views, legacy, proxy_views,
                           resources, tokens)
from appliance.api.auth import Authenticator, StaticAccess
from appliance.api.request_metrics import RequestMetrics
from appliance.config import Config
from appliance.core.manager import ResourceManager
from appliance.core.resources import registry


def create_app(config: Config, manager: ResourceManager, instance_id: str,
               inspector: inspect.XdsInspector | None = None) -> falcon.App:
    middleware: list = [RequestMetrics(), Authenticator(manager.store, config["apiServer.authn.localhostIsAdmin"],
                                                        StaticAccess.from_config(config))]
    if config["apiServer.corsAllowedDomains"]:
        middleware.insert(0, falcon.CORSMiddleware(allow_origins=config["apiServer.corsAllowedDomains"]))
    app = falcon.App(middleware=middleware)
    app.req_options.strip_url_path_trailing_slash = True
    # Kuma's clients send `tag=a&tag=b` and `filter[labels.x]=y`: keep repeated params as lists.
    app.req_options.auto_parse_qs_csv = False
    errors.install(app)
    gui_location = gui.Location(config["apiServer.gui.enabled"], config["apiServer.gui.basePath"],
                                config["apiServer.gui.rootUrl"])
    app.add_route("/", index.Index(instance_id, gui_location.index_url))
    app.add_route("/config", index.ConfigDump(config))
    app.add_route("/who-am-i", index.WhoAmI())
    app.add_route("/_resources", index.ResourceTypes())
    app.add_route("/_kri/{kri}", index.KriLookup(manager))
    tokens.add_routes(app, manager.store, config["apiServer.authn.tokens.enableIssuer"])
    inspect.add_routes(app, manager, inspector)
    inspect_views.add_routes(app, manager)
    proxy_views.add_routes(app, manager)
    hostnames_view.add_routes(app, manager)
    envoy_admin.add_routes(app, manager)
    for rtype in registry.ALL_TYPES:
        resources.add_routes(app, rtype, manager, config["apiServer.readOnly"])
    legacy.add_routes(app, manager)
    gui.add_routes(app, manager, inspector, instance_id, gui_location)
    return app
