"""CRUD over REST for every resource type, at Kuma's paths, with Kuma's answers."""
from __future__ import annotations

from typing import Any, Callable
from urllib.parse import urlencode

import falcon

from appliance.api import auth, codec
from appliance.api.errors import KumaError, bad_request, from_exception
from appliance.core.manager import ResourceManager
from appliance.core.resources.model import Resource, ResourceType
from appliance.core.validation import BadRequest, ValidationError, Violation, Violations
from appliance.gocompat import INT64_MAX, atoi
from appliance.store import ListQuery

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


def _reply(resp: falcon.Response, body: Any, status: int = 200) -> None:
    resp.status = status
    resp.content_type = "application/json"
    resp.data = codec.dumps(body)


def next_link(req: falcon.Request, next_offset: int | None) -> str | None:
    """Kuma's `next`: this request's URL with the next page's offset, or None on the last page."""
    if next_offset is None:
        return None
    params = {k: (v[-1] if isinstance(v, list) else v) for k, v in req.params.items()}
    params["offset"] = str(next_offset)
    return f"{req.scheme}://{req.host}{':' + str(req.port) if req.port not in (80, 443) else ''}" \
           f"{req.path}?{urlencode(sorted(params.items()))}"


def _page(req: falcon.Request) -> tuple[int, int]:
    size = DEFAULT_PAGE_SIZE
    raw_size = req.get_param("size")
    if raw_size:
        try:
            size = atoi(raw_size)
        except ValueError:
            raise KumaError(400, "Could not retrieve resources", "Invalid page size",
                            [Violation("size", "invalid format")])
        if size <= 0:
            raise KumaError(400, "Could not retrieve resources", "Invalid page size",
                            [Violation("size", "must be greater than 0")])
        if size > MAX_PAGE_SIZE:
            raise KumaError(400, "Could not retrieve resources", "Invalid page size",
                            [Violation("size", f"invalid page size of {size}. Maximum page size is {MAX_PAGE_SIZE}")])
    offset = 0
    raw_offset = req.get_param("offset")
    if raw_offset:
        # Kuma's pagination_store: Atoi, then two bounds; the last keeps offset + size within an int64
        try:
            offset = atoi(raw_offset)
        except ValueError as e:
            raise KumaError(400, "Could not retrieve resources", f"invalid: invalid offset: {e}")
        if offset < 0:
            raise KumaError(400, "Could not retrieve resources", "invalid: invalid offset: must be non-negative")
        if offset > INT64_MAX - size:
            raise KumaError(400, "Could not retrieve resources", "invalid: invalid offset: exceeds maximum value")
    return size, offset


