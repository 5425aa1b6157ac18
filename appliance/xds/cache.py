"""What every connected proxy should have, kept current by store changes (no polling).

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
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from google.protobuf.message import Message

from appliance import telemetry
from appliance.core.events import Change
from appliance.core.resources.model import Resource
from appliance.store import ListQuery, Store, StoreUnavailable
from appliance.xds import placeholders
from appliance.ca.envoy_admin import EnvoyAdminCa, issue_server_cert
from appliance.xds.admin_tls import load_admin_ca
from appliance.xds.generate.admin import AdminEndpoint, admin_resources, needs_listener
from appliance.xds.generate.egress import EgressProxy, egress_meshes, generate_egress
from appliance.xds.generate.endpoints import load_assignment_for
from appliance.xds.identity import IdentityProvider
from appliance.model.proxy import GenerationError, Identity, Inbound, MeshSnapshot, Proxy
from appliance.xds.resources import ENDPOINT, Packed, Resources, pack, pack_all
from appliance.xds.snapshot import build_snapshot, dataplane_inbounds, proxy_from_dataplane

log = logging.getLogger("appliance.xds")

# (snapshot, proxy, identity, cache shared by the proxies of one snapshot) -> resources; it reads the
# snapshot's endpoints only through the load assignments (ENDPOINT), each `LoadAssignment(snapshot, service)`
Generate = Callable[[MeshSnapshot, Proxy, Identity | None, dict], Resources]
# (snapshot, service) -> its ClusterLoadAssignment
LoadAssignment = Callable[[MeshSnapshot, str], Message]
DEBOUNCE = 0.005
RETRY_AFTER = 1.0    # a rebuild that could not read the store
ADMIN_CA_RETRY = 5.0  # a missing or unusable Envoy admin CA is looked for again after this long
# types whose changes never alter generated config
_IGNORED = {"DataplaneInsight", "ZoneEgressInsight", "GlobalSecret"}
EGRESS = ""          # the "mesh" zone egresses are watched under
_ALL_MESHES = "*"    # dirty marker: every mesh


class Signal:
    """Set when a proxy's config may have changed; calls the stream's callback once until cleared
    (cheaper than an asyncio.Event and a task waiting on it per push)."""
    __slots__ = ("pending", "callback")

    def __init__(self) -> None:
        self.pending = False
        self.callback: Callable[[], None] | None = None

    def set(self) -> None:
        if not self.pending:
            self.pending = True
            if self.callback is not None:
                self.callback()

    def clear(self) -> None:
        self.pending = False


@dataclass(frozen=True)
class NodeMetadata:
    """What kuma-dp/Envoy announced in the node metadata."""
    features: frozenset[str] = frozenset()
    ipv6: bool = False
    workdir: str = ""
    metrics_cert_path: str = ""
    metrics_key_path: str = ""
    admin: AdminEndpoint | None = None       # where its Envoy admin API is


@dataclass(eq=False)
class ProxyWatch:
    key: tuple[str, str]
    node: NodeMetadata = field(default_factory=NodeMetadata)
    admin_cert: tuple[str, bytes, bytes] | None = None   # (address, cert PEM, key PEM) of its admin listener
    changed: Signal = field(default_factory=Signal)
    memo_key: tuple = ()
    memo: dict[str, dict[str, Packed]] = field(default_factory=dict)
    memo_revision: int = -1                  # the snapshot revision whose endpoints `memo` holds
    renewal: asyncio.TimerHandle | None = None
    # the proxy's Dataplane as last read, until a change of it arrives (not read again per push or ACK)
    dataplane: tuple[Resource, Proxy] | None = None
    dataplane_fresh: bool = False


@dataclass
class _Shared:
    """What the proxies of one mesh share at one snapshot revision: generated messages (clusters, load
    assignments, outbound listeners, the CA secret) by the generator's cache keys, those messages packed
    (serialized once for all proxies), and packed load assignments by service."""
    revision: int
    messages: dict = field(default_factory=dict)
    load_assignments: dict[str, Packed] = field(default_factory=dict)
    # (id of a message in `messages`, resource name) -> (the message, packed); `messages` keeps the ids valid
    packed: dict[tuple[int, str], tuple[Message, Packed]] = field(default_factory=dict)
    _ids: set[int] = field(default_factory=set)
    _counted: int = 0

    def pack(self, type_url: str, name: str, message: Message) -> Packed:
        hit = self.packed.get((id(message), name))
        if hit is not None and hit[0] is message:
            return hit[1]
        packed = pack(type_url, name, message)
        if len(self.messages) != self._counted:
            self._ids = {id(m) for m in self.messages.values()}
            self._counted = len(self.messages)
        if id(message) in self._ids:
            self.packed[(id(message), name)] = (message, packed)
        return packed


def _endpoints_changed(old: MeshSnapshot | None, new: MeshSnapshot | None) -> set[str] | None:
    """The services whose endpoints differ when that is all that differs between two snapshots, else None.

    Only load assignments read `endpoints` (xds/generate/endpoints.py): after such a change every
    other resource of every proxy is the same, so proxies get new load assignments and nothing else."""
    if old is None or new is None or replace(new, revision=old.revision, endpoints=old.endpoints) != old:
        return None
    services = {s for s in old.endpoints.keys() | new.endpoints.keys() if old.endpoints.get(s) != new.endpoints.get(s)}
    # the load assignments of a service's parts (route backends) change with it
    return services | {name for name, (service, _) in new.subsets.items() if service in services}


class XdsCache:
    def __init__(self, store: Store, generate: Generate, loop: asyncio.AbstractEventLoop,
                 load_assignment: LoadAssignment = load_assignment_for, identities_dir: Path | None = None) -> None:
        """`load_assignment` is what `generate` puts under ENDPOINT for a service (the same for every proxy);
        `identities_dir` keeps issued certificates for the next start."""
        self.store = store
        self.generate = generate
        self.load_assignment = load_assignment
        self.loop = loop
        self.identities = IdentityProvider(store, directory=identities_dir)
        # the CA's RSA signature releases the GIL: two threads use both cores
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="identity")
        self._snapshots: dict[str, MeshSnapshot | None] = {}
        self._shared: dict[str, _Shared] = {}
        # per mesh: the revision of the last change that was more than endpoints
        self._structure: dict[str, int] = {}
        # per mesh with a snapshot: its dataplanes' inbounds, updated per changed dataplane (not re-read whole)
        self._inbounds: dict[str, dict[str, tuple[Inbound, ...]]] = {}
        self._watches: dict[str, set[ProxyWatch]] = {}
        self._dirty: set[str] = set()
        self._dirty_proxies: set[tuple[str, str]] = set()
        self._flush: asyncio.TimerHandle | None = None
        self._store_down = False
        self._admin_ca: EnvoyAdminCa | None = None
        self._admin_ca_retry = 0.0
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
        self._admin_ca: EnvoyAdminCa | None = None
        self._admin_ca_retry = 0.0

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
                self._shared.pop(mesh, None)
            else:
                self._carry_shared(mesh, revision, changed)
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

    def _carry_shared(self, mesh: str, revision: int, changed: set[str]) -> None:
        """After an endpoints-only change, what proxies share stays valid but for those services' load assignments."""
        shared = self._shared.get(mesh)
        if shared is None:
            return
        shared.revision = revision
        shared.messages = {k: v for k, v in shared.messages.items() if not (k[0] == "cla" and k[1] in changed)}
        shared.load_assignments = {k: v for k, v in shared.load_assignments.items() if k not in changed}
        kept = {id(m) for m in shared.messages.values()}
        shared.packed = {k: v for k, v in shared.packed.items() if k[0] in kept}
        shared._counted = 0

    def _shared_of(self, snapshot: MeshSnapshot) -> _Shared:
        shared = self._shared.get(snapshot.mesh)
        if shared is None or shared.revision != snapshot.revision:
            shared = self._shared[snapshot.mesh] = _Shared(snapshot.revision)
        return shared

    def _load_assignment(self, snapshot: MeshSnapshot, shared: _Shared, service: str,
                         message: Message | None = None) -> Packed:
        packed = shared.load_assignments.get(service)
        if packed is None:
            message = message or self.load_assignment(snapshot, service)
            packed = shared.load_assignments[service] = pack(ENDPOINT, service, message)
        return packed

    # --- watches -----------------------------------------------------------------------------
    def watch(self, mesh: str, name: str, node: NodeMetadata | None = None) -> ProxyWatch:
        watch = ProxyWatch((mesh, name), node or NodeMetadata())
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
                self._forget(watch.key[0])

    def snapshot(self, mesh: str) -> MeshSnapshot | None:
        if mesh not in self._snapshots:
            self._snapshots[mesh] = self._build(mesh, self.store.revision())
        return self._snapshots[mesh]

    # --- what a proxy gets -------------------------------------------------------------------
    def _dataplane(self, watch: ProxyWatch) -> tuple[Resource, Proxy] | None:
        if not watch.dataplane_fresh:
            dataplane = self.store.get("Dataplane", *watch.key)
            node = watch.node
            watch.dataplane = None if dataplane is None else (dataplane, replace(
                proxy_from_dataplane(dataplane), features=node.features, ipv6_enabled=node.ipv6,
                work_dir=node.workdir, metrics_cert_path=node.metrics_cert_path,
                metrics_key_path=node.metrics_key_path))
            watch.dataplane_fresh = True
        return watch.dataplane

    async def prepare(self, watch: ProxyWatch) -> None:
        """Issue the proxy's certificate off the loop if it needs one, so `resources` never waits for a signature."""
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
        found = self._dataplane(watch)
        if found is None:
            return
        proxy = found[1]
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
                           watch.node.ipv6 if watch else False)

    def _egress_resources(self, watch: ProxyWatch) -> dict[str, dict[str, Packed]]:
        egress = self._egress(watch.key[1], watch)
        if egress is None:
            return {}
        snapshots = self._all_snapshots()
        identities = {s.mesh: self.identities.get(s, egress.identity_proxy(s.mesh)) for s in egress_meshes(snapshots)}
        memo_key = (egress, tuple((s.mesh, s.revision) for s in snapshots),
                    tuple(hash(i.cert_pem) if i else None for i in identities.values()))
        memo_key += (self._admin_ca_loaded(),)
        if memo_key != watch.memo_key:
            started = time.perf_counter()
            try:
                generated = generate_egress(egress, snapshots, identities)
            except Exception:
                telemetry.XDS_GENERATION_ERRORS.inc()
                raise
            watch.memo = pack_all(self._with_admin(watch, egress.address, generated))
            telemetry.XDS_GENERATION.observe((time.perf_counter() - started) * 1000, "egress", "changed")
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
        found = self._dataplane(watch)
        if snapshot is None or found is None:
            return {}
        dataplane, proxy = found
        identity = self.identities.get(snapshot, proxy)
        structure = self._structure.setdefault(mesh, snapshot.revision)
        memo_key = (structure, dataplane.version, hash(identity.cert_pem) if identity else None,
                    self._admin_ca_loaded())
        shared = self._shared_of(snapshot)
        if memo_key == watch.memo_key and watch.memo_revision != snapshot.revision:
            # only endpoints changed since the memo: new load assignments, packed once for all proxies
            watch.memo = {**watch.memo, ENDPOINT: {
                name: self._load_assignment(snapshot, shared, name) for name in watch.memo.get(ENDPOINT, {})}}
            watch.memo_revision = snapshot.revision
        if memo_key != watch.memo_key:
            started = time.perf_counter()
            try:
                generated = self.generate(snapshot, proxy, identity, shared.messages)
            except GenerationError as e:
                # as Kuma: the proxy keeps the last config it got; the next change of its inputs tries again
                telemetry.XDS_GENERATION_ERRORS.inc()
                log.warning("cannot generate the config of %s.%s, it keeps its last one: %s", mesh, name, e)
                watch.memo_key = memo_key
                return watch.memo
            except Exception:
                telemetry.XDS_GENERATION_ERRORS.inc()
                raise
            resources = self._with_admin(watch, proxy.address, generated)
            # load assignments are the shared ones (generate_sidecar's cache): packed once per mesh revision
            memo = {t: {n: self._load_assignment(snapshot, shared, n, m) if t == ENDPOINT
                        else shared.pack(t, n, m) for n, m in items.items()} for t, items in resources.items()}
            watch.memo_key = memo_key
            watch.memo_revision = snapshot.revision
            elapsed_ms = (time.perf_counter() - started) * 1000
            # Kuma's result: "generated" for a proxy's first config, "changed" for a regeneration
            telemetry.XDS_GENERATION.observe(elapsed_ms, "dataplane", "changed" if watch.memo else "generated")
            watch.memo = memo
            log.debug("generated %s.%s in %.1f ms", mesh, name, elapsed_ms)
            self._schedule_renewal(watch, self.identities.renew_at(*watch.key))
            if identity and self.on_identity:
                self.on_identity(watch.key)
        return watch.memo

    def _admin_ca_loaded(self) -> bool:
        """Whether the Envoy admin CA is at hand (read once: as in Kuma, a new one needs a restart). While it
        is missing (the leader creates it) or unusable, the store is asked again at most every few seconds."""
        if self._admin_ca is None and time.monotonic() >= self._admin_ca_retry:
            self._admin_ca = load_admin_ca(self.store)
            self._admin_ca_retry = time.monotonic() + ADMIN_CA_RETRY
        return self._admin_ca is not None

    def _with_admin(self, watch: ProxyWatch, address: str, resources: Resources) -> Resources:
        """`resources` plus the proxy's `kuma:envoy:admin` listener, when it announced its admin API and
        the Envoy admin CA exists (without it, no listener: nobody reaches the admin API)."""
        admin, ca = watch.node.admin, self._admin_ca
        if admin is None or ca is None or not needs_listener(address, admin):
            return resources
        if watch.admin_cert is None or watch.admin_cert[0] != address:
            watch.admin_cert = (address, *issue_server_cert(ca, address))
        added = admin_resources(address, admin, watch.admin_cert[1], watch.admin_cert[2], ca.cert_pem)
        return {t: {**items, **added.get(t, {})} for t, items in resources.items()}

    def _schedule_renewal(self, watch: ProxyWatch, at: float | None) -> None:
        if watch.renewal:
            watch.renewal.cancel()
            watch.renewal = None
        if at is not None:
            watch.renewal = self.loop.call_later(max(1.0, at - time.time()), watch.changed.set)

    def generate_for(self, mesh: str, name: str) -> Resources:
        """The config a proxy would get now (for `GET .../dataplanes/{name}/_config`; mesh "" = a zone egress),
        generated from placeholders instead of certificates and keys (xds/placeholders.py): an API answer
        never carries a secret, and looking at a proxy issues it no certificate."""
        if mesh == EGRESS:
            egress = self._egress(name)
            if egress is None:
                return {}
            snapshots = [placeholders.without_secrets(s) for m in self.store.list(ListQuery(type="Mesh")).items
                         if (s := build_snapshot(self.store, m.name, self.store.revision())) is not None]
            return generate_egress(egress, snapshots, {s.mesh: placeholders.IDENTITY for s in egress_meshes(snapshots)})
        snapshot = build_snapshot(self.store, mesh, self.store.revision())
        dataplane = self.store.get("Dataplane", mesh, name)
        if snapshot is None or dataplane is None:
            return {}
        proxy = proxy_from_dataplane(dataplane)
        # what its kuma-dp announced, when connected (the access log pipe is in its work dir)
        connected = next((w for w in list(self._watches.get(mesh, ())) if w.key == (mesh, name)), None)
        if connected is not None:
            node = connected.node
            proxy = replace(proxy, features=node.features, ipv6_enabled=node.ipv6, work_dir=node.workdir,
                            metrics_cert_path=node.metrics_cert_path, metrics_key_path=node.metrics_key_path)
        return self.generate(placeholders.without_secrets(snapshot), proxy, placeholders.IDENTITY, {})
