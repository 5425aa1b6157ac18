"""The xDS cache adds a proxy's `kuma:envoy:admin` listener only when it can be safe: the proxy announced
its admin API, the Envoy admin CA exists, and the proxy's address is not the admin address itself."""
from __future__ import annotations

import asyncio
from pathlib import Path

from appliance.ca import envoy_admin
from appliance.core.manager import ResourceManager
from appliance.core.resources.model import Resource
from appliance.model import names
from appliance.runtime.defaults import ensure_defaults
from appliance.store.sqlite import SQLiteStore
from appliance.xds import admin_listener
from appliance.xds.cache import NodeMetadata, XdsCache
from appliance.xds.generate import generate_sidecar
from appliance.xds.generate.admin import NAME, AdminEndpoint


def _dataplane(manager: ResourceManager, name: str, address: str) -> None:
    manager.create(Resource("Dataplane", "default", name, {"networking": {"address": address, "inbound": [
        {"port": 8080, "tags": {"kuma.io/service": name}}]}}))


def test_the_admin_listener_comes_with_the_ca_and_only_for_proxies_that_announce_it(tmp_path: Path,
                                                                                    monkeypatch) -> None:
    monkeypatch.setattr(admin_listener, "ADMIN_CA_RETRY", 0.0)
    store = SQLiteStore(tmp_path / "kuma.db")
    manager = ResourceManager(store)
    manager.ensure_mesh("default")
    _dataplane(manager, "web-1", "10.0.0.5")
    _dataplane(manager, "local-1", "127.0.0.1")

    async def scenario() -> None:
        cache = XdsCache(store, generate_sidecar, asyncio.get_running_loop())
        admin = AdminEndpoint(9901, socket_path="/w/envoy-admin.sock")
        node = NodeMetadata(admin=admin)
        web, local = cache.watch("default", "web-1", node), cache.watch("default", "local-1", node)
        silent = cache.watch("default", "web-1")            # a proxy that announced no admin API
        assert NAME not in cache.resources(web)[names.LISTENER]          # no CA yet: no way in for anybody
        ensure_defaults(manager, skip_mesh_creation=True, bootstrap_admin_token=False)
        assert store.get("GlobalSecret", "", envoy_admin.SECRET_NAME) is not None
        got = cache.resources(web)
        assert NAME in got[names.LISTENER] and NAME in got[names.CLUSTER] and NAME in got[names.SECRET]
        assert NAME not in cache.resources(local)[names.LISTENER]        # it would collide with Envoy's admin
        assert NAME not in cache.resources(silent)[names.LISTENER]
        cache.close()

    try:
        asyncio.run(scenario())
    finally:
        store.close()