def _label_filters(req: falcon.Request, route: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    problems = Violations()
    for name in req.params:
        if not name.startswith("filter["):
            continue
        value = req.get_param_as_list(name)[-1] if isinstance(req.params[name], list) else req.params[name]
        field = f"{route}.{name}"
        if not name.startswith("filter[labels."):
            problems.add(field, "filters are only supported on labels")
            continue
        close = name.index("]") if "]" in name else len(name)
        if close != len(name) - 1:
            problems.add(field, "advanced filters are not supported")
            continue
        labels[name[len("filter[labels."):close]] = value
    if problems:
        raise KumaError(400, "Could not retrieve resources", "Resource is not valid", problems.items)
    return labels


def _tags(req: falcon.Request) -> dict[str, str]:
    out = {}
    for tag in req.get_param_as_list("tag") or []:
        k, _, v = tag.partition(":")
        out[k] = v
    return out


def _dataplane_predicate(tags: dict[str, str], gateway: str | None) -> Callable[[Resource], bool] | None:
    if not tags and not gateway:
        return None

    def match(res: Resource) -> bool:
        networking = res.content.get("networking") or {}
        if gateway:
            gw = networking.get("gateway")
            kind = (gw or {}).get("type", "DELEGATED") if gw else None
            if gateway == "false" and gw:
                return False
            if gateway == "builtin" and kind != "BUILTIN":
                return False
            if gateway == "delegated" and (not gw or kind == "BUILTIN"):
                return False
        if not tags:
            return True
        sets = [ib.get("tags") or {} for ib in networking.get("inbound") or []]
        if networking.get("gateway"):
            sets.append(networking["gateway"].get("tags") or {})
        # Kuma's MatchTagsFuzzy: every tag present on one inbound, value as a substring.
        return any(all(k in s and v in s[k] for k, v in tags.items()) for s in sets)
    return match


def _external_service_predicate(tags: dict[str, str]) -> Callable[[Resource], bool] | None:
    if not tags:
        return None
    return lambda res: all(k in (res.content.get("tags") or {}) and v in res.content["tags"][k]
                           for k, v in tags.items())


def _if_match(req: falcon.Request) -> int | None:
    raw = req.get_header("If-Match")
    if raw is None:
        return None
    value = raw.strip().removeprefix("W/").strip('"')
    if not value.isdigit():
        raise bad_request(f"bad request: If-Match must be a version given as an ETag by GET, got {raw!r}")
    return int(value)


class ResourceEndpoints:
    """GET list, GET/PUT/DELETE item for one type. `mesh` is None for global types."""

    def __init__(self, rtype: ResourceType, manager: ResourceManager, read_only: bool = False) -> None:
        self.rtype = rtype
        self.manager = manager
        self.read_only = read_only
        self.mesh_scoped = rtype.scope == "Mesh"

    # --- helpers -----------------------------------------------------------------------------
    def _check_mesh(self, mesh: str | None) -> None:
        if self.mesh_scoped and mesh and not self.manager.mesh_exists(mesh):
            raise KumaError(404, "Failed to retrieve Mesh", "Not found")

    def _access(self, req: falcon.Request, write: bool) -> None:
        if self.rtype.admin_only:
            auth.require(req, auth.ADMIN_RESOURCES, f"the resource of type \"{self.rtype.name}\"")
        if write:
            if self.rtype.read_only:
                raise KumaError(405, "Method not allowed",
                                f"{self.rtype.name} is maintained by the control plane and cannot be changed")
            if self.read_only:
                raise KumaError(405, "Method not allowed",
                                "the API server is in read-only mode (apiServer.readOnly): only GET is allowed")
            auth.require_writer(req)
            if self.rtype.admin_writes:
                auth.require(req, auth.ADMIN_RESOURCES, f"the resource of type \"{self.rtype.name}\"")

    # --- list --------------------------------------------------------------------------------
    def list(self, req: falcon.Request, resp: falcon.Response, mesh: str | None, route: str) -> None:
        size, offset = _page(req)
        labels = _label_filters(req, route)
        predicate = None
        if self.rtype.name == "Dataplane":
            predicate = _dataplane_predicate(_tags(req), req.get_param("gateway"))
        elif self.rtype.name == "ExternalService":
            predicate = _external_service_predicate(_tags(req))
        self._check_mesh(mesh)
        self._access(req, write=False)
        page = self.manager.list(ListQuery(type=self.rtype.name, mesh=mesh, name_contains=req.get_param("name") or "",
                                           labels=labels, predicate=predicate, offset=offset, size=size))
        _reply(resp, {"total": page.total, "items": [codec.present(self.rtype, r) for r in page.items],
                      "next": next_link(req, page.next_offset)})

    # --- item --------------------------------------------------------------------------------
    def get(self, req: falcon.Request, resp: falcon.Response, mesh: str, name: str) -> None:
        self._check_mesh(mesh)
        self._access(req, write=False)
        fmt = req.get_param("format")
        if fmt in ("k8s", "kubernetes"):
            raise bad_request("format kubernetes is not available on a Universal control plane")
        res = self.manager.get(self.rtype.name, mesh, name)
        if res is None:
            raise KumaError(404, "Could not retrieve a resource", "Not found")
        resp.etag = f'"{res.version}"'
        _reply(resp, codec.present(self.rtype, res))

    def put(self, req: falcon.Request, resp: falcon.Response, mesh: str, name: str) -> None:
        self._check_mesh(mesh)
        self._access(req, write=True)
        title = "Could not process a resource"
        try:
            body = codec.parse_body(req.bounded_stream.read(codec.MAX_BODY + 1), req.content_type, self.rtype.name)
            res = codec.decode(self.rtype, body)
            if self.rtype.wrapped and self.mesh_scoped and "mesh" not in body:
                res.mesh = mesh  # Kuma fills a new-style resource's mesh from the URL
            current = self.manager.get(self.rtype.name, mesh, name)
            self.manager.check_write(self.rtype, res, current, self._url_violations(res, mesh, name))
        except (ValidationError, BadRequest, KumaError) as e:
            raise from_exception(e, title)
        if self.rtype.data_sources:
            auth.require_admin_for_data_sources(req, self.rtype.data_sources(res.content))
        if self.rtype.admin_fields:
            auth.require_admin_for_fields(req, self.rtype.admin_fields(res.content))
        # Our addition to Kuma's API: `If-Match: "<version>"` (the ETag of a GET) makes the PUT a
        # compare-and-swap, so read-modify-write clients cannot lose each other's updates.
        expected = _if_match(req)
        if expected is not None and (current is None or current.version != expected):
            raise KumaError(409, "Conflict", f"resource conflict: type=\"{self.rtype.name}\" name=\"{name}\" "
                            f"mesh=\"{mesh}\": version {expected} is stale"
                            + (f" (now {current.version})" if current else " (it does not exist)"))
        if current is None:
            self._create(resp, res)
        else:
            self._update(resp, current, res)

    def _url_violations(self, res: Resource, mesh: str, name: str) -> Violations:
        found = Violations()
        if res.name != name:
            found.add("name", "name from the URL has to be the same as in body")
        if res.type != self.rtype.name:
            found.add("type", "type from the URL has to be the same as in body")
        if self.mesh_scoped and res.mesh != mesh:
            found.add("mesh", "mesh from the URL has to be the same as in body")
        return found

    def _create(self, resp: falcon.Response, res: Resource) -> None:
        try:
            self.manager.create(res)
        except Exception as e:
            raise from_exception(e, "Failed to create a resource")
        _reply(resp, self._warnings(res), 201)

    def _update(self, resp: falcon.Response, current: Resource, res: Resource) -> None:
        if self.rtype.has_status and "status" in current.content:
            # status belongs to the control plane: a PUT changes the spec only
            res.content["status"] = current.content["status"]
        try:
            self.manager.update(res, current.version)
        except Exception as e:
            raise from_exception(e, "Failed to update a resource")
        _reply(resp, self._warnings(res), 200)

    def _warnings(self, res: Resource) -> dict[str, Any]:
        warnings = self.rtype.warnings(res) if self.rtype.warnings else []
        return {"warnings": warnings} if warnings else {}

    def delete(self, req: falcon.Request, resp: falcon.Response, mesh: str, name: str) -> None:
        self._check_mesh(mesh)
        self._access(req, write=True)
        try:
            self.manager.delete(self.rtype.name, mesh, name)
        except Exception as e:
            raise from_exception(e, "Could not delete a resource")
        _reply(resp, {})


class MeshScopedItem:
    def __init__(self, endpoints: ResourceEndpoints) -> None:
        self.e = endpoints

    def on_get(self, req: falcon.Request, resp: falcon.Response, mesh: str, name: str) -> None:
        self.e.get(req, resp, mesh, name)

    def on_put(self, req: falcon.Request, resp: falcon.Response, mesh: str, name: str) -> None:
        self.e.put(req, resp, mesh, name)

    def on_delete(self, req: falcon.Request, resp: falcon.Response, mesh: str, name: str) -> None:
        self.e.delete(req, resp, mesh, name)


class MeshScopedList:
    def __init__(self, endpoints: ResourceEndpoints) -> None:
        self.e = endpoints

    def on_get(self, req: falcon.Request, resp: falcon.Response, mesh: str) -> None:
        self.e.list(req, resp, mesh, f"/meshes/{{mesh}}/{self.e.rtype.path}")


class GlobalItem:
    """Items of global types; the Mesh type's own routes use the `mesh` field as its name."""

    def __init__(self, endpoints: ResourceEndpoints) -> None:
        self.e = endpoints

    def on_get(self, req: falcon.Request, resp: falcon.Response, **params: str) -> None:
        self.e.get(req, resp, "", params.get("name") or params["mesh"])

    def on_put(self, req: falcon.Request, resp: falcon.Response, **params: str) -> None:
        self.e.put(req, resp, "", params.get("name") or params["mesh"])

    def on_delete(self, req: falcon.Request, resp: falcon.Response, **params: str) -> None:
        self.e.delete(req, resp, "", params.get("name") or params["mesh"])


class AllList:
    """`GET /<path>`: a global type's list, or a mesh-scoped type's list across every mesh."""

    def __init__(self, endpoints: ResourceEndpoints, path: str) -> None:
        self.e = endpoints
        self.path = path

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        self.e.list(req, resp, None, f"/{self.path}")


def add_routes(app: falcon.App, rtype: ResourceType, manager: ResourceManager, read_only: bool) -> None:
    endpoints = ResourceEndpoints(rtype, manager, read_only)
    for path in (rtype.path, *rtype.aliases):
        app.add_route(f"/{path}", AllList(endpoints, path))
        if rtype.scope == "Mesh":
            app.add_route(f"/meshes/{{mesh}}/{path}", MeshScopedList(endpoints))
            app.add_route(f"/meshes/{{mesh}}/{path}/{{name}}", MeshScopedItem(endpoints))
        elif path == "meshes":
            app.add_route("/meshes/{mesh}", GlobalItem(endpoints))
        else:
            app.add_route(f"/{path}/{{name}}", GlobalItem(endpoints))
