"""The leader keeps each mesh's virtual IPs in its Config `kuma-<mesh>-dns-vips` (Kuma's VIPsAllocator).

Only the leader writes them, so instances sharing PostgreSQL never hand out one address twice; every
instance reads them from the store when it builds a mesh's snapshot. A pass runs when a Mesh, Dataplane,
ExternalService, MeshGateway or Config changed since the last one (the change log says; proxies' insights, which change
all the time, do not count), and at least every FULL_PASS_EVERY seconds while the store changes. It writes a
mesh's Config only when its view changed. The Config of a deleted mesh goes with it.
"""
from __future__ import annotations

import logging
import time

from appliance.core.resources.model import Resource
from appliance.model import vips
from appliance.store import AlreadyExists, Conflict, ListQuery, NotFound, Store

log = logging.getLogger("appliance.leader")
CONFIG = "Config"
FULL_PASS_EVERY = 60.0
_RELEVANT = frozenset({"Mesh", "Dataplane", "ExternalService", "MeshGateway", CONFIG})
_SCAN = 1000          # changes looked at; more than that since the last pass: a full pass


class VipSync:
    def __init__(self, store: Store, cidr: str = vips.DEFAULT_CIDR, service_vips: bool = True) -> None:
        self.store = store
        self.cidr = cidr
        self.service_vips = service_vips
        self._synced_at = -1
        self._full_at = float("-inf")

    def sync_if_changed(self) -> None:
        revision = self.store.revision()
        if revision == self._synced_at:
            return
        if self._synced_at >= 0 and time.monotonic() - self._full_at < FULL_PASS_EVERY:
            changes = self.store.changes_since(self._synced_at, _SCAN)
            if len(changes) < _SCAN and not any(c.type in _RELEVANT for c in changes):
                self._synced_at = revision
                return
        self.sync()
        self._synced_at, self._full_at = revision, time.monotonic()

    def sync(self) -> None:
        meshes = {m.name for m in self.store.list(ListQuery(type="Mesh")).items}
        # every mesh gets names for the crossMesh gateway listeners of all meshes
        gateways = vips.cross_mesh_gateways((g.mesh, g.name, g.content) for g in sorted(
            self.store.list(ListQuery(type="MeshGateway")).items, key=lambda g: (g.mesh, g.name)))
        for mesh in sorted(meshes):
            self._sync_mesh(mesh, gateways)
        for config in self.store.list(ListQuery(type=CONFIG)).items:
            mesh = vips.mesh_of_config(config.name)
            if mesh is not None and mesh not in meshes:
                try:
                    self.store.delete(CONFIG, "", config.name)
                except NotFound:
                    pass

    def _sync_mesh(self, mesh: str, gateways: dict[vips.Entry, tuple[vips.OutboundEntry, ...]]) -> None:
        dataplanes = sorted(self.store.list(ListQuery(type="Dataplane", mesh=mesh)).items, key=lambda r: r.name)
        externals = sorted(self.store.list(ListQuery(type="ExternalService", mesh=mesh)).items, key=lambda r: r.name)
        wanted = {**vips.wanted((d.content for d in dataplanes), ((e.name, e.content) for e in externals),
                                self.service_vips), **gateways}
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

