"""What a zone egress gets: one config for every mesh with mTLS, memoized on its ProxyWatch.

A zone egress is watched under the mesh "" (MeshSnapshots wakes it on a change of any mesh); its memo is
keyed by the egress, every mesh's revision, its certificate in each mesh and whether the Envoy admin CA
is at hand.
"""
from __future__ import annotations

import asyncio
import time

from appliance import telemetry
from appliance.model.proxy import MeshSnapshot, Proxy
from appliance.store import ListQuery
from appliance.xds import placeholders
from appliance.xds.admin_listener import AdminListener
from appliance.xds.generate.egress import EgressProxy, egress_meshes, generate_egress
from appliance.xds.identity import IdentityProvider
from appliance.xds.meshes import MeshSnapshots
from appliance.xds.resources import Packed, Resources, pack_all
from appliance.xds.snapshot import build_snapshot
from appliance.xds.watch import ProxyWatch


class EgressResources:
    def __init__(self, meshes: MeshSnapshots, identities: IdentityProvider, admin: AdminListener,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.meshes = meshes
        self.identities = identities
        self.admin = admin
        self.loop = loop

    def _egress(self, name: str, watch: ProxyWatch | None = None) -> EgressProxy | None:
        resource = self.meshes.store.get("ZoneEgress", "", name)
        if resource is None:
            return None
        networking = resource.content.get("networking") or {}
        return EgressProxy(name, str(networking.get("address") or ""), int(networking.get("port") or 0),
                           watch.node.ipv6 if watch else False)

    def identity_proxies(self, watch: ProxyWatch) -> list[tuple[MeshSnapshot, Proxy]]:
        """The (snapshot, proxy) the egress needs a certificate for: one per mesh it serves."""
        egress = self._egress(watch.key[1], watch)
        return [(s, egress.identity_proxy(s.mesh)) for s in egress_meshes(self.meshes.all_snapshots())] if egress else []

    def resources(self, watch: ProxyWatch) -> dict[str, dict[str, Packed]]:
        egress = self._egress(watch.key[1], watch)
        if egress is None:
            return {}
        snapshots = self.meshes.all_snapshots()
        identities = {s.mesh: self.identities.get(s, egress.identity_proxy(s.mesh)) for s in egress_meshes(snapshots)}
        memo_key = (egress, tuple((s.mesh, s.revision) for s in snapshots),
                    tuple(hash(i.cert_pem) if i else None for i in identities.values()))
        memo_key += (self.admin.loaded(),)
        if memo_key != watch.memo_key:
            started = time.perf_counter()
            try:
                generated = generate_egress(egress, snapshots, identities)
            except Exception:
                telemetry.XDS_GENERATION_ERRORS.inc()
                raise
            watch.memo = pack_all(self.admin.add(watch, egress.address, generated))
            telemetry.XDS_GENERATION.observe((time.perf_counter() - started) * 1000, "egress", "changed")
            watch.memo_key = memo_key
            renewals = [at for s in egress_meshes(snapshots)
                        if (at := self.identities.renew_at(s.mesh, egress.identity_proxy(s.mesh).name)) is not None]
            watch.schedule_renewal(self.loop, min(renewals, default=None))
        return watch.memo

    def preview(self, name: str) -> Resources:
        """The config the egress would get now, from placeholders instead of certificates and keys."""
        egress = self._egress(name)
        if egress is None:
            return {}
        store = self.meshes.store
        snapshots = [placeholders.without_secrets(s) for m in store.list(ListQuery(type="Mesh")).items
                     if (s := build_snapshot(store, m.name, store.revision())) is not None]
        return generate_egress(egress, snapshots, {s.mesh: placeholders.IDENTITY for s in egress_meshes(snapshots)})
