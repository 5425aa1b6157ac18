"""What one sidecar gets: its resources, generated when its inputs change and memoized on its ProxyWatch.

The memo is keyed by the mesh's structure (the last change that was more than endpoints), the proxy's
Dataplane version, its certificate and whether the Envoy admin CA is at hand. When only endpoints
changed, the memo keeps everything but its load assignments, which come packed once for all proxies.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

from appliance import telemetry
from appliance.core.resources.model import Resource
from appliance.model.proxy import GenerationError, Identity, MeshSnapshot, Proxy
from appliance.xds import placeholders
from appliance.xds.admin_listener import AdminListener
from appliance.xds.identity import IdentityProvider
from appliance.xds.meshes import MeshSnapshots
from appliance.xds.resources import ENDPOINT, Packed, Resources
from appliance.xds.snapshot import build_snapshot, proxy_from_dataplane
from appliance.xds.watch import ProxyWatch

log = logging.getLogger("appliance.xds")

# (snapshot, proxy, identity, cache shared by the proxies of one snapshot) -> resources; it reads the
# snapshot's endpoints only through the load assignments (ENDPOINT), each `LoadAssignment(snapshot, service)`
Generate = Callable[[MeshSnapshot, Proxy, Identity | None, dict], Resources]


class SidecarResources:
    def __init__(self, meshes: MeshSnapshots, generate: Generate, identities: IdentityProvider, admin: AdminListener,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.meshes = meshes
        self.generate = generate
        self.identities = identities
        self.admin = admin
        self.loop = loop
        self.on_identity: Callable[[tuple[str, str]], None] | None = None

    def _dataplane(self, watch: ProxyWatch) -> tuple[Resource, Proxy] | None:
        if not watch.dataplane_fresh:
            dataplane = self.meshes.store.get("Dataplane", *watch.key)
            watch.dataplane = None if dataplane is None else (dataplane, watch.node.apply(proxy_from_dataplane(dataplane)))
            watch.dataplane_fresh = True
        return watch.dataplane

    def identity_proxies(self, watch: ProxyWatch) -> list[tuple[MeshSnapshot, Proxy]]:
        """The (snapshot, proxy) the sidecar needs a certificate for: none without mTLS."""
        snapshot = self.meshes.snapshot(watch.key[0])
        if snapshot is None or snapshot.mtls is None:
            return []
        found = self._dataplane(watch)
        if found is None:
            return []
        return [(snapshot, found[1])]

    def resources(self, watch: ProxyWatch) -> dict[str, dict[str, Packed]]:
        mesh, name = watch.key
        snapshot = self.meshes.snapshot(mesh)
        found = self._dataplane(watch)
        if snapshot is None or found is None:
            return {}
        dataplane, proxy = found
        identity = self.identities.get(snapshot, proxy)
        structure = self.meshes.structure(snapshot)
        memo_key = (structure, dataplane.version, hash(identity.cert_pem) if identity else None, self.admin.loaded())
        shared = self.meshes.shared_of(snapshot)
        if memo_key == watch.memo_key and watch.memo_revision != snapshot.revision:
            # only endpoints changed since the memo: new load assignments, packed once for all proxies
            watch.memo = {**watch.memo, ENDPOINT: {
                name: self.meshes.packed_load_assignment(snapshot, shared, name)
                for name in watch.memo.get(ENDPOINT, {})}}
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
            resources = self.admin.add(watch, proxy.address, generated)
            # load assignments are the shared ones (generate_sidecar's cache): packed once per mesh revision
            memo = {t: {n: self.meshes.packed_load_assignment(snapshot, shared, n, m) if t == ENDPOINT
                        else shared.pack(t, n, m) for n, m in items.items()} for t, items in resources.items()}
            watch.memo_key = memo_key
            watch.memo_revision = snapshot.revision
            elapsed_ms = (time.perf_counter() - started) * 1000
            # Kuma's result: "generated" for a proxy's first config, "changed" for a regeneration
            telemetry.XDS_GENERATION.observe(elapsed_ms, "dataplane", "changed" if watch.memo else "generated")
            watch.memo = memo
            log.debug("generated %s.%s in %.1f ms", mesh, name, elapsed_ms)
            watch.schedule_renewal(self.loop, self.identities.renew_at(*watch.key))
            if identity and self.on_identity:
                self.on_identity(watch.key)
        return watch.memo

    def preview(self, mesh: str, name: str) -> Resources:
        """The config the sidecar would get now, from placeholders instead of certificates and keys."""
        store = self.meshes.store
        snapshot = build_snapshot(store, mesh, store.revision())
        dataplane = store.get("Dataplane", mesh, name)
        if snapshot is None or dataplane is None:
            return {}
        proxy = proxy_from_dataplane(dataplane)
        # what its kuma-dp announced, when connected (the access log pipe is in its work dir)
        connected = self.meshes.connected(mesh, name)
        if connected is not None:
            proxy = connected.node.apply(proxy)
        return self.generate(placeholders.without_secrets(snapshot), proxy, placeholders.IDENTITY, {})
