"""The leader keeps each mesh's virtual IPs in its Config `kuma-<mesh>-dns-vips` (Kuma's VIPsAllocator).

Only the leader writes them, so instances sharing PostgreSQL never hand out one address twice; every
instance reads them from the store when it builds a mesh's snapshot. A pass runs when the store changed
since the last one (one revision read otherwise), and writes a mesh's Config only when its view changed.
The Config of a deleted mesh goes with it.
"""
from __future__ import annotations

import logging

from appliance.core.resources.model import Resource
from appliance.model import vips
from appliance.store import AlreadyExists, Conflict, ListQuery, NotFound, Store

log = logging.getLogger("appliance.leader")
CONFIG = "Config"


class VipSync:
    def __init__(self, store: Store, cidr: str = vips.DEFAULT_CIDR, service_vips: bool = True) -> None:
        self.store = store
        self.cidr = cidr
        self.service_vips = service_vips
        self._synced_at = -1

    def sync_if_changed(self) -> None:
        revision = self.store.revision()
        if revision != self._synced_at:
            self.sync()
            self._synced_at = revision

    def sync(self) -> None:
        meshes = {m.name for m in self.store.list(ListQuery(type="Mesh")).items}
        for mesh in sorted(meshes):
            self._sync_mesh(mesh)
        for config in self.store.list(ListQuery(type=CONFIG)).items:
            mesh = vips.mesh_of_config(config.name)
            if mesh is not None and mesh not in meshes:
                try:
                    self.store.delete(CONFIG, "", config.name)
                except NotFound:
                    pass

    def _sync_mesh(self, mesh: str) -> None:
        dataplanes = sorted(self.store.list(ListQuery(type="Dataplane", mesh=mesh)).items, key=lambda r: r.name)
        externals = sorted(self.store.list(ListQuery(type="ExternalService", mesh=mesh)).items, key=lambda r: r.name)
        wanted = vips.wanted((d.content for d in dataplanes), ((e.name, e.content) for e in externals),
                             self.service_vips)
        name = vips.config_name(mesh)
        current = self.store.get(CONFIG, "", name)
        old = vips.from_json(str(current.content.get("config") or "")) if current is not None else {}
        try:
            view = vips.allocate(old, wanted, self.cidr)
        except ValueError as e:
            log.error("mesh %s: cannot allocate virtual IPs: %s", mesh, e)
            return
        if view == old and current is not None:
            return
        content = {"config": vips.to_json(view)}
        try:
            if current is None:
                self.store.create(Resource(CONFIG, "", name, content))
            else:
                self.store.update(Resource(CONFIG, "", name, content, version=current.version))
        except (AlreadyExists, Conflict):
            return   # written meanwhile (a former leader's last pass): the next pass starts from it
        log.info("mesh %s: virtual IPs updated (%d entries)", mesh, len(view))

