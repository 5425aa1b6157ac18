"""The leader generates MeshServices from Dataplanes, keeps their status, gives them virtual IPs and the
hostnames of the HostnameGenerators (model/meshservices.py and model/hostnames.py say what; this module reads
the store and writes it).

A round runs every leader-job interval (Kuma: `meshService.generationInterval` 2s, status every 5s). It costs
two lists (Meshes, MeshServices) while no mesh asks for MeshServices and none exists; the meshes that have
some also list their Dataplanes and insights. A write that loses a race (another writer, a former leader's
last round) is retried by the next round, from what the store then holds.
"""
from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Iterator

from appliance.core.resources.model import Resource
from appliance.model import hostnames, meshservices as msvc
from appliance.insights.dataplane import open_subscriptions
from appliance.store import AlreadyExists, Conflict, ListQuery, NotFound, Store

log = logging.getLogger("appliance.leader")


class MeshServiceSync:
    def __init__(self, store: Store, zone: str, cidr: str = msvc.DEFAULT_CIDR, grace_s: float = 3600.0,
                 external_cidr: str = msvc.DEFAULT_EXTERNAL_CIDR) -> None:
        self.store = store
        self.zone = zone
        self.cidr = cidr
        self.external_cidr = external_cidr
        self.grace_s = grace_s

    def sync(self, now: datetime | None = None) -> None:
        now = now or datetime.now(timezone.utc)
        meshes = {m.name: m for m in self.store.list(ListQuery(type="Mesh")).items}
        services = self._services()
        listed: dict[str, list[Resource]] = {}     # each mesh's Dataplanes, listed once a round

        def dataplanes(mesh: str) -> list[Resource]:
            if mesh not in listed:
                listed[mesh] = self.store.list(ListQuery(type="Dataplane", mesh=mesh)).items
            return listed[mesh]

        for name in sorted(meshes):
            mesh_mode = msvc.mode(meshes[name].content)
            owned = [s for s in services if s.mesh == name]
            if mesh_mode == "Disabled" and not any(msvc.is_generated(s) for s in owned):
                continue
            for write in msvc.generate(name, self.zone, mesh_mode, dataplanes(name), owned, now, self.grace_s):
                self._apply(write)
        services = self._services()
        by_mesh: dict[str, list[Resource]] = {}
        for ms in services:
            if msvc.is_local(ms.labels) and ms.mesh in meshes:
                by_mesh.setdefault(ms.mesh, []).append(ms)
        free = msvc.free_vips(services, self.cidr)
        generators = self.store.list(ListQuery(type=hostnames.TYPE)).items
        names = hostnames.generate(generators, [s for owned in by_mesh.values() for s in owned], "meshService",
                                   self.zone)
        for name, owned in sorted(by_mesh.items()):
            self._update_status(name, owned, meshes[name], dataplanes(name), free, names)
        self._update_external(set(meshes), generators)

    def _update_external(self, meshes: set[str], generators: list[Resource]) -> None:
        """MeshExternalServices get a VIP (`status.vip`) and their hostnames, as Kuma's allocator and
        hostname generator give them."""
        externals = sorted((e for e in self.store.list(ListQuery(type=msvc.EXTERNAL_TYPE)).items
                            if e.mesh in meshes), key=lambda e: (e.mesh, e.name))
        if not externals:
            return
        free = msvc.free_vips(externals, self.external_cidr)
        names = hostnames.generate(generators, externals, "meshExternalService", self.zone)
        for mes in externals:
            status = msvc.with_hostnames(mes.content.get("status") or {}, names.get((mes.mesh, mes.name)))
            if not msvc.vips_of(mes):
                address = next(free, None)
                if address is None:
                    log.error("MeshExternalService %s/%s: no virtual IP left in %s", mes.mesh, mes.name,
                              self.external_cidr)
                else:
                    status["vip"] = {"ip": address}
            content = {**mes.content, "status": status}
            if content != mes.content:
                self._apply(msvc.Write("update", mes.mesh, mes.name, content, mes.labels, mes.version,
                                       msvc.EXTERNAL_TYPE))

    def _services(self) -> list[Resource]:
        return sorted(self.store.list(ListQuery(type=msvc.TYPE)).items, key=lambda s: (s.mesh, s.name))

    def _update_status(self, mesh: str, services: list[Resource], mesh_res: Resource, dataplanes: list[Resource],
                       free: Iterator[str], names: dict[tuple[str, str], hostnames.Generated]) -> None:
        insights = {i.name: i for i in self.store.list(ListQuery(type="DataplaneInsight", mesh=mesh)).items}
        proxies = [msvc.Proxy(dp, bool(open_subscriptions(insights.get(dp.name))),
                              str(((insights[dp.name].content.get("mTLS") or {}) if dp.name in insights else {})
                                  .get("issuedBackend") or ""))
                   for dp in dataplanes]
        mtls = bool((mesh_res.content.get("mtls") or {}).get("enabledBackend"))
        for ms in services:
            spec, status = msvc.status(ms, proxies, mtls)
            status = msvc.with_hostnames(status, names.get((mesh, ms.name)))
            if not msvc.vips_of(ms):
                address = next(free, None)
                if address is None:
                    log.error("MeshService %s/%s: no virtual IP left in %s", mesh, ms.name, self.cidr)
                else:
                    status = {**status, "vips": [{"ip": address}]}
            content = {**ms.content, "spec": spec, "status": status}
            if content != ms.content:
                self._apply(msvc.Write("update", mesh, ms.name, content, ms.labels, ms.version))

    def _apply(self, write: msvc.Write) -> None:
        try:
            if write.op == "delete":
                self.store.delete(write.type, write.mesh, write.name, write.version)
            else:
                res = Resource(write.type, write.mesh, write.name, write.content, write.labels, version=write.version)
                (self.store.create(res) if write.op == "create" else self.store.update(res, write.version))
        except (AlreadyExists, Conflict, NotFound):
            return   # changed meanwhile: the next round starts from what is stored
        if write.op != "update" or msvc.GRACE_LABEL in write.labels:
            log.info("%s %s/%s: %s%s", write.type, write.mesh, write.name, write.op,
                     " (deletion grace period started)" if msvc.GRACE_LABEL in write.labels else "")
