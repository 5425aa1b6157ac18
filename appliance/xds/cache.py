"""What every connected proxy should have, kept current by store changes (no polling).

XdsCache is the ConfigSource (xds/server.py) kuma-cp runs, composed of:
- MeshSnapshots (xds/meshes.py): per-mesh snapshots, change intake, debounce, rebuild, the
  endpoints-only shortcut, and which proxies watch which mesh;
- SidecarResources (xds/sidecar.py) and EgressResources (xds/egress_resources.py): what one sidecar
  or zone egress gets, memoized on its ProxyWatch (xds/watch.py);
- AdminListener (xds/admin_listener.py): the proxies' `kuma:envoy:admin` listener;
- IdentityProvider (xds/identity.py): the proxies' certificates, issued off the event loop here.
"""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from appliance.model.proxy import MeshSnapshot
from appliance.xds.admin_listener import AdminListener
from appliance.xds.egress_resources import EgressResources
from appliance.xds.generate.endpoints import load_assignment_for
from appliance.xds.identity import IdentityProvider
from appliance.xds.meshes import EGRESS, LoadAssignment, MeshSnapshots
from appliance.xds.resources import Packed, Resources
from appliance.xds.sidecar import Generate, SidecarResources
from appliance.xds.watch import NodeMetadata, ProxyWatch
from appliance.store import Store

__all__ = ["EGRESS", "Generate", "LoadAssignment", "NodeMetadata", "ProxyWatch", "XdsCache"]


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
        self.admin = AdminListener(store)
        self.meshes = MeshSnapshots(store, loop, load_assignment, on_rebuilt=self.admin.forget)
        self.sidecars = SidecarResources(self.meshes, generate, self.identities, self.admin, loop)
        self.egresses = EgressResources(self.meshes, self.identities, self.admin, loop)

    @property
    def on_identity(self) -> Callable[[tuple[str, str]], None] | None:
        """Called with a sidecar's key when it got config with a (new or renewed) certificate."""
        return self.sidecars.on_identity

    @on_identity.setter
    def on_identity(self, callback: Callable[[tuple[str, str]], None] | None) -> None:
        self.sidecars.on_identity = callback

    def close(self) -> None:
        self.meshes.close()
        self._pool.shutdown(wait=False, cancel_futures=True)

    # --- watches -----------------------------------------------------------------------------
    def watch(self, mesh: str, name: str, node: NodeMetadata | None = None) -> ProxyWatch:
        watch = ProxyWatch((mesh, name), node or NodeMetadata())
        self.meshes.add(watch)
        return watch

    def unwatch(self, watch: ProxyWatch) -> None:
        watch.cancel_renewal()
        self.meshes.remove(watch)

    def snapshot(self, mesh: str) -> MeshSnapshot | None:
        return self.meshes.snapshot(mesh)

    # --- what a proxy gets -------------------------------------------------------------------
    async def prepare(self, watch: ProxyWatch) -> None:
        """Issue the proxy's certificate off the loop if it needs one, so `resources` never waits for a signature."""
        wanted = (self.egresses if watch.key[0] == EGRESS else self.sidecars).identity_proxies(watch)
        for snapshot, proxy in wanted:
            if self.identities.current(snapshot, proxy) is None:
                await self.loop.run_in_executor(self._pool, self.identities.get, snapshot, proxy)

    def resources(self, watch: ProxyWatch) -> dict[str, dict[str, Packed]]:
        return (self.egresses if watch.key[0] == EGRESS else self.sidecars).resources(watch)

    def generate_for(self, mesh: str, name: str) -> Resources:
        """The config a proxy would get now (for `GET .../dataplanes/{name}/_config`; mesh "" = a zone egress),
        generated from placeholders instead of certificates and keys (xds/placeholders.py): an API answer
        never carries a secret, and looking at a proxy issues it no certificate."""
        return self.egresses.preview(name) if mesh == EGRESS else self.sidecars.preview(mesh, name)
