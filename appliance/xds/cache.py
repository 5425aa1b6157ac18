"""What every connected proxy should have, kept current by store changes (no polling).

A store write hands its changes to the event loop (one thread-safe call); affected meshes get a
new MeshSnapshot after a few milliseconds of debounce; only proxies of those meshes are woken,
and the server sends only what changed.

Zone egresses are watched under the mesh "" (their node id is `.<name>`): they serve every mesh, so
a change of any mesh wakes them, and a ZoneEgress change (where sidecars send external traffic)
wakes every mesh.
"""
from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Callable

from appliance.core.events import Change
from appliance.store import ListQuery, Store, StoreUnavailable
from appliance.xds.generate.egress import EgressProxy, egress_meshes, generate_egress
from appliance.xds.identity import IdentityProvider
from appliance.xds.model import Identity, MeshSnapshot, Proxy
from appliance.xds.resources import Packed, Resources, pack_all
from appliance.xds.snapshot import build_snapshot, proxy_from_dataplane

log = logging.getLogger("appliance.xds")

# (snapshot, proxy, identity, cache shared by the proxies of one snapshot) -> resources
Generate = Callable[[MeshSnapshot, Proxy, Identity | None, dict], Resources]
DEBOUNCE = 0.005
RETRY_AFTER = 1.0    # a rebuild that could not read the store
# types whose changes never alter generated config
_IGNORED = {"DataplaneInsight", "ZoneEgressInsight", "GlobalSecret"}
EGRESS = ""          # the "mesh" zone egresses are watched under
_ALL_MESHES = "*"    # dirty marker: every mesh


@dataclass(eq=False)
class ProxyWatch:
    key: tuple[str, str]
    features: frozenset[str] = frozenset()   # what kuma-dp/Envoy announced in the node metadata
    ipv6: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    memo_key: tuple = ()
    memo: dict[str, dict[str, Packed]] = field(default_factory=dict)
    renewal: asyncio.TimerHandle | None = None


