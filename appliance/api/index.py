"""`GET /`, `/config`, `/_resources`, `/who-am-i`, `/_kri/{kri}` and `POST /tokens/user`."""
from __future__ import annotations

import socket
from typing import Any

import falcon

from appliance import PRODUCT, __version__
from appliance.api import auth, codec
from appliance.api.errors import KumaError, bad_request
from appliance.api.resources import _reply
from appliance.config import Config
from appliance.core.manager import ResourceManager
from appliance.core.resources import registry


class Index:
    def __init__(self, instance_id: str, gui: str = "") -> None:
        self.hostname = socket.gethostname()
        self.instance_id = instance_id
        self.gui = gui   # where the GUI answers, as Kuma's `gui` (its apiServer.gui.basePath)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        _reply(resp, {"hostname": self.hostname, "product": PRODUCT, "version": __version__,
                      "instanceId": self.instance_id, "clusterId": self.instance_id.split("-")[0],
                      "gui": self.gui, "basedOnKuma": "2.14.3"})


class ConfigDump:
    def __init__(self, config: Config) -> None:
        self.config = config

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        auth.require(req, auth.CONTROL_PLANE_METADATA, "control-plane metadata")
        _reply(resp, self.config.as_nested())


class WhoAmI:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        user: auth.User = req.context.user
        _reply(resp, {"name": user.name, "groups": list(user.groups)})


class ResourceTypes:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        out = []
        for t in sorted(registry.ALL_TYPES, key=lambda t: t.name):
            item: dict[str, Any] = {"includeInFederation": t.include_in_federation, "name": t.name, "path": t.path,
                                    "pluralDisplayName": t.plural, "readOnly": t.read_only, "scope": t.scope,
                                    "shortName": t.short_name, "singularDisplayName": t.singular}
            if t.policy:
                p = t.policy
                item["policy"] = {"hasFromTargetRef": p.has_from, "hasRulesTargetRef": p.has_rules,
                                  "hasToTargetRef": p.has_to, "isFromAsRules": p.is_from_as_rules,
                                  "isTargetRef": p.is_target_ref}
            out.append(item)
        _reply(resp, {"resources": out})


class KriLookup:
    """`GET /_kri/kri_<short>_<mesh>_<zone>_<namespace>_<name>_<section>`."""

    def __init__(self, manager: ResourceManager) -> None:
        self.manager = manager

    def on_get(self, req: falcon.Request, resp: falcon.Response, kri: str) -> None:
        parts = kri.split("_")
        if len(parts) < 2 or parts[0] != "kri":
            raise bad_request(f"bad request: invalid KRI {kri!r}: it has to start with kri_")
        rtype = registry.BY_SHORT_NAME.get(parts[1])
        if rtype is None:
            raise bad_request(f"bad request: unknown short name of resource type: \"{parts[1]}\"")
        if len(parts) != 7:
            raise bad_request(f"bad request: invalid KRI {kri!r}: expected "
                              "kri_<type>_<mesh>_<zone>_<namespace>_<name>_<sectionName>")
        mesh, name = parts[2], parts[5]
        if rtype.admin_only:
            auth.require(req, auth.ADMIN_RESOURCES, f"the resource of type \"{rtype.name}\"")
        res = self.manager.get(rtype.name, mesh if rtype.scope == "Mesh" else "", name)
        if res is None:
            raise KumaError(404, "Could not retrieve a resource", "Not found")
        _reply(resp, codec.present(rtype, res))
