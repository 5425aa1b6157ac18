"""A proxy whose config cannot be built (a MeshProxyPatch that does not apply to its resources) keeps the
last config it got, as Kuma's failed generation does, and gets the new one once the policy is fixed.

A real SQLite store, the real cache and the real generator."""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from appliance.core.manager import ResourceManager
from appliance.core.resources.model import Resource
from appliance.model import names
from appliance.store.sqlite import SQLiteStore
from appliance.xds.cache import XdsCache
from appliance.xds.generate import generate_sidecar


def _patch(json_patch: dict) -> Resource:
    return Resource("MeshProxyPatch", "default", "timeouts", {"spec": {
        "targetRef": {"kind": "Mesh"},
        "default": {"appendModifications": [{"cluster": {"operation": "Patch", "match": {"origin": "inbound"},
                                                         "jsonPatches": [json_patch]}}]}}})


def test_a_patch_that_cannot_apply_leaves_the_proxy_its_last_config(tmp_path: Path, caplog) -> None:
    store = SQLiteStore(tmp_path / "kuma.db")
    manager = ResourceManager(store)
    manager.ensure_mesh("default")
    manager.create(Resource("Dataplane", "default", "web-1", {"networking": {"address": "127.0.0.1", "inbound": [
        {"port": 8080, "servicePort": 8081, "tags": {"kuma.io/service": "web"}}]}}))

    async def changed(watch, write) -> None:
        woken = asyncio.Event()
        watch.changed.clear()
        watch.changed.callback = woken.set
        write()
        await asyncio.wait_for(woken.wait(), timeout=5)

    async def scenario() -> None:
        cache = XdsCache(store, generate_sidecar, asyncio.get_running_loop())
        watch = cache.watch("default", "web-1")
        await cache.prepare(watch)
        good = cache.resources(watch)
        assert "localhost:8081" in good[names.CLUSTER]

        bad = _patch({"op": "replace", "path": "/no/such/field", "value": 1})
        await changed(watch, lambda: manager.create(bad))
        with caplog.at_level(logging.WARNING, logger="appliance.xds"):
            assert cache.resources(watch) == good
        assert "MeshProxyPatch 'timeouts': could not apply the cluster modification" in caplog.text

        fixed = _patch({"op": "add", "path": "/perConnectionBufferLimitBytes", "value": 1024})
        await changed(watch, lambda: manager.update(fixed, manager.get("MeshProxyPatch", "default", "timeouts").version))
        assert cache.resources(watch) != good
        cache.close()

    try:
        asyncio.run(scenario())
    finally:
        store.close()