class XdsCache:
    def __init__(self, store: Store, generate: Generate, loop: asyncio.AbstractEventLoop) -> None:
        self.store = store
        self.generate = generate
        self.loop = loop
        self.identities = IdentityProvider(store)
        # RSA key generation releases the GIL: two threads use both cores
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="identity")
        self._snapshots: dict[str, MeshSnapshot | None] = {}
        # what proxies of one mesh share (clusters, load assignments, the CA secret), per snapshot
        self._shared: dict[str, tuple[int, dict]] = {}
        self._watches: dict[str, set[ProxyWatch]] = {}
        self._dirty: set[str] = set()
        self._flush: asyncio.TimerHandle | None = None
        self._store_down = False
        self.on_identity: Callable[[tuple[str, str]], None] | None = None
        self._unsubscribe = store.hub.subscribe(self._from_writer_thread)

    def close(self) -> None:
        self._unsubscribe()
        self._pool.shutdown(wait=False, cancel_futures=True)

    # --- change intake -----------------------------------------------------------------------
    def _from_writer_thread(self, changes: list[Change]) -> None:
        meshes = {c.mesh or c.name for c in changes if c.type not in _IGNORED
                  and (c.mesh or c.type == "Mesh")}
        if any(c.type == "ZoneEgress" for c in changes):
            meshes.add(_ALL_MESHES)
        if meshes:
            self.loop.call_soon_threadsafe(self._mark_dirty, meshes)

    def _mark_dirty(self, meshes: set[str]) -> None:
        self._dirty |= meshes
        if self._flush is None:
            self._flush = self.loop.call_later(DEBOUNCE, self._rebuild)

    def _rebuild(self) -> None:
        self._flush = None
        dirty, self._dirty = self._dirty, set()
        try:
            self._rebuild_meshes(dirty)
        except StoreUnavailable as e:
            # the database is down: keep what changed and try again, or proxies would miss it for good
            (log.debug if self._store_down else log.warning)("xDS: cannot rebuild the config yet: %s", e)
            self._store_down = True
            self._dirty |= dirty
            if self._flush is None:
                self._flush = self.loop.call_later(RETRY_AFTER, self._rebuild)
            return
        self._store_down = False

    def _rebuild_meshes(self, dirty: set[str]) -> None:
        revision = self.store.revision()
        if _ALL_MESHES in dirty:
            dirty = set(self._snapshots) | set(self._watches) | (dirty - {_ALL_MESHES})
        dirty.discard(EGRESS)
        egresses = self._watches.get(EGRESS, set())
        for mesh in dirty:
            if mesh not in self._watches and not egresses:
                self._snapshots.pop(mesh, None)
                continue
            self._snapshots[mesh] = build_snapshot(self.store, mesh, revision)
            for watch in self._watches.get(mesh, ()):
                watch.changed.set()
        if dirty:
            for watch in egresses:
                watch.changed.set()

    # --- watches -----------------------------------------------------------------------------
    def watch(self, mesh: str, name: str, features: frozenset[str] = frozenset(), ipv6: bool = False
              ) -> ProxyWatch:
        watch = ProxyWatch((mesh, name), features, ipv6)
        self._watches.setdefault(mesh, set()).add(watch)
        return watch

    def unwatch(self, watch: ProxyWatch) -> None:
        if watch.renewal:
            watch.renewal.cancel()
        watches = self._watches.get(watch.key[0])
        if watches:
            watches.discard(watch)
            if not watches:
                del self._watches[watch.key[0]]
                self._snapshots.pop(watch.key[0], None)
                self._shared.pop(watch.key[0], None)

    def snapshot(self, mesh: str) -> MeshSnapshot | None:
        if mesh not in self._snapshots:
            self._snapshots[mesh] = build_snapshot(self.store, mesh, self.store.revision())
        return self._snapshots[mesh]

    # --- what a proxy gets -------------------------------------------------------------------
    async def prepare(self, watch: ProxyWatch) -> None:
        """Issue the proxy's certificate off the loop if it needs one, so `resources` never blocks on RSA."""
        mesh, name = watch.key
        if mesh == EGRESS:
            egress = self._egress(name, watch)
            for snapshot in egress_meshes(self._all_snapshots()) if egress else ():
                proxy = egress.identity_proxy(snapshot.mesh)
                if self.identities.current(snapshot, proxy) is None:
                    await self.loop.run_in_executor(self._pool, self.identities.get, snapshot, proxy)
            return
        snapshot = self.snapshot(mesh)
        if snapshot is None or snapshot.mtls is None:
            return
        dataplane = self.store.get("Dataplane", mesh, name)
        if dataplane is None:
            return
        proxy = proxy_from_dataplane(dataplane)
        if self.identities.current(snapshot, proxy) is None:
            await self.loop.run_in_executor(self._pool, self.identities.get, snapshot, proxy)

    def _all_snapshots(self) -> list[MeshSnapshot]:
        meshes = (m.name for m in self.store.list(ListQuery(type="Mesh")).items)
        return [s for s in map(self.snapshot, meshes) if s is not None]

    def _egress(self, name: str, watch: ProxyWatch | None = None) -> EgressProxy | None:
        resource = self.store.get("ZoneEgress", "", name)
        if resource is None:
            return None
        networking = resource.content.get("networking") or {}
        return EgressProxy(name, str(networking.get("address") or ""), int(networking.get("port") or 0),
                           watch.ipv6 if watch else False)

    def _egress_resources(self, watch: ProxyWatch) -> dict[str, dict[str, Packed]]:
        egress = self._egress(watch.key[1], watch)
        if egress is None:
            return {}
        snapshots = self._all_snapshots()
        identities = {s.mesh: self.identities.get(s, egress.identity_proxy(s.mesh)) for s in egress_meshes(snapshots)}
        memo_key = (egress, tuple((s.mesh, s.revision) for s in snapshots),
                    tuple(hash(i.cert_pem) if i else None for i in identities.values()))
        if memo_key != watch.memo_key:
            watch.memo = pack_all(generate_egress(egress, snapshots, identities))
            watch.memo_key = memo_key
            renewals = [at for s in egress_meshes(snapshots)
                        if (at := self.identities.renew_at(s.mesh, egress.identity_proxy(s.mesh).name)) is not None]
            self._schedule_renewal(watch, min(renewals, default=None))
        return watch.memo

    def resources(self, watch: ProxyWatch) -> dict[str, dict[str, Packed]]:
        mesh, name = watch.key
        if mesh == EGRESS:
            return self._egress_resources(watch)
        snapshot = self.snapshot(mesh)
        dataplane = self.store.get("Dataplane", mesh, name)
        if snapshot is None or dataplane is None:
            return {}
        proxy = replace(proxy_from_dataplane(dataplane), features=watch.features, ipv6_enabled=watch.ipv6)
        identity = self.identities.get(snapshot, proxy)
        memo_key = (snapshot.revision, dataplane.version, hash(identity.cert_pem) if identity else None)
        if memo_key != watch.memo_key:
            started = time.perf_counter()
            revision, shared = self._shared.get(mesh, (-1, {}))
            if revision != snapshot.revision:
                shared = {}
                self._shared[mesh] = (snapshot.revision, shared)
            watch.memo = pack_all(self.generate(snapshot, proxy, identity, shared))
            watch.memo_key = memo_key
            log.debug("generated %s.%s in %.1f ms", mesh, name, (time.perf_counter() - started) * 1000)
            self._schedule_renewal(watch, self.identities.renew_at(*watch.key))
            if identity and self.on_identity:
                self.on_identity(watch.key)
        return watch.memo

    def _schedule_renewal(self, watch: ProxyWatch, at: float | None) -> None:
        if watch.renewal:
            watch.renewal.cancel()
            watch.renewal = None
        if at is not None:
            watch.renewal = self.loop.call_later(max(1.0, at - time.time()), watch.changed.set)

    def generate_for(self, mesh: str, name: str) -> Resources:
        """The config a proxy would get now (for `GET .../dataplanes/{name}/_config`; mesh "" = a zone egress)."""
        if mesh == EGRESS:
            egress = self._egress(name)
            if egress is None:
                return {}
            snapshots = [s for m in self.store.list(ListQuery(type="Mesh")).items
                         if (s := build_snapshot(self.store, m.name, self.store.revision())) is not None]
            return generate_egress(egress, snapshots, {s.mesh: self.identities.get(s, egress.identity_proxy(s.mesh))
                                                       for s in egress_meshes(snapshots)})
        snapshot = build_snapshot(self.store, mesh, self.store.revision())
        dataplane = self.store.get("Dataplane", mesh, name)
        if snapshot is None or dataplane is None:
            return {}
        proxy = proxy_from_dataplane(dataplane)
        return self.generate(snapshot, proxy, self.identities.get(snapshot, proxy), {})
