"""Kuma's legacy policies (TrafficPermission, TrafficRoute, ...): refused on write, empty on read.

A PUT answers 400 naming the targetRef policy to use instead; lists answer Kuma's empty list and
an item 404, as for a type that simply has no resources, so old scripts and dashboards keep working.
"""
from __future__ import annotations

import falcon

from appliance.api.errors import KumaError
from appliance.api.resources import _page, _reply
from appliance.core.manager import ResourceManager
from appliance.core.resources.legacy_policies import LEGACY_POLICIES, LegacyPolicy

_EMPTY = {"total": 0, "items": [], "next": None}


class _Legacy:
    def __init__(self, policy: LegacyPolicy, manager: ResourceManager) -> None:
        self.policy = policy
        self.manager = manager

    def _check_mesh(self, mesh: str) -> None:
        if not self.manager.mesh_exists(mesh):
            raise KumaError(404, "Failed to retrieve Mesh", "Not found")


class _AllList(_Legacy):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        _page(req)   # a bad size or offset is still a 400, as for every list
        _reply(resp, _EMPTY)


class _MeshList(_Legacy):
    def on_get(self, req: falcon.Request, resp: falcon.Response, mesh: str) -> None:
        _page(req)
        self._check_mesh(mesh)
        _reply(resp, _EMPTY)


class _Item(_Legacy):
    def on_get(self, req: falcon.Request, resp: falcon.Response, mesh: str, name: str) -> None:
        self._check_mesh(mesh)
        raise KumaError(404, "Could not retrieve a resource", "Not found")

    def on_put(self, req: falcon.Request, resp: falcon.Response, mesh: str, name: str) -> None:
        raise KumaError(400, "Could not process a resource", self.policy.refusal())

    def on_delete(self, req: falcon.Request, resp: falcon.Response, mesh: str, name: str) -> None:
        self._check_mesh(mesh)
        raise KumaError(404, "Could not delete a resource", "Not found")


def add_routes(app: falcon.App, manager: ResourceManager) -> None:
    for policy in LEGACY_POLICIES:
        app.add_route(f"/{policy.path}", _AllList(policy, manager))
        app.add_route(f"/meshes/{{mesh}}/{policy.path}", _MeshList(policy, manager))
        app.add_route(f"/meshes/{{mesh}}/{policy.path}/{{name}}", _Item(policy, manager))
