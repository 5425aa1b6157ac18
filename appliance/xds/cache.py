"""What every connected proxy should have, kept current by store changes (no polling).

A store write hands its changes to the event loop (one thread-safe call); affected meshes get a
new MeshSnapshot after a few milliseconds of debounce; only proxies of those meshes are woken,
and the server sends only what changed.
"""
from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Callable

from appliance.core.events import Change
from appliance.store import Store
from appliance.xds.identity import IdentityProvider
from appliance.xds.model import Identity, MeshSnapshot, Proxy
from appliance.xds.resources import Packed, Resources, pack_all
from appliance.xds.snapshot import build_snapshot, proxy_from_dataplane

log = logging.getLogger("appliance.xds")

# (snapshot, proxy, identity, cache shared by the proxies of one snapshot) -> resources
Generate = Callable[[MeshSnapshot, Proxy, Identity | None, dict], Resources]
DEBOUNCE = 0.005
# types whose changes never alter generated config
_IGNORED = {"DataplaneInsight", "ZoneEgressInsight", "GlobalSecret"}


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
        self.on_identity: Callable[[tuple[str, str]], None] | None = None
        self._unsubscribe = store.hub.subscribe(self._from_writer_thread)

    def close(self) -> None:
        self._unsubscribe()
        self._pool.shutdown(wait=False, cancel_futures=True)

    # --- change intake -----------------------------------------------------------------------
    def _from_writer_thread(self, changes: list[Change]) -> None:
        meshes = {c.mesh or c.name for c in changes if c.type not in _IGNORED
                  and (c.mesh or c.type == "Mesh")}
        if meshes:
            self.loop.call_soon_threadsafe(self._mark_dirty, meshes)

    def _mark_dirty(self, meshes: set[str]) -> None:
        self._dirty |= meshes
        if self._flush is None:
            self._flush = self.loop.call_later(DEBOUNCE, self._rebuild)

    def _rebuild(self) -> None:
        self._flush = None
        dirty, self._dirty = self._dirty, set()
        revision = self.store.revision()
        for mesh in dirty:
            if mesh not in self._watches:
                self._snapshots.pop(mesh, None)
                continue
            self._snapshots[mesh] = build_snapshot(self.store, mesh, revision)
            for watch in self._watches[mesh]:
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
        snapshot = self.snapshot(mesh)
        if snapshot is None or snapshot.mtls is None:
            return
        dataplane = self.store.get("Dataplane", mesh, name)
        if dataplane is None:
            return
        proxy = proxy_from_dataplane(dataplane)
        if self.identities.current(snapshot, proxy) is None:
            await self.loop.run_in_executor(self._pool, self.identities.get, snapshot, proxy)

    def resources(self, watch: ProxyWatch) -> dict[str, dict[str, Packed]]:
        mesh, name = watch.key
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
            self._schedule_renewal(watch)
            if identity and self.on_identity:
                self.on_identity(watch.key)
        return watch.memo

    def _schedule_renewal(self, watch: ProxyWatch) -> None:
        if watch.renewal:
            watch.renewal.cancel()
            watch.renewal = None
        at = self.identities.renew_at(*watch.key)
        if at is not None:
            watch.renewal = self.loop.call_later(max(1.0, at - time.time()), watch.changed.set)

    def generate_for(self, mesh: str, name: str) -> Resources:
        """The config a proxy would get now (for `GET .../dataplanes/{name}/_config`)."""
        snapshot = build_snapshot(self.store, mesh, self.store.revision())
        dataplane = self.store.get("Dataplane", mesh, name)
        if snapshot is None or dataplane is None:
            return {}
        proxy = proxy_from_dataplane(dataplane)
        return self.generate(snapshot, proxy, self.identities.get(snapshot, proxy), {})
