"""Per-mesh snapshots, kept current by store changes (no polling), and the proxies watching each mesh.

A store write hands its changes to the event loop (one thread-safe call); affected meshes get a
new MeshSnapshot after a few milliseconds of debounce; only proxies of those meshes are woken,
and the server sends only what changed. A change that moves only endpoints (a dataplane joins,
leaves, or changes health) regenerates nothing: the services' load assignments are built and
packed once, and only the proxies that use them (and the changed dataplanes' own) are woken.

Zone egresses are watched under the mesh "" (their node id is `.<name>`): they serve every mesh, so
a change of any mesh wakes them, and a ZoneEgress change (where sidecars send external traffic)
wakes every mesh.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import Callable

from google.protobuf.message import Message

from appliance.core.events import Change
from appliance.model.proxy import Inbound, MeshSnapshot
from appliance.store import ListQuery, Store, StoreUnavailable
from appliance.model.vips import mesh_of_config
from appliance.xds import cross_mesh
from appliance.xds.resources import ENDPOINT, Packed, pack
from appliance.xds.shared import Shared
from appliance.xds.snapshot import build_snapshot, dataplane_inbounds, proxy_from_dataplane
from appliance.xds.watch import ProxyWatch

log = logging.getLogger("appliance.xds")

# (snapshot, service) -> its ClusterLoadAssignment
LoadAssignment = Callable[[MeshSnapshot, str], Message]
DEBOUNCE = 0.005
RETRY_AFTER = 1.0    # a rebuild that could not read the store
# types whose changes never alter generated config
_IGNORED = {"DataplaneInsight", "ZoneEgressInsight", "GlobalSecret"}
EGRESS = ""          # the "mesh" zone egresses are watched under
_ALL_MESHES = "*"    # dirty marker: every mesh


def _endpoints_changed(old: MeshSnapshot | None, new: MeshSnapshot | None) -> set[str] | None:
    """The services whose endpoints differ when that is all that differs between two snapshots, else None.

    Only load assignments read `endpoints` (xds/generate/endpoints.py): after such a change every
    other resource of every proxy is the same, so proxies get new load assignments and nothing else."""
    if old is None or new is None or replace(new, revision=old.revision, endpoints=old.endpoints) != old:
        return None
    services = {s for s in old.endpoints.keys() | new.endpoints.keys() if old.endpoints.get(s) != new.endpoints.get(s)}
    # the load assignments of a service's parts (route backends) change with it
    return services | {name for name, (service, _) in new.subsets.items() if service in services}


def _policy_kinds_changed(old: MeshSnapshot | None, new: MeshSnapshot | None) -> set[str] | None:
    """The policy kinds that differ when policies are all that differs between two snapshots, else None."""
    if old is None or new is None or replace(new, revision=old.revision, policies=old.policies) != old:
        return None
    return {k for k in old.policies.keys() | new.policies.keys() if old.policies.get(k) != new.policies.get(k)}


class MeshSnapshots:
    def __init__(self, store: Store, loop: asyncio.AbstractEventLoop, load_assignment: LoadAssignment,
                 on_rebuilt: Callable[[], None] = lambda: None) -> None:
        """`load_assignment` builds a service's load assignment (the same for every proxy); `on_rebuilt` is
        called after every rebuild that could read the store."""
        self.store = store
        self.loop = loop
        self.load_assignment = load_assignment
        self.on_rebuilt = on_rebuilt
        self._snapshots: dict[str, MeshSnapshot | None] = {}
        self._shared: dict[str, Shared] = {}
        # per mesh: the revision of the last change that was more than endpoints
        self._structure: dict[str, int] = {}
        # per mesh with a snapshot: its dataplanes' inbounds, updated per changed dataplane (not re-read whole)
        self._inbounds: dict[str, dict[str, tuple[Inbound, ...]]] = {}
        self._watches: dict[str, set[ProxyWatch]] = {}
        self._dirty: set[str] = set()
        self._dirty_proxies: set[tuple[str, str]] = set()
        self._flush: asyncio.TimerHandle | None = None
        self._store_down = False
        self._unsubscribe = store.hub.subscribe(self._from_writer_thread)

    def close(self) -> None:
        self._unsubscribe()

    # --- change intake -----------------------------------------------------------------------
    def _from_writer_thread(self, changes: list[Change]) -> None:
        meshes = {c.mesh or c.name for c in changes if c.type not in _IGNORED
                  and (c.mesh or c.type == "Mesh")}
        # a mesh's virtual IPs (global Config kuma-<mesh>-dns-vips) are part of its snapshot
        meshes |= {m for c in changes if c.type == "Config" and (m := mesh_of_config(c.name)) is not None}
        if any(c.type == "ZoneEgress" for c in changes):
            meshes.add(_ALL_MESHES)
        # a mesh's snapshot holds what it needs of the other meshes' crossMesh gateways
        dependent = cross_mesh.dependent_meshes(changes, self._snapshots)
        meshes |= {_ALL_MESHES} if dependent is None else dependent
        proxies = {(c.mesh, c.name) for c in changes if c.type == "Dataplane"}
        if meshes:
            self.loop.call_soon_threadsafe(self._mark_dirty, meshes, proxies)

    def _mark_dirty(self, meshes: set[str], proxies: set[tuple[str, str]]) -> None:
        self._dirty |= meshes
        self._dirty_proxies |= proxies
        for mesh, _ in proxies:
            for watch in self._watches.get(mesh, ()):
                if watch.key in proxies:
                    watch.dataplane_fresh = False
        if self._flush is None:
            self._flush = self.loop.call_later(DEBOUNCE, self._rebuild)

    def _rebuild(self) -> None:
        self._flush = None
        dirty, self._dirty = self._dirty, set()
        proxies, self._dirty_proxies = self._dirty_proxies, set()
        try:
            self._rebuild_meshes(dirty, proxies)
        except StoreUnavailable as e:
            # the database is down: keep what changed and try again, or proxies would miss it for good
            (log.debug if self._store_down else log.warning)("xDS: cannot rebuild the config yet: %s", e)
            self._store_down = True
            self._dirty |= dirty
            self._dirty_proxies |= proxies
            if self._flush is None:
                self._flush = self.loop.call_later(RETRY_AFTER, self._rebuild)
            return
        self._store_down = False
        self.on_rebuilt()

    def _rebuild_meshes(self, dirty: set[str], proxies: set[tuple[str, str]]) -> None:
        revision = self.store.revision()
        if _ALL_MESHES in dirty:
            dirty = set(self._snapshots) | set(self._watches) | (dirty - {_ALL_MESHES})
        dirty.discard(EGRESS)
        egresses = self._watches.get(EGRESS, set())
        for mesh in dirty:
            if mesh not in self._watches and not egresses:
                self._forget(mesh)
                continue
            old = self._snapshots.get(mesh)
            new = self._snapshots[mesh] = self._build(mesh, revision, {n for m, n in proxies if m == mesh})
            changed = _endpoints_changed(old, new)
            if changed is None:
                self._structure[mesh] = revision
                previous = self._shared.pop(mesh, None)
                kinds = _policy_kinds_changed(old, new)
                if previous is not None and kinds is not None:
                    watched = {id(w.dataplane[1]) for w in self._watches.get(mesh, ()) if w.dataplane is not None}
                    self._shared[mesh] = previous.successor(revision, kinds, watched)
            else:
                shared = self._shared.get(mesh)
                if shared is not None:
                    shared.carry(revision, changed)
            for watch in self._watches.get(mesh, ()):
                # an endpoints-only change concerns the proxies of those services and the changed dataplanes
                if (changed is None or not watch.memo or watch.key in proxies
                        or not changed.isdisjoint(watch.memo.get(ENDPOINT, ()))):
                    watch.changed.set()
        if dirty:
            for watch in egresses:
                watch.changed.set()

    def _build(self, mesh: str, revision: int, changed_dataplanes: set[str] = frozenset()) -> MeshSnapshot | None:
        inbounds = self._inbounds.get(mesh)
        if inbounds is None:
            inbounds = self._inbounds[mesh] = dataplane_inbounds(self.store, mesh)
        else:
            for name in changed_dataplanes:
                dataplane = self.store.get("Dataplane", mesh, name)
                if dataplane is None:
                    inbounds.pop(name, None)
                else:
                    inbounds[name] = proxy_from_dataplane(dataplane).inbounds
        return build_snapshot(self.store, mesh, revision, inbounds)

    def _forget(self, mesh: str) -> None:
        for cached in (self._snapshots, self._shared, self._structure, self._inbounds):
            cached.pop(mesh, None)  # type: ignore[attr-defined]

    # --- watches -----------------------------------------------------------------------------
    def add(self, watch: ProxyWatch) -> None:
        self._watches.setdefault(watch.key[0], set()).add(watch)

    def remove(self, watch: ProxyWatch) -> None:
        watches = self._watches.get(watch.key[0])
        if watches:
            watches.discard(watch)
            if not watches:
                del self._watches[watch.key[0]]
                self._forget(watch.key[0])

    def connected(self, mesh: str, name: str) -> ProxyWatch | None:
        """A watch of that proxy, when one is connected."""
        return next((w for w in list(self._watches.get(mesh, ())) if w.key == (mesh, name)), None)

    # --- what proxies read -------------------------------------------------------------------
    def snapshot(self, mesh: str) -> MeshSnapshot | None:
        if mesh not in self._snapshots:
            self._snapshots[mesh] = self._build(mesh, self.store.revision())
        return self._snapshots[mesh]

    def all_snapshots(self) -> list[MeshSnapshot]:
        meshes = (m.name for m in self.store.list(ListQuery(type="Mesh")).items)
        return [s for s in map(self.snapshot, meshes) if s is not None]

    def structure(self, snapshot: MeshSnapshot) -> int:
        """The revision of the mesh's last change that was more than endpoints."""
        return self._structure.setdefault(snapshot.mesh, snapshot.revision)

    def shared_of(self, snapshot: MeshSnapshot) -> Shared:
        shared = self._shared.get(snapshot.mesh)
        if shared is None or shared.revision != snapshot.revision:
            shared = self._shared[snapshot.mesh] = Shared(snapshot.revision)
        return shared

    def packed_load_assignment(self, snapshot: MeshSnapshot, shared: Shared, service: str,
                               message: Message | None = None) -> Packed:
        """The service's load assignment (`message` when the generator built it), packed once per mesh revision."""
        packed = shared.load_assignments.get(service)
        if packed is None:
            message = message or self.load_assignment(snapshot, service)
            packed = shared.load_assignments[service] = pack(ENDPOINT, service, message)
        return packed
